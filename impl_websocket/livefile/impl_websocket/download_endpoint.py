"""The download WebSocket endpoint: the current status at once, every later status, and replies
to chunk requests in request order. A bad request gets an ``Error`` and the connection goes on.

In step-streaming's dialect (a client that named no subprotocol) the messages are exactly
step-streaming's: statuses with its three fields only (and only when one of them changed), a
chunk reply as **one** binary message however large (sent as fragments, still zero-copy),
``Lines`` without a request id, and no ``Error``: a request that cannot be served closes the
connection with a code and the reason, as step-streaming's server ends such a session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from livefile.api import close_codes
from livefile.api.errors import ProtocolError, RangeNotReadableError
from livefile.api.interfaces import StatusSubscription
from livefile.api.messages import (
    Dialect,
    Error,
    Lines,
    RequestChunk,
    RequestLines,
    StatusChanged,
    parse_message,
)
from livefile.api.model import ResourceStatus
from livefile.impl_common.close_reason import safe_close_reason
from livefile.impl_server.manager import CatalogUnavailableError, ResourceManager
from livefile.impl_server.reader import NoLineAccessError, Reader, check_range
from livefile.impl_websocket.connections import cancel_quietly
from livefile.impl_websocket.counters import COUNTERS
from livefile.impl_websocket.settings import Settings
from livefile.impl_websocket.zero_copy import ABORT_EXTENSION, SENDFILE_EXTENSION

SendFile = Callable[..., Awaitable[None]]  # (fd, offset, count, first=True, last=True)
# Under an ASGI server without livefile's send_file, a step-streaming chunk reply (one message)
# is read whole before it is sent: a larger range closes the connection instead.
WHOLE_MESSAGE_LIMIT = 64 * 1024 * 1024
GONE_REASON = "Resource deleted"

logger = logging.getLogger(__name__)


class DownloadSession:
    """One download connection from accept to close."""

    def __init__(
        self,
        websocket: WebSocket,
        manager: ResourceManager,
        settings: Settings,
        resource_id: str,
        dialect: Dialect = Dialect.LIVEFILE,
    ) -> None:
        self.websocket = websocket
        self.dialect = dialect
        self._plain = dialect is Dialect.STEP_STREAMING
        self._last_sent: ResourceStatus | None = None  # step-streaming's form, last one sent
        self._last_status: ResourceStatus | None = None  # the last status sent
        self.manager = manager
        self.settings = settings
        self.resource_id = resource_id
        self._send_lock = asyncio.Lock()
        # The server's zero-copy extension (``livefile serve``), absent under other servers.
        self._send_file: SendFile | None = websocket.scope.get("extensions", {}).get(
            SENDFILE_EXTENSION
        )
        # Ends the TCP connection at once (``livefile serve``): a dropped slow consumer must not
        # keep its socket, its descriptors and its kernel send queue until it leaves.
        self._abort: Callable[[], None] | None = websocket.scope.get("extensions", {}).get(
            ABORT_EXTENSION
        )
        self._fd: int | None = None
        self._reader: Reader | None = None

    async def run(self) -> None:
        try:
            self._reader = await self.manager.reader(self.resource_id)
            subscription = await self.manager.subscribe(self.resource_id)
        except Exception as exc:  # the shared catalog or bus is unreachable
            logger.error("cannot watch %s: %s", self.resource_id, exc)
            await self._close(close_codes.INTERNAL_ERROR, "Service unavailable: try again later")
            return
        if subscription is None or self._reader is None:
            gone = await self.manager.gone(self.resource_id)
            code, reason = ("GONE", GONE_REASON) if gone else ("NOT_FOUND", "Unknown resource id")
            if not self._plain:  # step-streaming's clients know no Error: the close says it
                await self._send_text(Error(code=code, message=reason).to_json())
            await self._close(close_codes.POLICY_VIOLATION, reason)
            return
        statuses = asyncio.create_task(self._forward_statuses(subscription))
        deletion = self.manager.deletions.watch(self.resource_id)
        try:
            await self._serve_until_deleted(deletion, statuses)
        except (WebSocketDisconnect, ConnectionError):
            pass
        except Exception:
            logger.exception("download connection failed")
            await self._close(close_codes.INTERNAL_ERROR, "Internal server error")
        finally:
            self.manager.deletions.unwatch(self.resource_id, deletion)
            await cancel_quietly(statuses)
            subscription.close()
            if self._fd is not None:
                os.close(self._fd)

    async def _serve_until_deleted(
        self, deletion: asyncio.Future[ResourceStatus], statuses: asyncio.Task[None]
    ) -> None:
        """Serve requests until the client leaves, or until the resource is deleted: then its
        last status (FAILED ``deleted``) is sent, unless it was already, and the connection is
        closed with 1008 and the reason."""
        serving = asyncio.ensure_future(self._serve_requests())
        either: set[asyncio.Future[Any]] = {serving, deletion}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not serving.done():
                await cancel_quietly(serving)
        if not serving.cancelled():
            serving.result()  # the client left (or a failure to report)
            return
        await cancel_quietly(statuses)
        last = deletion.result()
        if self._last_status is None or not self._last_status.same_state(last):
            await self._send_status(last)
        reason = last.error.message if last.error else "deleted"
        await self._close(close_codes.POLICY_VIOLATION, f"{close_codes.DELETED_PREFIX}{reason}")

    async def _forward_statuses(self, subscription: StatusSubscription) -> None:
        try:
            async for status in subscription:
                await self._send_status(status)
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            pass

    async def _send_status(self, status: ResourceStatus) -> None:
        if self._plain:
            # Its three fields only; a change of none of them (a stage, a percent) is no news
            # to a client that orders nothing by revision.
            plain = status.step_streaming()
            if plain == self._last_sent:
                return
            self._last_sent = plain
        self._last_status = status
        message = StatusChanged(resource_status=status)
        await self._send_text(message.to_json(self.dialect))

    async def _serve_requests(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._error("BAD_REQUEST", "Binary messages are not requests")
                continue
            # Measured in UTF-8 bytes, like on the upload connection.
            if (size := len(text.encode())) > self.settings.max_text_message_size:
                await self._error(
                    "BAD_REQUEST",
                    f"Text message of {size} bytes exceeds {self.settings.max_text_message_size}",
                )
                continue
            try:
                request = parse_message(text)
            except ProtocolError as exc:
                await self._error("BAD_REQUEST", str(exc))
                continue
            if isinstance(request, RequestChunk):
                await self._send_chunk(request)
            elif isinstance(request, RequestLines):
                await self._send_lines(request)
            else:
                await self._error("BAD_REQUEST", f"{request.kind} is not a download request")

    async def _send_chunk(self, request: RequestChunk) -> None:
        start, end = request.start_offset, request.end_offset
        assert self._reader is not None
        try:
            status = await self._reader.status()  # the newest one: what watchers were told
        except CatalogUnavailableError as exc:  # Redis is away and nothing is known here
            await self._error("UNAVAILABLE", str(exc), request.request_id)
            return
        try:
            check_range(status, start, end)
        except RangeNotReadableError as exc:
            size = status.current_size
            await self._error(
                "BAD_RANGE",
                f"{exc}: need 0 <= startOffset <= endOffset <= {size}",
                request.request_id,
            )
            return
        if start == end:
            await self._send_bytes(b"")
            return
        if self._plain:
            await self._send_one_message(start, end)
            return
        piece = self.settings.chunk_reply_size
        for offset in range(start, end, piece):
            stop = min(end, offset + piece)
            try:
                if self._send_file is not None and self._reader.one_file:
                    await self._send_range(self._send_file, offset, stop)
                else:
                    await self._send_bytes(await self._reader.read_published(offset, stop))
            except ConnectionError:
                raise
            except OSError as exc:
                logger.error("reading resource %s failed: %s", self.resource_id, exc)
                if offset == start:
                    await self._error(
                        "READ_FAILED", "The stored bytes could not be read", request.request_id
                    )
                    return
                # Part of the reply is sent: the client cannot resynchronise, so end the connection.
                await self._close(close_codes.INTERNAL_ERROR, "Reading the resource failed")
                raise ConnectionError from exc

    async def _send_one_message(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` as one binary message, as step-streaming's clients expect a
        chunk reply: straight from the file in fragments of ``chunk_reply_size`` (nothing else
        is sent until it is whole), or read whole under a server without ``send_file``."""
        assert self._reader is not None
        try:
            if self._send_file is None or not self._reader.one_file:
                if end - start > WHOLE_MESSAGE_LIMIT:
                    await self._close(
                        close_codes.MESSAGE_TOO_BIG,
                        f"A chunk of {end - start} bytes in one message needs livefile serve"
                        f" (limit {WHOLE_MESSAGE_LIMIT})",
                    )
                    raise ConnectionError("chunk too large for one message")
                await self._send_bytes(await self._reader.read_published(start, end))
                return
            if self._fd is None:
                self._fd = self._reader.open_fd()
            piece = self.settings.chunk_reply_size
            async with self._send_lock:
                for offset in range(start, end, piece):
                    stop = min(end, offset + piece)
                    async with self._slow_consumer_guard():
                        await self._send_file(
                            self._fd, offset, stop - offset, first=offset == start, last=stop == end
                        )
                    await asyncio.sleep(0)  # the other connections' turn
        except ConnectionError:
            raise
        except OSError as exc:
            logger.error("reading resource %s failed: %s", self.resource_id, exc)
            await self._close(close_codes.INTERNAL_ERROR, "Reading the resource failed")
            raise ConnectionError from exc

    async def _send_range(self, send_file: SendFile, start: int, stop: int) -> None:
        """Bytes ``[start, stop)`` as one message straight from the file (the protocol's
        zero-copy extension); the file stays open for the connection's next replies."""
        assert self._reader is not None
        if self._fd is None:
            self._fd = self._reader.open_fd()
        async with self._send_lock, self._slow_consumer_guard():
            await send_file(self._fd, start, stop - start)
        COUNTERS.sent_bytes["websocket"] += stop - start
        # While the socket takes everything at once nothing above suspends: give the other
        # connections their turn between two messages of a long reply.
        await asyncio.sleep(0)

    async def _send_lines(self, request: RequestLines) -> None:
        start, count = request.starting_line_index, request.lines_count
        assert self._reader is not None
        try:
            # A page reaching past the last published line ends there (the last page of a
            # resource is rarely full); only a start beyond it is out of range.
            page = await self._reader.read_lines(
                start, count, self.settings.max_lines_reply_bytes, clamp=True
            )
        except CatalogUnavailableError as exc:
            await self._error("UNAVAILABLE", str(exc), request.request_id)
            return
        except NoLineAccessError:
            await self._error(
                "UNSUPPORTED",
                "This resource was not uploaded with line access (supportsLineAccess)",
                request.request_id,
            )
            return
        except RangeNotReadableError as exc:
            total = exc.status.number_of_lines if isinstance(exc.status, ResourceStatus) else 0
            await self._error(
                "BAD_RANGE",
                f"{exc}: need 0 <= startingLineIndex <= {total} (lines are numbered from 0)"
                " and 0 <= linesCount",
                request.request_id,
            )
            return
        except OSError as exc:
            logger.error("reading lines of %s failed: %s", self.resource_id, exc)
            await self._error(
                "READ_FAILED", "The stored lines could not be read", request.request_id
            )
            return
        lines = [line.decode("utf-8", errors="replace") for line in page.lines]
        reply = Lines(
            lines=lines,
            request_id=request.request_id,
            starting_line_index=page.start,
            next_line_index=page.next_start,
            number_of_lines=page.status.number_of_lines,
            more=page.more,
            growing=page.growing,
        )
        await self._send_text(reply.to_json(self.dialect))

    async def _error(self, code: str, message: str, request_id: str | int | None = None) -> None:
        if self._plain:
            # step-streaming's clients know no Error, and its server ends the session on a bad
            # request: close, with what went wrong as the reason.
            failure = code == "READ_FAILED"
            await self._close(
                close_codes.INTERNAL_ERROR if failure else close_codes.POLICY_VIOLATION, message
            )
            raise ConnectionError(f"request refused: {message}")
        await self._send_text(Error(code=code, message=message, request_id=request_id).to_json())

    async def _send_text(self, text: str) -> None:
        async with self._send_lock, self._slow_consumer_guard():
            await self.websocket.send_text(text)

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock, self._slow_consumer_guard():
            await self.websocket.send_bytes(data)
        COUNTERS.sent_bytes["websocket"] += len(data)

    @contextlib.asynccontextmanager
    async def _slow_consumer_guard(self) -> AsyncIterator[None]:
        """A client that does not read lets its send buffer fill up; after ``send_timeout`` it
        is disconnected, so that it holds no memory and nobody else waits for it."""
        try:
            async with asyncio.timeout(self.settings.send_timeout):
                yield
        except TimeoutError:
            logger.warning("disconnecting a slow consumer of %s", self.resource_id)
            if self._abort is not None:
                # Its send queue is full, so a close frame would wait behind it: end the TCP
                # connection now, releasing the socket and its queued bytes.
                self._abort()
            else:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await self.websocket.close(
                            close_codes.POLICY_VIOLATION,
                            f"Slow consumer: nothing read for {self.settings.send_timeout:g} s",
                        )
            raise ConnectionError("slow consumer disconnected") from None

    async def _close(self, code: int, reason: str) -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with self._send_lock:
                    await self.websocket.close(code, safe_close_reason(reason))
