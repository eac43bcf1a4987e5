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
from collections import deque
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from types import TracebackType

from livefile.api.errors import LivefileError, RequestError, ResourceFailedError
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download.connection import (
    DownloadConnection,
    StatusListener,
    StatusPredicate,
)
from livefile.impl_common.download_protocol import LinesPage
from livefile.impl_common.references import parse_reference

MiB = 1024 * 1024
# While following, bytes are asked for in pieces of at most FOLLOW_PIECE, with at most
# FOLLOW_WINDOW requests in flight: memory stays bounded (8 MiB) whatever the resource's
# size, and the next piece is already on its way while the caller handles the current one.
FOLLOW_PIECE = 4 * MiB
FOLLOW_WINDOW = 2
LINES_PAGE = 10_000  # lines asked for per request; the server may answer with fewer
NOT_CONNECTED = "The download client is not connected: use it as a context manager or connect()"


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
    """

    def __init__(
        self, reference: str, timeout: float | None = 30.0, *, token: str | None = None
    ) -> None:
        parsed = parse_reference(reference)
        self.resource_id = parsed.resource_id
        self.uri = parsed.download_uri
        self.timeout = timeout
        # The reference's token travels in its URI; a bearer header would override it.
        self._bearer = None if parsed.token is not None else token
        self.token = parsed.token if parsed.token is not None else token
        self._connection: DownloadConnection | None = None

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> AsyncDownloadClient:
        """Connect and wait for the current status (ResourceNotFoundError if unknown).

        One connection per client: connecting again does nothing; after ``close()`` or a lost
        connection, make a new client."""
        if self._connection is None:
            self._connection = await DownloadConnection.open(
                self.uri, self.resource_id, self.timeout, self._bearer
            )
        return self

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
        return self._open.add_status_listener(listener)

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
        requested = start  # the next byte to ask for
        in_flight: deque[asyncio.Future[list[bytes]]] = deque()
        try:
            while True:
                status = connection.status
                while len(in_flight) < FOLLOW_WINDOW and requested < status.current_size:
                    stop = min(status.current_size, requested + FOLLOW_PIECE)
                    in_flight.append(await connection.request_chunk_messages(requested, stop))
                    requested = stop
                if in_flight:
                    for message in await connection.reply(in_flight.popleft()):
                        yield message
                elif status.is_terminal:
                    self._raise_if_failed(status, f"{status.current_size} bytes")
                    return
                else:
                    await connection.wait_for_status(_more_bytes_than(requested), None)
        finally:
            for future in in_flight:  # the caller stopped early: drop what it will not take
                future.cancel()

    async def iter_lines(self, start: int = 0) -> AsyncGenerator[str, None]:
        """The lines from ``start`` on, as they are checkpointed, until the resource ends
        (then ResourceFailedError after the readable lines of a FAILED resource). RequestError
        ``UNSUPPORTED`` at once for a resource without line access."""
        connection = self._open
        position = start
        while True:
            status = await connection.wait_for_status(_more_lines_than(position), None)
            if status.number_of_lines is None:
                raise RequestError("UNSUPPORTED", "The resource was uploaded without line access")
            while position < status.number_of_lines:
                page = await self.lines_page(position, status.number_of_lines - position)
                if not page.lines:
                    break  # never loop on a server that answers with nothing
                for line in page.lines:
                    yield line
                    position += 1
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
