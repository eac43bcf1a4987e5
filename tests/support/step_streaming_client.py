"""A step-streaming client as strict as the Java one, written from the specification
(/work/shared/reference/step-streaming-spec.md, §3 and §7), for testing livefile's
step-streaming dialect: a client that names no WebSocket subprotocol.

What makes it strict, as step-streaming's Java clients are (Jackson with its defaults):

- every text message must be one of step-streaming's 8 message types, with none but its
  fields (``UnrecognizedPropertyException``, ``InvalidTypeIdException`` in Java); a
  ``StatusChanged`` status with none but its 3 fields;
- the upload connection carries ``ReadyForUpload`` and then ``UploadAcknowledged``, nothing else
  (a ``StatusChanged`` there was a ``ClassCastException``);
- the upload is **one** binary message, sent as fragments (at most 64 KiB each, Jetty's frame
  limit), then ``FinishUpload`` with the MD5; after the acknowledgement the client closes with
  1000 ``Upload completed``; a close before that fails with the close reason
  (``QuotaExceededException: …`` becomes ``QuotaExceededError``);
- a chunk request is answered by exactly **one** binary message of exactly the range's size;
  any other binary message is a failure (``IllegalStateException``);
- one request in flight at a time; statuses equal to the previous one are not delivered again;
- the Java clients' timeouts: 60 s for the reference and the acknowledgement, 30 s for the
  first status of a download.

A violation raises ``StrictViolation`` (an ``AssertionError``: the test fails) from whatever
call waits. One deliberate difference: when the server closes a download before its first
status, this client fails at once with the close reason, where the Java constructor waits
out its 30 s; the tests check that the close comes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

UPLOAD_TIMEOUT = 60.0  # WebsocketUploadClient.timeoutSeconds
FIRST_STATUS_TIMEOUT = 30.0  # WebsocketDownloadClient's wait for the initial status
REPLY_TIMEOUT = 120.0  # the Java client has none; a test must not hang
MAX_FRAGMENT = 64 * 1024  # Jetty's default frame limit
UPLOAD_PATH = "/ws/streaming/upload"
CONTEXT_PARAMETER = "streamingUploadContextId"
QUOTA_PREFIX = "QuotaExceededException: "

STATUS_FIELDS = {"transferStatus", "currentSize", "numberOfLines"}
TRANSFER_STATUSES = {"INITIATED", "IN_PROGRESS", "COMPLETED", "FAILED"}
# Every message type of step-streaming and its fields (ProtocolMessage: the concrete base).
MESSAGE_FIELDS: dict[str, set[str]] = {
    "StartUpload": {"metadata"},
    "ReadyForUpload": {"reference"},
    "FinishUpload": {"checksum"},
    # The Java server writes "numberOflines"; Jackson accepts both spellings when parsing.
    "UploadAcknowledged": {"size", "checksum", "numberOflines", "numberOfLines"},
    "StatusChanged": {"resourceStatus"},
    "RequestChunk": {"startOffset", "endOffset"},
    "RequestLines": {"startingLineIndex", "linesCount"},
    "Lines": {"lines"},
    "ProtocolMessage": set(),
}


class StrictViolation(AssertionError):
    """The server sent something step-streaming's Java client would have rejected."""


class UploadFailedError(Exception):
    """The upload did not complete: ``IOException("Websocket session closed, reason=…, but
    upload was not completed")`` in Java."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class QuotaExceededError(UploadFailedError):
    """A close reason ``QuotaExceededException: <message>``: Java's ``QuotaExceededException``."""


class DownloadClosedError(Exception):
    """The server ended the download connection (a refused request, an unknown resource)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"CloseReason[{code},{reason}]")
        self.code = code
        self.reason = reason


def parse_strictly(text: str, expected: set[str] | None = None) -> dict[str, Any]:
    """Parse a text message as Jackson does with its defaults; ``expected``: the types allowed
    here (a known type that is not one of them was a ClassCastException in Java)."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StrictViolation(f"not JSON: {text[:200]!r} ({exc})") from None
    if not isinstance(message, dict) or "@" not in message:
        raise StrictViolation(f"missing type id '@': {text[:200]}")
    kind = message["@"]
    if kind not in MESSAGE_FIELDS:
        raise StrictViolation(f"InvalidTypeIdException: unknown type {kind!r}: {text[:200]}")
    unknown = set(message) - MESSAGE_FIELDS[kind] - {"@"}
    if unknown:
        raise StrictViolation(
            f"UnrecognizedPropertyException: {sorted(unknown)} in {kind}: {text[:300]}"
        )
    if kind == "StatusChanged":
        check_status(message.get("resourceStatus"))
    if kind == "ReadyForUpload":
        reference = message.get("reference")
        if not isinstance(reference, dict) or set(reference) != {"uri"}:
            raise StrictViolation(f"bad reference: {text[:300]}")
    if kind == "Lines" and not (
        isinstance(message.get("lines"), list)
        and all(isinstance(line, str) for line in message["lines"])
    ):
        raise StrictViolation(f"bad Lines: {text[:300]}")
    if expected is not None and kind not in expected:
        raise StrictViolation(f"ClassCastException: unexpected {kind}: {text[:300]}")
    return message


