"""One WebSocket to a resource's download endpoint, driven by the sans-I/O protocol machine.

A receive task reads every message and feeds it to ``DownloadClientProtocol``; the events that
come out resolve the futures of waiting requests, wake status waiters and call status
listeners. When the connection ends, everything still waiting fails with one livefile error
saying why. Nothing here raises websockets' exceptions to the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from livefile.api import close_codes
from livefile.api.errors import ConnectionLostError, LivefileError, LivefileTimeoutError
from livefile.api.messages import SUBPROTOCOL
from livefile.api.model import ResourceStatus
from livefile.client_download.frames import SplittingClientConnection
from livefile.impl_common.close_reason import error_for_close, safe_close_reason
from livefile.impl_common.download_protocol import (
    ConnectionEnding,
    DownloadClientProtocol,
    Event,
    LinesPage,
    ReplyReceived,
    Request,
    RequestFailed,
    StatusReceived,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
StatusListener = Callable[[ResourceStatus], object]
StatusPredicate = Callable[[ResourceStatus], bool]

# Data replies come in messages of 1 MiB by default and Lines replies hold about 1 MiB of text;
# JSON escaping can make a Lines message several times larger than its text.
MAX_INCOMING_MESSAGE = 16 * 1024 * 1024
MAX_CLOSE_TIMEOUT = 10.0  # websockets' own default; a shorter client timeout shortens it too
# Closes after which a follower reconnects: the server going away, restarting, or busy.
LOST_CLOSES = frozenset({close_codes.GOING_AWAY, 1012, close_codes.TRY_AGAIN_LATER})


class DownloadConnection:
    """An open download connection: the latest status, waiters and listeners on statuses, and
    requests whose replies are matched in order. Create it with ``await DownloadConnection.open``.
    """

    def __init__(self, ws: ClientConnection, resource_id: str, timeout: float | None) -> None:
        self.resource_id = resource_id
        self.timeout = timeout
        self._ws = ws
        self._protocol = DownloadClientProtocol(resource_id)
        self._replies: dict[Request, asyncio.Future[Any]] = {}
        self._listeners: list[StatusListener] = []
        self._waiters: list[tuple[StatusPredicate, asyncio.Future[ResourceStatus]]] = []
        self._failure: LivefileError | None = None
        self._ending: LivefileError | None = None  # what the server said before closing
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._progress_at = self._loop.time()
        self._receiver = asyncio.create_task(
            self._receive(), name=f"livefile-download-{resource_id}"
        )

    @classmethod
    async def open(
        cls, uri: str, resource_id: str, timeout: float | None, token: str | None = None
    ) -> DownloadConnection:
        """Connect to ``uri`` and wait for the resource's current status, each within
        ``timeout``. Raises ResourceNotFoundError for an unknown resource."""
        ws = await _connect(uri, timeout, token)
        connection = cls(ws, resource_id, timeout)
        try:
            await connection.wait_for_status(lambda status: True, timeout)
        except LivefileTimeoutError:
            await connection.close()
            raise LivefileTimeoutError(
                f"The server sent no status of {resource_id} within {timeout} s"
            ) from None
        except BaseException:
            await connection.close()
            raise
        return connection

    # --- statuses ---------------------------------------------------------------------------

    @property
    def status(self) -> ResourceStatus:
        """The latest status received (the connection is open only once there is one)."""
        status = self._protocol.status
        if status is None:
            raise LivefileError("No status has been received yet")
        return status

    def add_status_listener(self, listener: StatusListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_for_status(
        self, predicate: StatusPredicate, timeout: float | None
    ) -> ResourceStatus:
        """The first status, the current one included, for which ``predicate`` holds."""
        status = self._protocol.status
        if status is not None and predicate(status):
            return status
        if self._failure is not None:
            raise self._failure
        future: asyncio.Future[ResourceStatus] = self._loop.create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await future
        except TimeoutError:
            if not deadline.expired():
                raise
            raise LivefileTimeoutError(
                f"No status of {self.resource_id} matched within {timeout} s"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    # --- requests ---------------------------------------------------------------------------

    async def request_chunk(self, start: int, end: int) -> asyncio.Future[bytes]:
        """Send ``RequestChunk{start, end}``; the future gets the bytes (see ``reply``)."""
        self._check_open()
        self._note_first_request()
        request, text = self._protocol.request_chunk(start, end)
        return await self._send(request, text)

    async def request_chunk_messages(self, start: int, end: int) -> asyncio.Future[list[bytes]]:
        """Like ``request_chunk``, but the future gets the reply's messages, not joined."""
        self._check_open()
        self._note_first_request()
        request, text = self._protocol.request_chunk(start, end, joined=False)
        return await self._send(request, text)

    async def request_lines(self, start: int, count: int) -> asyncio.Future[LinesPage]:
        """Send ``RequestLines{start, count}``; the future gets the page (see ``reply``)."""
        self._check_open()
        self._note_first_request()
        request, text = self._protocol.request_lines(start, count)
        return await self._send(request, text)

    async def reply(self, future: asyncio.Future[T]) -> T:
        """The result of a request's future. Waits while the server makes progress on the
        requests before it; raises LivefileTimeoutError once no reply data has arrived for
        ``timeout`` seconds. A request given up on is discarded when its reply arrives."""
        try:
            while True:
                if self.timeout is None:
                    return await asyncio.shield(future)
                remaining = self._progress_at + self.timeout - self._loop.time()
                if remaining <= 0:
                    raise LivefileTimeoutError(
                        f"The server sent no reply data for {self.timeout} s"
                    )
                try:
                    return await asyncio.wait_for(asyncio.shield(future), remaining)
                except TimeoutError:
                    if future.done():
                        return future.result()
                    # Replies to earlier requests may have arrived meanwhile: look again.
        finally:
            if not future.done():
                future.cancel()

    async def _send(self, request: Request, text: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._replies[request] = future
        try:
            # websockets writes the frame before its first await (which only waits for the
            # write buffer to drain), so a send cancelled here has still sent its request and
            # the request stays where it is in the reply order.
            await self._ws.send(text)
        except ConnectionClosed:
            pass  # the receive task fails every waiting request with the reason of the close
        except BaseException:
            future.cancel()
            raise
        return future

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _note_first_request(self) -> None:
        # The reply clock starts when the server has something to answer.
        if self._protocol.pending == 0:
            self._progress_at = self._loop.time()

    # --- receiving --------------------------------------------------------------------------

    async def _receive(self) -> None:
        failure: LivefileError | None = None
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    self._progress_at = self._loop.time()
                    event: Event | None = self._protocol.receive_data(message)
                else:
                    event = self._protocol.receive_text(message)
                if event is not None:
                    self._dispatch(event)
        except ConnectionClosed:
            pass
        except LivefileError as exc:  # the server broke the protocol
            failure = exc
            await close_quietly(self._ws, close_codes.PROTOCOL_ERROR, str(exc))
        except Exception as exc:  # a bug here must not leave requests waiting forever
            logger.exception("the download connection to %s failed", self.resource_id)
            failure = LivefileError(f"The download client failed: {exc!r}")
            await close_quietly(self._ws, close_codes.INTERNAL_ERROR, "Client error")
        finally:
            self._end(failure or self._closed_error())

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, StatusReceived):
            self._on_status(event.status)
        elif isinstance(event, ReplyReceived | RequestFailed):
            self._progress_at = self._loop.time()
            future = self._replies.pop(event.request)
            if future.done():
                return  # its caller gave up on it
            if isinstance(event, ReplyReceived):
                future.set_result(event.value)
            else:
                future.set_exception(event.error)
        elif isinstance(event, ConnectionEnding):
            self._ending = event.error

    def _on_status(self, status: ResourceStatus) -> None:
        # Listeners first: by the time a waiter resumes, every listener has seen the status.
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                # Someone else's callback must not break the connection for everyone.
                logger.exception("a status listener of %s failed", self.resource_id)
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                matched = predicate(status)
            except Exception as exc:
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(status)

    def _closed_error(self) -> LivefileError:
        if self._ending is not None:
            return self._ending
        if self._closing:
            return ConnectionLostError("The download client was closed")
        received = self._ws.protocol.close_rcvd
        if received is None:
            return ConnectionLostError("The connection to the server was lost")
        return error_for_close(received.code, received.reason)

    def _end(self, failure: LivefileError) -> None:
        if self._failure is None:
            self._failure = failure
        for request in self._protocol.drain():
            future = self._replies.pop(request, None)
            if future is not None and not future.done():
                future.set_exception(self._failure)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(self._failure)

    @property
    def lost(self) -> bool:
        """Whether the connection ended without the client or the resource deciding it: lost
        (no close frame) or the server going away (a shutdown, a restart, "try again"). A
        follower reconnects after such an end."""
        if self._failure is None or self._closing or self._ending is not None:
            return False
        received = self._ws.protocol.close_rcvd
        return received is None or received.code in LOST_CLOSES

    # --- closing ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close with 1000 "Client Session closed"; whatever still waits fails with
        ConnectionLostError. Closing twice is harmless."""
        if self._failure is None:
            self._closing = True
        await close_quietly(self._ws, close_codes.NORMAL, close_codes.REASON_CLIENT_CLOSED)
        await self._receiver


async def _connect(uri: str, timeout: float | None, token: str | None) -> ClientConnection:
    """Open the WebSocket (TCP, TLS and handshake together within ``timeout``), showing
    ``token`` as a bearer token when given (a reference may carry its own in ``?token=``).

    Compression stays off: permessage-deflate costs more than an order of magnitude of
    throughput on data that does not compress (DESIGN.md).
    """
    try:
        async with asyncio.timeout(timeout):
            return await connect(
                uri,
                additional_headers={"Authorization": f"Bearer {token}"} if token else None,
                compression=None,
                max_size=MAX_INCOMING_MESSAGE,
                # livefile's extensions of step-streaming's protocol (docs/protocol.md).
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                create_connection=SplittingClientConnection,
                open_timeout=None,  # the timeout above covers the whole opening
                close_timeout=min(timeout or MAX_CLOSE_TIMEOUT, MAX_CLOSE_TIMEOUT),
            )
    except TimeoutError:
        raise LivefileTimeoutError(f"Connecting to {uri} timed out after {timeout} s") from None
    except (OSError, WebSocketException) as exc:
        raise ConnectionLostError(f"Cannot connect to {uri}: {exc}") from exc


async def close_quietly(ws: ClientConnection, code: int, reason: str) -> None:
    """Close ``ws`` unless it is closed already, within its close timeout; past that, drop
    the TCP connection."""
    try:
        async with asyncio.timeout(ws.close_timeout or MAX_CLOSE_TIMEOUT):
            await ws.close(code, safe_close_reason(reason))
    except TimeoutError:
        # close() first waits for the write buffer to drain, with no deadline of its own.
        ws.transport.abort()
    except Exception:  # already closed, or the close failed: either way it is over
        pass
