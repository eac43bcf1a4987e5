"""One upload on its own WebSocket: handshake, data, checksum, acknowledgement.

A receive task runs beside the sender: it hands over the reference, reports each checkpoint
(bytes the server has stored and published) to the progress callback, and notices an early
close — a quota exceeded mid-stream stops ``write`` at once instead of after the whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from livefile.api import close_codes
from livefile.api.errors import (
    ConnectionLostError,
    LivefileError,
    LivefileTimeoutError,
    ProtocolError,
)
from livefile.api.messages import (
    FinishUpload,
    ReadyForUpload,
    StartUpload,
    StatusChanged,
    UploadAcknowledged,
)
from livefile.api.model import ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_common.close_reason import error_for_close, safe_close_reason
from livefile.impl_common.transcoding import Utf8Transcoder
from livefile.impl_common.upload_protocol import UploadClientProtocol

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""``progress(sent_bytes, acknowledged_bytes)``: called as data is sent and at checkpoints."""


@dataclass(frozen=True)
class UploadResult:
    """A finished upload: where it is, what the server stored, and its MD5."""

    reference: str
    resource_id: str
    status: ResourceStatus
    checksum: str

    @property
    def size(self) -> int:
        return self.status.current_size


class AsyncUpload:
    """An upload in progress. ``reference`` is known before any data is sent."""

    def __init__(
        self,
        ws: ClientConnection,
        message_size: int,
        timeout: float,
        progress: Progress | None,
        transcoder: Utf8Transcoder | None,
    ) -> None:
        self._ws = ws
        self._message_size = message_size
        self._timeout = timeout
        self._progress = progress
        self._transcoder = transcoder
        self._protocol = UploadClientProtocol()
        self._md5 = hashlib.md5()
        self._ready: asyncio.Future[ReadyForUpload] = asyncio.get_running_loop().create_future()
        self._ack: asyncio.Future[UploadAcknowledged] = asyncio.get_running_loop().create_future()
        self._failure: LivefileError | None = None
        self._receiver = asyncio.create_task(self._receive(), name="livefile-upload")
        self.sent = 0
        self.acknowledged = 0
        self.reference = ""
        self.resource_id = ""
        self.result: UploadResult | None = None

    @classmethod
    async def start(
        cls,
        uri: str,
        metadata: ResourceMetadata,
        *,
        message_size: int,
        timeout: float,
        progress: Progress | None = None,
        charset: str | None = None,
    ) -> AsyncUpload:
        """Connect, announce the resource, and wait for its reference."""
        transcoder = Utf8Transcoder(charset) if charset else None
        try:
            ws = await asyncio.wait_for(
                connect(uri, compression=None, max_size=1024 * 1024, open_timeout=None), timeout
            )
        except TimeoutError:
            raise LivefileTimeoutError(f"Connecting to {uri} timed out after {timeout} s") from None
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionLostError(f"Cannot connect to {uri}: {exc}") from exc
        upload = cls(ws, message_size, timeout, progress, transcoder)
        try:
            await upload._send(StartUpload(metadata=metadata).to_json())
            ready = await upload._wait(upload._ready, "the reference (ReadyForUpload)")
        except BaseException:
            await upload._close_quietly(close_codes.INTERNAL_ERROR, "Upload start failed")
            raise
        upload.reference = ready.reference.uri
        upload.resource_id = ready.resource_id
        return upload

    async def write(self, data: bytes) -> None:
        """Send ``data`` (in messages of at most ``message_size`` bytes)."""
        if self._transcoder is not None:
            data = self._transcoder.feed(data)
        view = memoryview(data)
        for offset in range(0, len(view), self._message_size):
            piece = view[offset : offset + self._message_size]
            self._raise_if_failed()
            # Hash in a worker thread while the same bytes are sent: MD5 releases the GIL.
            try:
                await asyncio.gather(
                    asyncio.to_thread(self._md5.update, piece), self._ws.send(piece)
                )
            except ConnectionClosed:
                await self._receiver_done()
                self._raise_if_failed()
                raise
            self.sent += len(piece)
            if self._progress is not None:
                self._progress(self.sent, self.acknowledged)

    async def finish(self) -> UploadResult:
        """Send the checksum, wait for the server's acknowledgement, and return the result."""
        if self.result is not None:
            return self.result
        if self._transcoder is not None:
            tail, self._transcoder = self._transcoder.finish(), None
            await self.write(tail)
        self._raise_if_failed()
        self._protocol.finishing()
        checksum = self._md5.hexdigest()
        await self._send(FinishUpload(checksum=checksum).to_json())
        ack = await self._wait(self._ack, "the acknowledgement (UploadAcknowledged)")
        if ack.checksum != checksum or ack.size != self.sent:
            raise ProtocolError(
                f"The server acknowledged {ack.size} bytes with MD5 {ack.checksum},"
                f" the client sent {self.sent} bytes with MD5 {checksum}"
            )
        await self._close_quietly(close_codes.NORMAL, close_codes.REASON_UPLOAD_COMPLETED)
        status = ResourceStatus(
            transfer_status=TransferStatus.COMPLETED,
            current_size=ack.size,
            number_of_lines=ack.number_of_lines,
        )
        self.acknowledged = ack.size
        if self._progress is not None:
            self._progress(self.sent, self.acknowledged)
        self.result = UploadResult(self.reference, self.resource_id, status, checksum)
        return self.result

    async def abort(self, reason: str = "Upload aborted by the client") -> None:
        """End the upload without finishing it: the server marks the resource FAILED and keeps
        the bytes it received."""
        await self._close_quietly(close_codes.INTERNAL_ERROR, reason)

    async def __aenter__(self) -> AsyncUpload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A block that raises aborts the upload; one that ends normally finishes it."""
        if exc is not None:
            await self.abort(safe_close_reason(f"Upload aborted: {exc!r}"))
        elif self.result is None:
            await self.finish()

    # --- plumbing -----------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        self._raise_if_failed()
        try:
            await self._ws.send(text)
        except ConnectionClosed:
            await self._receiver_done()
            self._raise_if_failed()
            raise

    async def _wait(self, future: asyncio.Future[T], what: str) -> T:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            await self._close_quietly(close_codes.INTERNAL_ERROR, f"Timed out waiting for {what}")
            raise LivefileTimeoutError(
                f"The server did not send {what} within {self._timeout} s"
            ) from None

    async def _receive(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    raise ProtocolError("The server sent binary data on an upload connection")
                reply = self._protocol.receive_text(message)
                if isinstance(reply, ReadyForUpload):
                    self._ready.set_result(reply)
                elif isinstance(reply, StatusChanged):
                    self.acknowledged = max(self.acknowledged, reply.resource_status.current_size)
                    if self._progress is not None:
                        self._progress(self.sent, self.acknowledged)
                elif isinstance(reply, UploadAcknowledged):
                    self._ack.set_result(reply)
            failure = self._closed_error()
        except ConnectionClosed:
            failure = self._closed_error()
        except LivefileError as exc:
            failure = exc
            await self._close_quietly(close_codes.PROTOCOL_ERROR, str(exc))
        if not self._ack.done():
            self._failure = failure
            for future in (self._ready, self._ack):
                if not future.done():
                    future.set_exception(failure)
                    future.exception()  # retrieved here: the waiter may have given up

    def _closed_error(self) -> LivefileError:
        code, reason = self._ws.close_code, self._ws.close_reason or ""
        if self._ws.protocol.close_rcvd is None:
            return ConnectionLostError("The connection to the server was lost")
        return error_for_close(code, reason)

    async def _receiver_done(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._receiver), self._timeout)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _close_quietly(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(code, safe_close_reason(reason)), self._timeout)
        with contextlib.suppress(Exception):
            await self._receiver