def check_status(status: object) -> None:
    if not isinstance(status, dict):
        raise StrictViolation(f"resourceStatus is not an object: {status!r}")
    unknown = set(status) - STATUS_FIELDS
    if unknown:
        raise StrictViolation(f"UnrecognizedPropertyException: {sorted(unknown)} in status")
    if status.get("transferStatus") not in TRANSFER_STATUSES:
        raise StrictViolation(f"bad transferStatus in {status}")
    if not isinstance(status.get("currentSize", 0), int):
        raise StrictViolation(f"bad currentSize in {status}")
    lines = status.get("numberOfLines")
    if lines is not None and not isinstance(lines, int):
        raise StrictViolation(f"bad numberOfLines in {status}")


def close_of(ws: ClientConnection) -> tuple[int | None, str]:
    received = ws.protocol.close_rcvd
    return (received.code, received.reason) if received is not None else (None, "")


async def _open(uri: str) -> ClientConnection:
    # No subprotocol: step-streaming's protocol has none. No compression: Java offers none.
    return await connect(uri, compression=None, max_size=None, open_timeout=UPLOAD_TIMEOUT)


# --- upload -----------------------------------------------------------------------------------


@dataclass
class Acknowledgement:
    size: int
    checksum: str
    number_of_lines: int | None


