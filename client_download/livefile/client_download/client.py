"""The async download client: the statuses of a resource, byte ranges, lines, and following a
growing resource to its end.

One WebSocket per client. A receive task reads every message: statuses update ``status`` and
wake waiters and listeners; replies are matched to requests in order (the server answers
strictly in request order), so several requests may be in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from livefile.api import close_codes
from livefile.api.errors import (
    ConnectionLostError,
    LivefileError,
    LivefileTimeoutError,
    ProtocolError,
    RequestError,
    ResourceFailedError,
    ResourceNotFoundError,
)
from livefile.api.messages import (
    Error,
    Lines,
    RequestChunk,
    RequestLines,
    StatusChanged,
    parse_message,
)
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.impl_common.close_reason import error_for_close
from livefile.impl_common.references import parse_reference

StatusListener = Callable[[ResourceStatus], None]
MAX_MESSAGE = 16 * 1024 * 1024
FOLLOW_PIECE = 4 * 1024 * 1024  # bytes asked for per request while following
LINES_PAGE = 10_000  # lines asked for per request; the server may answer with fewer


@dataclass
class _Pending:
    """One request in flight: a chunk collects binary messages, lines wait for ``Lines``."""

    kind: str
    expected: int = 0
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    started: bool = False
    future: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class AsyncDownloadClient:
    """Watch and read one resource. ``async with AsyncDownloadClient(reference) as download:``"""

    def __init__(self, reference: str, timeout: float = 30.0) -> None:
        parsed = parse_reference(reference)
        self.resource_id = parsed.resource_id
        self.uri = parsed.download_uri
        self.timeout = timeout
        self._ws: ClientConnection | None = None
        self._status: ResourceStatus | None = None
        self._changed = asyncio.Condition()
        self._listeners: list[StatusListener] = []
        self._pending: deque[_Pending] = deque()
        self._receiver: asyncio.Task[None] | None = None
        self._failure: LivefileError | None = None

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> AsyncDownloadClient:
        """Connect and wait for the first status (raises ResourceNotFoundError if unknown)."""
        try:
            self._ws = await asyncio.wait_for(
                connect(self.uri, compression=None, max_size=MAX_MESSAGE, open_timeout=None),
                self.timeout,
            )
        except TimeoutError:
            raise LivefileTimeoutError(f"Connecting to {self.uri} timed out") from None
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionLostError(f"Cannot connect to {self.uri}: {exc}") from exc
        self._receiver = asyncio.create_task(self._receive(), name="livefile-download")
        await self.wait_for_status(lambda status: True)
        return self

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close(close_codes.NORMAL, close_codes.REASON_CLIENT_CLOSED)
        if self._receiver is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver

    async def __aenter__(self) -> AsyncDownloadClient:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- statuses -----------------------------------------------------------------------

    @property
    def status(self) -> ResourceStatus:
        if self._status is None:
            raise LivefileError("Not connected: no status received yet")
        return self._status

    def add_status_listener(self, listener: StatusListener) -> Callable[[], None]:
        """Call ``listener`` with each new status, in order; returns a function removing it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_for_status(
        self, predicate: Callable[[ResourceStatus], bool], timeout: float | None = None
    ) -> ResourceStatus:
        """The first status (the current one included) for which ``predicate`` holds."""

        def ready() -> bool:
            return self._failure is not None or (
                self._status is not None and predicate(self._status)
            )

        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                async with self._changed:
                    await self._changed.wait_for(ready)
        except TimeoutError:
            raise LivefileTimeoutError(f"No matching status of {self.resource_id}") from None
        if self._status is not None and predicate(self._status):
            return self._status
        assert self._failure is not None
        raise self._failure

    async def wait_for_end(self, timeout: float | None = None) -> ResourceStatus:
        """The terminal status (COMPLETED or FAILED). Waits without limit unless given one."""
        return await self.wait_for_status(lambda status: status.is_terminal, timeout or 1e9)

    # --- requests -----------------------------------------------------------------------

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; raises RequestError unless ``0 <= start <= end <= size``."""
        pending = _Pending("chunk", expected=end - start)
        await self._request(pending, RequestChunk(start_offset=start, end_offset=end).to_json())
        data = await self._reply(pending)
        assert isinstance(data, bytes)
        return data

    async def lines(self, start: int, count: int) -> list[str]:
        """Lines ``start .. start+count-1``, each with its line break (the last line of an
        ended resource may have none). Pages through bounded replies transparently."""
        collected: list[str] = []
        while len(collected) < count:
            request = RequestLines(
                starting_line_index=start + len(collected),
                lines_count=min(count - len(collected), LINES_PAGE),
            )
            pending = _Pending("lines")
            await self._request(pending, request.to_json())
            page = await self._reply(pending)
            assert isinstance(page, list)
            if not page:
                break
            collected.extend(page)
        return collected

    async def iter_bytes(self, start: int = 0) -> AsyncIterator[bytes]:
        """The bytes from ``start`` as they become readable, until the resource ends.

        Ends after the last byte of a COMPLETED resource. For a FAILED one, every readable
        byte is yielded first, then ResourceFailedError is raised: never a silent EOF.
        """
        position = start

        def readable_beyond(status: ResourceStatus) -> bool:
            return status.current_size > position or status.is_terminal

        while True:
            current = await self.wait_for_status(readable_beyond, 1e9)
            while position < current.current_size:
                stop = min(current.current_size, position + FOLLOW_PIECE)
                yield await self.read(position, stop)
                position = stop
            if current.is_terminal and position >= current.current_size:
                if current.transfer_status is TransferStatus.FAILED:
                    raise ResourceFailedError(
                        f"Resource {self.resource_id} FAILED at {current.current_size} bytes",
                        current.current_size,
                    )
                return

    async def iter_lines(self, start: int = 0) -> AsyncIterator[str]:
        """The lines from ``start`` as they are checkpointed, until the resource ends (raises
        ResourceFailedError after the readable lines of a FAILED resource)."""
        position = start

        def lines_beyond(status: ResourceStatus) -> bool:
            return (status.number_of_lines or 0) > position or status.is_terminal

        while True:
            current = await self.wait_for_status(lines_beyond, 1e9)
            if current.number_of_lines is None:
                raise RequestError("UNSUPPORTED", "The resource has no line access")
            while position < current.number_of_lines:
                count = min(current.number_of_lines - position, LINES_PAGE)
                for line in await self.lines(position, count):
                    yield line
                    position += 1
            if current.is_terminal and position >= current.number_of_lines:
                if current.transfer_status is TransferStatus.FAILED:
                    raise ResourceFailedError(
                        f"Resource {self.resource_id} FAILED at line {current.number_of_lines}",
                        current.current_size,
                    )
                return

    async def save(self, path: str | Path) -> ResourceStatus:
        """Follow the resource to its end into ``path``; returns the final status. On FAILED
        the file holds every readable byte and ResourceFailedError is raised."""
        target = await asyncio.to_thread(Path(path).open, "wb")
        try:
            async for piece in self.iter_bytes():
                await asyncio.to_thread(target.write, piece)
        finally:
            await asyncio.to_thread(target.close)
        return self.status

    # --- plumbing -----------------------------------------------------------------------

    async def _request(self, pending: _Pending, text: str) -> None:
        if self._failure is not None:
            raise self._failure
        if self._ws is None:
            raise LivefileError("Not connected")
        self._pending.append(pending)
        # On a closed connection the receive task fails every pending request with the reason.
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(text)

    async def _reply(self, pending: _Pending) -> object:
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), self.timeout)
        except TimeoutError:
            raise LivefileTimeoutError(
                f"No reply from the server within {self.timeout} s"
            ) from None

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    self._on_data(message)
                else:
                    await self._on_text(message)
            failure: LivefileError = self._closed_error()
        except ConnectionClosed:
            failure = self._closed_error()
        except LivefileError as exc:
            failure = exc
            await self._ws.close(close_codes.PROTOCOL_ERROR, str(exc)[:100])
        self._fail_all(failure)

    def _closed_error(self) -> LivefileError:
        assert self._ws is not None
        code, reason = self._ws.close_code, self._ws.close_reason or ""
        if code == close_codes.NORMAL and reason == close_codes.REASON_CLIENT_CLOSED:
            return ConnectionLostError("The download client was closed")
        if code == close_codes.POLICY_VIOLATION and reason == "Unknown resource id":
            return ResourceNotFoundError(f"Unknown resource {self.resource_id}")
        return error_for_close(code, reason)

    def _on_data(self, data: bytes) -> None:
        if not self._pending or self._pending[0].kind != "chunk":
            raise ProtocolError("Binary data arrived without a chunk request")
        pending = self._pending[0]
        pending.started = True
        pending.parts.append(data)
        pending.received += len(data)
        if pending.received > pending.expected:
            raise ProtocolError("The server sent more bytes than were requested")
        if pending.received == pending.expected:
            self._pending.popleft()
            if not pending.future.done():
                pending.future.set_result(b"".join(pending.parts))

    async def _on_text(self, text: str) -> None:
        message = parse_message(text)
        if isinstance(message, StatusChanged):
            await self._on_status(message.resource_status)
        elif isinstance(message, Error):
            if message.code == "NOT_FOUND" and not self._pending:
                self._failure = ResourceNotFoundError(f"Unknown resource {self.resource_id}")
                return
            if not self._pending:
                raise ProtocolError(f"Unexpected error from the server: {message.message}")
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(RequestError(message.code, message.message))
        elif isinstance(message, Lines):
            if not self._pending or self._pending[0].kind != "lines":
                raise ProtocolError("Lines arrived without a lines request")
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_result(message.lines)
        else:
            raise ProtocolError(f"Unexpected {message.kind} on a download connection")

    async def _on_status(self, status: ResourceStatus) -> None:
        if self._status is not None and not status.is_newer_than(self._status):
            return  # never backwards, never the same twice
        self._status = status
        for listener in list(self._listeners):
            listener(status)
        async with self._changed:
            self._changed.notify_all()

    def _fail_all(self, failure: LivefileError) -> None:
        if self._failure is None:
            self._failure = failure
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(self._failure)
        # Wake status waiters so that they see the failure (from a task, not a callback).
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def status_json(status: ResourceStatus) -> str:
    return json.dumps(status.to_wire())
