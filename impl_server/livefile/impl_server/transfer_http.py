"""The HTTP/1.1 GET of a remote transfer: h11 frames the messages, this module owns the
connection — so that it goes to an address the guard checked, and so that it sees what a
pooled client hides.

Why not a full client (httpx, aiohttp): (1) the connection must go to the very address that was
checked after resolution, for every hop, IP literals included; (2) a body longer than its
``Content-Length`` must be noticed, and a client that stops reading at the declared length and
pools the connection never looks at what follows; (3) every redirect is followed here, one
checked hop at a time. h11 does the HTTP/1.1 parsing (chunked bodies, ``Content-Length``,
trailing data); TLS is the standard library's, verifying the certificate against the URL's host
name although the socket is opened to an address.

Each hop is one connection (``Connection: close``): nothing is reused across hops, so nothing
checked for one host is ever used for another. Errors are ``TransferError`` with the
``error.code`` of the transfer's FAILED status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import h11

from livefile.impl_server.transfer_guard import AddressPolicy, TransferError

READ_SIZE = 1024 * 1024  # bytes asked of the socket at once: large pieces, few appends
SCHEMES = {"http": 80, "https": 443}
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "livefile-transfer"
# After the declared length, how long the server has to close the connection it was asked to
# close; bytes arriving meanwhile are a body longer than its Content-Length.
CLOSE_GRACE = 2.0
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 10.0  # seconds to open a connection (TLS handshake included)
    stall_timeout: float = 30.0  # seconds without a byte from the server
    max_redirects: int = 5


def check_url(url: str) -> SplitResult:
    """The parts of an http(s) URL a transfer may start from; raises ``TransferError``
    (``scheme_refused``, ``bad_url``) otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TransferError("bad_url", f"not a URL: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise TransferError(
            "scheme_refused", f"only http and https URLs are fetched, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise TransferError("bad_url", "the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise TransferError("bad_url", "credentials in the URL are not supported")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise TransferError("bad_url", "the URL contains spaces or control characters")
    if port == 0:
        raise TransferError("bad_url", "port 0 is not a port to fetch from")
    return parts


class Response:
    """A 2xx answer; ``body()`` yields its bytes as they arrive."""

    def __init__(self, url: str, connection: _Connection, response: h11.Response) -> None:
        self.url = url  # after redirects
        self.status = response.status_code
        self.content_length = _content_length(response)
        self._connection = connection

    async def body(self) -> AsyncIterator[bytes]:
        """The body's bytes; raises ``TransferError``: ``stalled``, ``shorter_than_declared``,
        ``longer_than_declared``, ``connection_lost``, ``protocol_error``."""
        received = 0
        expected = self.content_length
        while True:
            try:
                event = await self._connection.next_event()
            except TransferError as exc:
                if exc.code == "connection_lost" and expected is not None:
                    raise TransferError(
                        "shorter_than_declared",
                        f"the connection ended after {received} of the {expected} bytes its"
                        " Content-Length declared",
                    ) from None
                raise
            if isinstance(event, h11.Data):
                received += len(event.data)
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        if expected is not None:
            extra = await self._connection.bytes_after_end()
            if extra:
                raise TransferError(
                    "longer_than_declared",
                    f"the server sent at least {extra} bytes more than the {expected} its"
                    " Content-Length declared",
                )

    def close(self) -> None:
        self._connection.close()


async def open_url(url: str, policy: AddressPolicy, limits: FetchLimits) -> Response:
    """GET ``url``, following redirects (each hop checked like the first), up to the first
    2xx answer. Raises ``TransferError``: ``scheme_refused``, ``bad_url``, ``unreachable``,
    ``address_refused``, ``tls_error``, ``too_many_redirects``, ``bad_redirect``,
    ``http_status``, ``stalled``, ``connection_lost``, ``protocol_error``."""
    for hop in range(limits.max_redirects + 1):
        parts = check_url(url)
        connection = await _connect(parts, policy, limits)
        try:
            response = await connection.get(parts)
        except BaseException:
            connection.close()
            raise
        if 200 <= response.status_code < 300:
            return Response(url, connection, response)
        connection.close()
        location = _header(response, b"location")
        if response.status_code in REDIRECTS:
            if location is None:
                raise TransferError(
                    "bad_redirect", f"{response.status_code} redirect without a Location"
                )
            url = urljoin(url, location)
            if hop == limits.max_redirects:
                break
            continue
        reason = response.reason.decode("latin-1", "replace")[:100]
        raise TransferError(
            "http_status", f"the server answered {response.status_code} {reason}".rstrip()
        )
    raise TransferError(
        "too_many_redirects", f"more than {limits.max_redirects} redirects (the last to {url})"
    )


async def _connect(parts: SplitResult, policy: AddressPolicy, limits: FetchLimits) -> _Connection:
    """A connection to one of the checked addresses of the URL's host."""
    host = parts.hostname or ""
    secure = parts.scheme.lower() == "https"
    port = parts.port or SCHEMES[parts.scheme.lower()]
    addresses = await policy.resolve(host, port)
    context = ssl.create_default_context() if secure else None
    failures = []
    for address in addresses:
        try:
            async with asyncio.timeout(limits.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    str(address),
                    port,
                    ssl=context,
                    server_hostname=host if secure else None,
                    limit=2 * READ_SIZE,
                )
        except ssl.SSLError as exc:
            raise TransferError("tls_error", f"TLS with {host} failed: {exc}") from None
        except TimeoutError:
            failures.append(f"{address}: no connection within {limits.connect_timeout:g} s")
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
        else:
            return _Connection(reader, writer, limits.stall_timeout)
    raise TransferError("unreachable", f"cannot connect to {host}:{port}: {'; '.join(failures)}")


class _Connection:
    """One HTTP/1.1 exchange over one socket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stall: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._stall = stall
        self._h11 = h11.Connection(h11.CLIENT)

    async def get(self, parts: SplitResult) -> h11.Response:
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", _host_header(parts)),
                ("User-Agent", USER_AGENT),
                ("Accept", "*/*"),
                ("Accept-Encoding", "identity"),  # the bytes as they are, never recompressed
                ("Connection", "close"),
            ],
        )
        try:
            self._writer.write(self._h11.send(request) + self._h11.send(h11.EndOfMessage()))
            async with asyncio.timeout(self._stall):
                await self._writer.drain()
        except TimeoutError:
            raise TransferError("stalled", "the server took no request") from None
        except OSError as exc:
            raise TransferError("connection_lost", f"sending the request failed: {exc}") from None
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise TransferError("connection_lost", "the server closed without an answer")
            # InformationalResponse (1xx): the real answer follows.

    async def next_event(self) -> h11.Event:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self._h11.their_state is h11.ERROR and self._closed_early():
                    raise TransferError(
                        "connection_lost", "the server closed the connection mid-message"
                    ) from None
                raise TransferError("protocol_error", f"malformed HTTP answer: {exc}") from None
            if event is h11.NEED_DATA:
                self._h11.receive_data(await self._read())
                continue
            assert not isinstance(event, type)  # PAUSED cannot happen: no second request
            return event

    async def _read(self) -> bytes:
        try:
            async with asyncio.timeout(self._stall):
                return await self._reader.read(READ_SIZE)
        except TimeoutError:
            raise TransferError(
                "stalled", f"the server sent nothing for {self._stall:g} s"
            ) from None
        except OSError:
            return b""  # a reset: the same as a close, mid-message or not

    def _closed_early(self) -> bool:
        _, closed = self._h11.trailing_data
        return closed

    async def bytes_after_end(self) -> int:
        """Bytes that follow the complete message: on a connection asked to close, anything
        before the close is more body than was declared."""
        data, closed = self._h11.trailing_data
        extra = len(data)
        if extra or closed:
            return extra
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(min(CLOSE_GRACE, self._stall)):
                extra = len(await self._reader.read(READ_SIZE))
        return extra

    def close(self) -> None:
        self._writer.close()


def _host_header(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def _header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _content_length(response: h11.Response) -> int | None:
    if _header(response, b"transfer-encoding") is not None:
        return None  # chunked: the length is whatever the chunks add up to
    value = _header(response, b"content-length")
    return int(value) if value is not None else None