class StrictUpload:
    """``WebsocketUploadClient``: connect, ``StartUpload``, ``ReadyForUpload`` (≤ 60 s), one
    fragmented binary message, ``FinishUpload``, ``UploadAcknowledged`` (≤ 60 s), close."""

    def __init__(self, ws_url: str, context_id: str | None = None) -> None:
        query = f"?{CONTEXT_PARAMETER}={context_id}" if context_id else ""
        self.uri = f"{ws_url}{UPLOAD_PATH}{query}"
        self.reference = ""
        self.sent = 0
        self._md5 = hashlib.md5()
        self._ws: ClientConnection | None = None
        self._state = "EXPECTING_REFERENCE"
        self._reference: asyncio.Future[str] | None = None
        self._ack: asyncio.Future[Acknowledgement] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, filename: str, mime_type: str, supports_line_access: bool = False) -> str:
        """Connect and announce the resource; returns the reference (the download URI)."""
        loop = asyncio.get_running_loop()
        self._reference, self._ack = loop.create_future(), loop.create_future()
        for future in (self._reference, self._ack):  # failures are raised where awaited
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._ws = await _open(self.uri)
        self._reader = asyncio.create_task(self._read())
        metadata = {
            "filename": filename,
            "mimeType": mime_type,
            "supportsLineAccess": supports_line_access,
        }
        with contextlib.suppress(ConnectionClosed):  # the reader says why it closed
            await self._ws.send(json.dumps({"@": "StartUpload", "metadata": metadata}))
        self.reference = await asyncio.wait_for(asyncio.shield(self._reference), UPLOAD_TIMEOUT)
        self._state = "UPLOADING"
        return self.reference

    async def send(self, data: AsyncIterable[bytes]) -> None:
        """The whole payload as one binary message: each piece a fragment (cut at 64 KiB); an
        empty payload is one empty binary message."""
        assert self._ws is not None
        assert self._state == "UPLOADING"

        async def fragments() -> AsyncIterator[bytes]:
            async for piece in data:
                for offset in range(0, len(piece), MAX_FRAGMENT):
                    fragment = piece[offset : offset + MAX_FRAGMENT]
                    self._md5.update(fragment)
                    self.sent += len(fragment)
                    yield fragment

        pieces = fragments()
        first = await anext(pieces, None)
        if first is None:
            await self._ws.send(b"")
            return

        async def all_of_them() -> AsyncIterator[bytes]:
            yield first
            async for fragment in pieces:
                yield fragment

        try:
            await self._ws.send(all_of_them())
        except ConnectionClosed:
            await self._closed_early()

    async def finish(self, close: bool = True) -> Acknowledgement:
        """``FinishUpload`` with the MD5 of what was sent, the acknowledgement, then the
        client's own close: 1000 ``Upload completed`` (unless ``close`` is False)."""
        assert self._ws is not None
        assert self._ack is not None
        checksum = self._md5.hexdigest()
        self._state = "EXPECTING_ACKNOWLEDGE"  # set before sending (SED-4351)
        try:
            await self._ws.send(json.dumps({"@": "FinishUpload", "checksum": checksum}))
        except ConnectionClosed:
            await self._closed_early()
        ack = await asyncio.wait_for(asyncio.shield(self._ack), UPLOAD_TIMEOUT)
        if ack.checksum != checksum:
            raise UploadFailedError(f"checksum mismatch: {ack.checksum} != {checksum}")
        await asyncio.sleep(0.02)  # time for a premature close of the server to arrive
        if self._ws.protocol.close_rcvd_then_sent:
            # The server closed before this client could: in Java the close comes before the
            # state FINALIZED ("… but upload was not completed"), however the race falls.
            code, reason = close_of(self._ws)
            raise StrictViolation(f"the server closed first: CloseReason[{code},{reason}]")
        self._state = "FINALIZED"
        if close:
            await self._ws.close(1000, "Upload completed")
            await self._stop_reader()
        return ack

    def drop(self) -> None:
        """End the TCP connection without a close frame."""
        assert self._ws is not None
        self._ws.transport.abort()

    async def abort(self, reason: str = "Upload session was unexpectedly closed") -> None:
        """What the Java client does on a local error: close with 1011."""
        if self._ws is not None:
            await self._ws.close(1011, reason)
        await self._stop_reader()

    async def _closed_early(self) -> None:
        """The connection ended before the acknowledgement: the reader reports why."""
        assert self._ack is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._ack), 5)
        raise self._failure()

    def _failure(self) -> UploadFailedError:
        assert self._ws is not None
        code, reason = close_of(self._ws)
        if reason.startswith(QUOTA_PREFIX):
            return QuotaExceededError(reason[len(QUOTA_PREFIX) :], code, reason)
        return UploadFailedError(
            f"Websocket session closed, reason=CloseReason[{code},{reason}],"
            " but upload was not completed",
            code,
            reason,
        )

    async def _read(self) -> None:
        assert self._ws is not None
        assert self._reference
        assert self._ack
        try:
            async for text in self._ws:
                if not isinstance(text, str):
                    raise StrictViolation("binary data on an upload connection")
                if self._state == "EXPECTING_REFERENCE":
                    message = parse_strictly(text, {"ReadyForUpload"})
                    self._reference.set_result(message["reference"]["uri"])
                elif self._state == "EXPECTING_ACKNOWLEDGE":
                    message = parse_strictly(text, {"UploadAcknowledged"})
                    lines = message.get("numberOflines", message.get("numberOfLines"))
                    self._ack.set_result(
                        Acknowledgement(message.get("size", 0), message["checksum"], lines)
                    )
                else:  # UPLOADING, FINALIZED: nothing may come
                    parse_strictly(text)
                    raise StrictViolation(f"unexpected message in state {self._state}: {text}")
        except ConnectionClosed:
            pass
        except StrictViolation as exc:
            for future in (self._reference, self._ack):
                if not future.done():
                    future.set_exception(exc)
            await self._ws.close(1011, "strict client: unexpected message")
            return
        if self._state != "FINALIZED":
            failure = self._failure()
            for future in (self._reference, self._ack):
                if not future.done():
                    future.set_exception(failure)

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reader, 10)


