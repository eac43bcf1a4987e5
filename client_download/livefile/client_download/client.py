"""The async download client: a resource's statuses, byte ranges and lines, and following a
growing resource to its end.

    async with AsyncDownloadClient(reference) as download:
        async for piece in download.iter_bytes():
            ...

One WebSocket per client (see ``connection.py``). Requests may be made concurrently: they are
pipelined on that one connection and each caller gets its own reply.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from types import TracebackType

from livefile.api.errors import (
    ConnectionLostError,
    LivefileError,
    LivefileTimeoutError,
    RequestError,
    ResourceFailedError,
)
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download.connection import (
    DownloadConnection,
    StatusListener,
    StatusPredicate,
)
from livefile.impl_common.download_protocol import LinesPage
from livefile.impl_common.references import parse_reference

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# While following, bytes are asked for in pieces of at most FOLLOW_PIECE, with at most
# FOLLOW_WINDOW requests in flight: memory stays bounded (8 MiB) whatever the resource's
# size, and the next piece is already on its way while the caller handles the current one.
FOLLOW_PIECE = 4 * MiB
FOLLOW_WINDOW = 2
LINES_PAGE = 10_000  # lines asked for per request; the server may answer with fewer
NOT_CONNECTED = "The download client is not connected: use it as a context manager or connect()"
# A follower whose connection was lost reconnects for this long (the server's default grace
# period for an uploader), waiting between attempts from the first delay up to the last.
DEFAULT_RECONNECT_FOR = 300.0
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 2.0


class _Default(enum.Enum):
    CLIENT_TIMEOUT = "the client's timeout"


CLIENT_TIMEOUT = _Default.CLIENT_TIMEOUT
"""Default of ``timeout`` parameters: the ``timeout`` the client was created with."""

Timeout = float | None | _Default


class AsyncDownloadClient:
    """Watch and read one resource over one connection.

    ``reference`` is the resource's download URI (``ws(s)://HOST/ws/streaming/download/{id}``)
    or its HTTP address (``http(s)://HOST/resources/{id}``); anything else raises ValueError
    before any I/O. ``timeout`` (seconds, None for no limit) bounds connecting, the first
    status, and the wait for each reply (measured from the last reply data received).
    Waiting for statuses has no limit unless given one; a dead connection still ends every
    wait, with ConnectionLostError, once WebSocket keepalive pings go unanswered (~40 s).
    ``token`` is an access token (JWT) for a server with access control on; a reference
    handed out by such a server carries its own download token and needs none. The
    reference's own token wins: ``token`` is used only for a reference without one, so a
    general token (say an upload-scoped ``LIVEFILE_TOKEN``) never hides the download token
    that came with the reference. ``token`` (the attribute) is the one in effect.

    Following (``iter_bytes``, ``iter_lines``, ``save``) survives a lost connection and a
    server restart: the client reconnects with backoff for up to ``reconnect_for`` seconds
    (0: never) and goes on from the byte (or line) it has delivered, so nothing is repeated
    or skipped. ``reconnects`` counts how often it did.
    """

    def __init__(
        self,
        reference: str,
        timeout: float | None = 30.0,
        *,
        token: str | None = None,
        reconnect_for: float = DEFAULT_RECONNECT_FOR,
    ) -> None:
        parsed = parse_reference(reference)
        self.resource_id = parsed.resource_id
        self.uri = parsed.download_uri
        self.timeout = timeout
        # The reference's token travels in its URI; a bearer header would override it.
        self._bearer = None if parsed.token is not None else token
        self.token = parsed.token if parsed.token is not None else token
        self.reconnect_for = reconnect_for
        self.reconnects = 0
        self._connection: DownloadConnection | None = None
        # Kept by the client, so that they hear the statuses of a new connection too.
        self._listeners: list[StatusListener] = []

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> AsyncDownloadClient:
        """Connect and wait for the current status (ResourceNotFoundError if unknown).

        One connection per client: connecting again does nothing; after ``close()`` or a lost
        connection, make a new client."""
        if self._connection is None:
            self._connection = await self._open_connection()
        return self

    async def _open_connection(self) -> DownloadConnection:
        connection = await DownloadConnection.open(
            self.uri, self.resource_id, self.timeout, self._bearer
        )
        connection.add_status_listener(self._tell_listeners)
        return connection

    def _tell_listeners(self, status: ResourceStatus) -> None:
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                # Someone else's callback must not keep the others from hearing the status.
                logger.exception("a status listener of %s failed", self.resource_id)

    async def close(self) -> None:
        """Close the connection (1000 "Client Session closed"); pending calls fail with
        ConnectionLostError. ``status`` keeps the last status received."""
        if self._connection is not None:
            await self._connection.close()

    async def __aenter__(self) -> AsyncDownloadClient:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _open(self) -> DownloadConnection:
        if self._connection is None:
            raise LivefileError(NOT_CONNECTED)
        return self._connection

    # --- statuses -----------------------------------------------------------------------

    @property
    def status(self) -> ResourceStatus:
        """The latest status received: statuses only move forward, and COMPLETED and FAILED
        are final."""
        return self._open.status

    def add_status_listener(self, listener: StatusListener) -> Callable[[], None]:
        """Call ``listener(status)`` with each new status, in order (not with the current one,
        which ``status`` gives); returns a function that removes it. Listeners run in the
        receive loop: they must be quick and must not block. Their exceptions are logged."""
        self._open  # noqa: B018 - raises when not connected
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_for_status(
        self, predicate: StatusPredicate, timeout: Timeout = CLIENT_TIMEOUT
    ) -> ResourceStatus:
        """The first status, the current one included, for which ``predicate`` holds.
        Raises LivefileTimeoutError after ``timeout`` (the client's unless given; None waits
        without limit), or the connection's error if it ends first."""
        return await self._open.wait_for_status(predicate, self._seconds(timeout))

    async def wait_for_end(self, timeout: float | None = None) -> ResourceStatus:
        """The terminal status (COMPLETED or FAILED). Waits without limit unless given one:
        an upload may take hours, and a dead connection still ends the wait (keepalive)."""
        return await self._open.wait_for_status(lambda status: status.is_terminal, timeout)

    # --- reading ------------------------------------------------------------------------

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``. Raises RequestError (code ``BAD_RANGE``) unless
        ``0 <= start <= end <= current size`` as the server knows it; the client stays usable."""
        connection = self._open
        return await connection.reply(await connection.request_chunk(start, end))

    async def lines(self, start: int, count: int) -> list[str]:
        """Up to ``count`` lines from line ``start`` (numbered from 0) of a resource uploaded
        with line access, each with its line break (the last line of an ended resource may
        have none). Fewer when the resource has fewer lines so far: the last page ends at the
        last published line. Pages through the server's bounded replies; ``lines_page`` says
        where the next page starts and whether more may come. RequestError ``UNSUPPORTED``
        without line access, ``BAD_RANGE`` for a ``start`` beyond the lines known so far."""
        collected: list[str] = []
        while len(collected) < count:
            page = await self.lines_page(start + len(collected), count - len(collected))
            collected.extend(page.lines)
            if not page.more or not page.lines:
                break  # the end of the published lines (never loop on an empty answer)
        return collected

    async def lines_page(self, start: int, count: int = LINES_PAGE) -> LinesPage:
        """One page: at most ``count`` lines from line ``start`` (numbered from 0), fewer at
        the last published line or past the server's bound (~1 MiB of text). The page says
        where the next one starts (``next_start``), whether lines from there can be read now
        (``more``) and whether the resource may still grow (``growing``)::

            page = await download.lines_page(0, 100)
            while page.more:
                page = await download.lines_page(page.next_start, 100)

        RequestError ``UNSUPPORTED`` without line access, ``BAD_RANGE`` for a ``start``
        beyond the lines known so far (or a negative one)."""
        connection = self._open
        future = await connection.request_lines(start, min(count, LINES_PAGE))
        return await connection.reply(future)

    # --- following ----------------------------------------------------------------------

    async def iter_bytes(self, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The bytes from ``start`` on, as they become readable, until the resource ends.

        Pieces are the server's reply messages (1 MiB by default), at most 4 MiB. Ends after
        the last byte of a COMPLETED resource. For a FAILED one, every readable byte is yielded
        first and then ResourceFailedError (with ``.size``) is raised: never a silent,
        truncated end.
        """
        connection = self._open
        requested = delivered = start  # the next byte to ask for, and to yield
        in_flight: deque[asyncio.Future[list[bytes]]] = deque()
        try:
            while True:
                try:
                    status = connection.status
                    while len(in_flight) < FOLLOW_WINDOW and requested < status.current_size:
                        stop = min(status.current_size, requested + FOLLOW_PIECE)
                        in_flight.append(await connection.request_chunk_messages(requested, stop))
                        requested = stop
                    if in_flight:
                        messages = await connection.reply(in_flight.popleft())
                    elif status.is_terminal:
                        self._raise_if_failed(status, f"{status.current_size} bytes")
                        return
                    else:
                        await connection.wait_for_status(_more_bytes_than(requested), None)
                        continue
                except LivefileError as exc:
                    connection = await self._reconnect(connection, exc)
                    for future in in_flight:
                        future.cancel()
                    in_flight.clear()
                    requested = delivered  # asked again from the first byte not yielded
                    continue
                for message in messages:
                    delivered += len(message)
                    yield message
        finally:
            for future in in_flight:  # the caller stopped early: drop what it will not take
                future.cancel()

    async def iter_lines(self, start: int = 0) -> AsyncGenerator[str, None]:
        """The lines from ``start`` on, as they are checkpointed, until the resource ends
        (then ResourceFailedError after the readable lines of a FAILED resource). RequestError
        ``UNSUPPORTED`` at once for a resource without line access."""
        position = start
        while True:
            connection = self._open
            try:
                status = await connection.wait_for_status(_more_lines_than(position), None)
                if status.number_of_lines is None:
                    raise RequestError(
                        "UNSUPPORTED", "The resource was uploaded without line access"
                    )
                page = None
                if position < status.number_of_lines:
                    page = await self.lines_page(position, status.number_of_lines - position)
            except LivefileError as exc:
                await self._reconnect(connection, exc)
                continue
            if page is not None and page.lines:
                for line in page.lines:
                    yield line
                    position += 1
                continue  # the next page, or the next status
            if status.is_terminal and position >= status.number_of_lines:
                self._raise_if_failed(status, f"line {status.number_of_lines}")
                return

    async def save(self, path: str | Path) -> ResourceStatus:
        """Follow the resource to its end, writing it to ``path``; returns the COMPLETED status.

        The file is written in place as the bytes arrive (so that it can itself be followed,
        e.g. with ``tail -f``). On FAILED it holds every readable byte and ResourceFailedError
        is raised; after any other error it holds what was received so far.
        """
        target = await asyncio.to_thread(Path(path).open, "wb")
        try:
            async for piece in self.iter_bytes():
                await asyncio.to_thread(target.write, piece)
        finally:
            await asyncio.to_thread(target.close)
        return self.status

    # --- helpers ------------------------------------------------------------------------

    async def _reconnect(
        self, connection: DownloadConnection, error: LivefileError
    ) -> DownloadConnection:
        """A new connection in place of ``connection``, which ended with ``error``; raises
        ``error`` unless the connection was lost (``DownloadConnection.lost``), and the last
        attempt's error once ``reconnect_for`` seconds have passed."""
        if not connection.lost or self.reconnect_for <= 0:
            raise error
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_for
        delay = RECONNECT_FIRST_DELAY
        while True:
            try:
                self._connection = await self._open_connection()
            except (ConnectionLostError, LivefileTimeoutError):
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            self.reconnects += 1
            return self._connection

    def _seconds(self, timeout: Timeout) -> float | None:
        return self.timeout if timeout is CLIENT_TIMEOUT else timeout

    def _raise_if_failed(self, status: ResourceStatus, where: str) -> None:
        if status.transfer_status is TransferStatus.FAILED:
            raise ResourceFailedError(
                f"Resource {self.resource_id} FAILED at {where}", status.current_size
            )


def _more_bytes_than(size: int) -> StatusPredicate:
    """A status with bytes beyond ``size``, or the last one."""
    return lambda status: status.current_size > size or status.is_terminal


def _more_lines_than(count: int) -> StatusPredicate:
    """A status with lines beyond ``count``, the last one, or one saying there are no lines."""
    return lambda status: (
        status.number_of_lines is None or status.number_of_lines > count or status.is_terminal
    )