async def pieces_of(data: bytes, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def upload_bytes(
    ws_url: str,
    data: bytes,
    filename: str = "data.bin",
    mime_type: str = "application/octet-stream",
    supports_line_access: bool = False,
    context_id: str | None = None,
) -> tuple[str, Acknowledgement]:
    upload = StrictUpload(ws_url, context_id)
    reference = await upload.start(filename, mime_type, supports_line_access)
    await upload.send(pieces_of(data))
    return reference, await upload.finish()


# --- download ---------------------------------------------------------------------------------


@dataclass
class _Request:
    kind: str  # "chunk" or "lines"
    expected: int = 0  # bytes of a chunk reply
    sink: Callable[[bytes], None] | None = None
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class StrictDownload:
    """``WebsocketDownloadClient`` and ``WebsocketDownload.getInputStream``."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.statuses: list[dict[str, Any]] = []  # every status delivered, in order
        self.status: dict[str, Any] | None = None
        self._ws: ClientConnection | None = None
        self._request: _Request | None = None
        self._changed = asyncio.Event()
        self._failure: BaseException | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StrictDownload:
        self._ws = await _open(self.reference)
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(FIRST_STATUS_TIMEOUT):
            while self.status is None:
                self._raise_failure()
                await self._next_change()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._ws is not None
        await self._ws.close(1000, "Client Session closed")
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reader, 10)

    async def _next_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def wait_for(self, condition: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.status is None or not condition(self.status):
                self._raise_failure()
                await self._next_change()

    async def wait_for_change(self, timeout: float) -> None:
        """Until a status other than the current one arrives."""
        seen = self.status
        async with asyncio.timeout(timeout):
            while self.status == seen:
                self._raise_failure()
                await self._next_change()

    async def chunk(self, start: int, end: int, sink: Callable[[bytes], None]) -> int:
        """``requestChunkTransfer``: bytes ``[start, end)`` as one binary message, handed to
        ``sink`` as they arrive; returns the count."""
        self._raise_failure()
        assert self.status is not None
        assert self._request is None, "one request at a time"
        if self.status["transferStatus"] == "FAILED":
            raise RuntimeError("Remote resource indicates a FAILED resource")
        if not 0 <= start <= end <= self.status["currentSize"]:
            raise ValueError(f"Invalid end offset: {end} > {self.status['currentSize']}")
        request = self._request = _Request("chunk", end - start, sink)
        await self._send({"@": "RequestChunk", "startOffset": start, "endOffset": end})
        return int(await asyncio.wait_for(request.future, REPLY_TIMEOUT))

    async def read(self, start: int, end: int) -> bytes:
        parts: list[bytes] = []
        await self.chunk(start, end, parts.append)
        return b"".join(parts)

    async def lines(self, start: int, count: int) -> list[str]:
        """``requestTextLines``, with the Java client's checks."""
        self._raise_failure()
        assert self.status is not None
        assert self._request is None, "one request at a time"
        if self.status["transferStatus"] == "FAILED":
            raise RuntimeError("Remote resource FAILED")
        total = self.status.get("numberOfLines")
        if total is None:
            raise RuntimeError("Remote resource does not support line access")
        if start < 0 or count < 0 or total < start + count:
            raise ValueError("Line request out of bounds")
        request = self._request = _Request("lines")
        await self._send({"@": "RequestLines", "startingLineIndex": start, "linesCount": count})
        result: list[str] = await asyncio.wait_for(request.future, REPLY_TIMEOUT)
        return result

    async def input_stream(self, sink: Callable[[bytes], None]) -> dict[str, Any]:
        """``getInputStream()``: follows the resource, asking for ``[read, currentSize)`` as
        one chunk whenever there is more, until it is COMPLETED or FAILED (a FAILED resource
        ends the stream normally, as in Java); returns the last status."""
        read = 0
        while True:
            self._raise_failure()
            assert self.status is not None
            status = self.status
            if status["currentSize"] > read:
                read += await self.chunk(read, status["currentSize"], sink)
            elif status["transferStatus"] in ("COMPLETED", "FAILED"):
                return status
            else:
                await self._next_change()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message))

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            while True:
                fragments = self._ws.recv_streaming()
                first = await anext(fragments)
                if isinstance(first, str):
                    text = first + "".join([part async for part in fragments])  # type: ignore[misc]
                    self._on_text(text)
                else:
                    await self._on_data(first, fragments)
        except ConnectionClosed:
            code, reason = close_of(self._ws)
            self._fail(DownloadClosedError(code, reason))
        except (StrictViolation, StopAsyncIteration) as exc:
            self._fail(exc)
            await self._ws.close(1011, "strict client: unexpected message")

    def _on_text(self, text: str) -> None:
        message = parse_strictly(text, {"StatusChanged", "Lines"})
        if message["@"] == "StatusChanged":
            status = message["resourceStatus"]
            status.setdefault("numberOfLines", None)
            if status != self.status:  # the Java client delivers no repeated status
                self.status = status
                self.statuses.append(status)
                self._changed.set()
            return
        request = self._request
        if request is None or request.kind != "lines":
            raise StrictViolation(f"Unexpected message: {text[:200]}")
        self._request = None
        request.future.set_result(message["lines"])

    async def _on_data(self, first: bytes | str, fragments: AsyncIterator[bytes | str]) -> None:
        request = self._request
        if request is None or request.kind != "chunk":
            raise StrictViolation("IllegalStateException: binary data with no chunk request")
        count = 0

        async def all_fragments() -> AsyncIterator[bytes | str]:
            yield first
            async for fragment in fragments:
                yield fragment

        async for piece in all_fragments():
            assert isinstance(piece, bytes)
            count += len(piece)
            if count > request.expected:
                raise StrictViolation(f"more than {request.expected} bytes in one reply")
            if request.sink is not None and piece:
                request.sink(piece)
        if count != request.expected:
            # The Java client reads one message per chunk request: a shorter one ends its
            # stream early, and the rest would be taken for the next request's data.
            raise StrictViolation(
                f"one binary message of {count} bytes for a chunk of {request.expected}"
            )
        self._request = None
        request.future.set_result(count)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        if self._request is not None and not self._request.future.done():
            self._request.future.set_exception(exc)
        self._changed.set()
