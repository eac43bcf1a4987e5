"""One upload on a WebSocket: handshake, data, checksum, acknowledgement.

With a ``ConnectionPool`` the upload asks the server to keep the connection open (``keepOpen``)
and hands it back to the pool after a successful acknowledgement; after any failure or abort the
connection is closed, as without one.

A receive task runs beside the sender: it hands over the reference, reports each checkpoint
(bytes the server has stored and published) to the progress callback, and notices an early
close — a quota exceeded mid-stream stops ``write`` at once instead of after the whole file.

A source that may stay quiet (a live file, a pipe) is sent with ``send_from``: while it yields
nothing the upload is kept alive with empty binary messages (the server's idle timeout counts
them; they add no byte), and a server-side end is raised at once, not at the next write.

An upload whose connection is lost (no close frame, or the server going away: a restart)
*resumes*: it reconnects with backoff for up to ``resume_for`` seconds, shows its resume token
(``ResumeUpload``), and sends again, from the offset the server names, the bytes it keeps since
the server's last checkpoint (``replay.py``). Its running checksum is not touched: it covers
every byte once, and the server checks it against what it stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from livefile.api import close_codes
from livefile.api.errors import (
    ConnectionLostError,
    LivefileError,
    LivefileTimeoutError,
    ProtocolError,
)
from livefile.api.messages import (
    DerivedReference,
    FinishUpload,
    ReadyForUpload,
    ResumeUpload,
    StartUpload,
    StatusChanged,
    UploadAcknowledged,
    UploadResumed,
)
from livefile.api.model import ChecksumAlgorithm, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.client_upload.connection import (
    close_quietly,
    closed_error,
    drop,
    open_connection,
)
from livefile.client_upload.pool import ConnectionPool
from livefile.client_upload.replay import ReplayBuffer
from livefile.impl_common.checksums import cheaper_than_a_thread_hop, new_digest
from livefile.impl_common.transcoding import Utf8Transcoder
from livefile.impl_common.upload_protocol import UploadClientProtocol

T = TypeVar("T")
Data = bytes | bytearray | memoryview
Progress = Callable[[int, int], None]
"""``progress(sent_bytes, acknowledged_bytes)``: called as data is sent and at checkpoints."""

# Below this size a hop to a worker thread costs more than hashing on the loop; above it MD5 or
# SHA-256 (which release the GIL) run in a thread while the same bytes are being sent. A CRC
# always runs inline: at 4-13 GB/s a thread hop costs more than the checksum.
THREAD_HASH_MIN = 256 * 1024
# How long a quiet source may leave the connection without a message: well below any sensible
# idle timeout of the server (600 s by default), and a few bytes a second at most.
KEEPALIVE_INTERVAL = 1.0
# How long an upload whose connection was lost tries to resume (the server's default grace
# period), and how many bytes sent since the server's last checkpoint it keeps to send again.
DEFAULT_RESUME_FOR = 300.0
DEFAULT_RESUME_BUFFER = 256 * 1024 * 1024
# Close codes after which an upload resumes: the server going away (shutdown, restart) or
# asking to try again (another worker holds the upload). No close frame at all counts too.
RESUMABLE_CLOSES = frozenset({close_codes.GOING_AWAY, 1012, close_codes.TRY_AGAIN_LATER})
RESUME_FIRST_DELAY = 0.05
RESUME_MAX_DELAY = 2.0


@dataclass(frozen=True)
class UploadResult:
    """A finished upload: where it is, its final status (COMPLETED), its checksum and size."""

    reference: str
    resource_id: str
    status: ResourceStatus
    checksum: str  # hex digest, agreed by the server
    size: int
    checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C
    derived: tuple[DerivedReference, ...] = ()  # what the server produces from it (repack, image)


class AsyncUpload:
    """An upload in progress, from ``AsyncUploadClient.start``.

    ``reference`` and ``resource_id`` are known before any data is sent. ``write`` as often as
    needed, then ``finish`` (or ``abort``). As an async context manager: a block that raises
    aborts the upload (the resource becomes FAILED with the bytes sent so far), a block that
    ends normally finishes it unless it was finished or aborted inside.
    """

    def __init__(
        self,
        ws: ClientConnection,
        *,
        message_size: int,
        timeout: float,
        progress: Progress | None,
        transcoder: Utf8Transcoder | None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        pool: ConnectionPool | None = None,
        resume: ResumePolicy | None = None,
    ) -> None:
        self._ws = ws
        self._resume_policy = resume
        # Where the connection goes after the acknowledgement; None: it is closed.
        self._pool = pool if pool is not None and pool.enabled else None
        self._released = False
        self._message_size = message_size
        self._timeout = timeout
        self._progress = progress
        self._transcoder = transcoder
        self._protocol = UploadClientProtocol()
        self._checksum_algorithm = checksum_algorithm
        self._digest = new_digest(checksum_algorithm)
        self._hash_inline_below = (
            1 << 62 if cheaper_than_a_thread_hop(checksum_algorithm) else THREAD_HASH_MIN
        )
        # One write or finish at a time, so that the bytes hashed are the bytes sent, in order.
        self._lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[ReadyForUpload] = loop.create_future()
        self._ack: asyncio.Future[UploadAcknowledged] = loop.create_future()
        self._resumed: asyncio.Future[UploadResumed | UploadAcknowledged] = loop.create_future()
        self._resume_token: str | None = None  # from ReadyForUpload
        self._replay = ReplayBuffer(resume.buffer if resume else 0)
        # Data is held for a resume from the start (a pipelined upload sends it before the
        # token arrives), and no longer once the server turns out to give no token.
        self._keeping = resume is not None
        self._checkpoint = asyncio.Event()  # set at each checkpoint the server reports
        self._failure: Exception | None = None
        self._aborted = False
        self._receiver = asyncio.create_task(self._receive(), name="livefile-upload-receiver")
        self.sent = 0
        """Bytes sent so far (after transcoding, when a charset was given)."""
        self.acknowledged = 0
        """Bytes the server has stored and published (its last checkpoint)."""
        self._reported = (0, 0)
        self._on_reference: Callable[[str], object] | None = None
        self.reference = ""
        self.resource_id = ""
        self.derived: tuple[DerivedReference, ...] = ()
        """Resources the server derives from this one (``repack=True``, ``image=True``),
        known with the reference: each has its own id and reference, followed at once."""
        self.result: UploadResult | None = None
        self.resumes = 0
        """How many times the upload resumed on a new connection."""

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
        token: str | None = None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        pool: ConnectionPool | None = None,
        repack: bool = False,
        image: bool = False,
        resume: ResumePolicy | None = None,
    ) -> AsyncUpload:
        """Connect (or take an idle connection from ``pool``), announce the resource, and wait
        for its reference.

        An idle connection may turn out closed as it is reused (the server's idle timeout or
        shutdown crossed the ``StartUpload``): no data has been sent yet, so the upload starts
        again, once, on a new connection.
        """
        transcoder = Utf8Transcoder(charset) if charset else None
        start = _start_message(metadata, checksum_algorithm, pool, repack, image, resume)
        while True:
            ws, reused = await _connection(uri, timeout, token, pool)
            upload = cls(
                ws,
                message_size=message_size,
                timeout=timeout,
                progress=progress,
                transcoder=transcoder,
                checksum_algorithm=checksum_algorithm,
                pool=pool,
                resume=resume,
            )
            try:
                await upload._send(start)
                ready = await upload._wait(upload._ready, "the reference (ReadyForUpload)")
            except BaseException as exc:
                await upload._shut(close_codes.INTERNAL_ERROR, "Upload start failed")
                if reused and _closed_before_start(exc, ws):
                    continue
                raise
            upload.reference = ready.reference.uri
            upload.resource_id = ready.resource_id
            upload.derived = tuple(ready.derived or ())
            return upload

    @classmethod
    async def send_whole(
        cls,
        uri: str,
        metadata: ResourceMetadata,
        data: Data,
        *,
        message_size: int,
        timeout: float,
        progress: Progress | None = None,
        token: str | None = None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        pool: ConnectionPool | None = None,
        on_reference: Callable[[str], object] | None = None,
        repack: bool = False,
        image: bool = False,
        resume: ResumePolicy | None = None,
    ) -> UploadResult:
        """Upload ``data`` whole without waiting for the reference first: ``StartUpload``, the
        data and ``FinishUpload`` go out back to back, and the reference (``on_reference``) and
        the acknowledgement are read after them. That saves a round trip per upload, most of
        what many small uploads cost. As in ``start``, a reused connection found closed before
        the reference arrived is replaced once.
        """
        start = _start_message(metadata, checksum_algorithm, pool, repack, image, resume)
        while True:
            ws, reused = await _connection(uri, timeout, token, pool)
            upload = cls(
                ws,
                message_size=message_size,
                timeout=timeout,
                progress=progress,
                transcoder=None,
                checksum_algorithm=checksum_algorithm,
                pool=pool,
                resume=resume,
            )
            upload._on_reference = on_reference
            try:
                async with upload._lock:
                    await upload._send(start)
                    await upload._write(data)
                return await upload.finish()
            except BaseException as exc:
                retry = reused and not upload.reference and _closed_before_start(exc, ws)
                if upload.result is None:
                    await upload.abort(f"Upload failed: {type(exc).__name__}")
                if retry:
                    continue
                raise

    @property
    def ended(self) -> bool:
        """Whether the upload finished, failed or was aborted: it takes no more data."""
        return self.result is not None or self._aborted or self._failure is not None

    async def write(self, data: Data) -> None:
        """Send ``data`` in messages of at most ``message_size`` bytes.

        Returns once the transport took the last message (websockets waits for the socket's
        buffer to drain, so a slow server slows the writer down instead of filling memory).
        Raises the server's error (e.g. ``QuotaExceededError``) as soon as it closed the
        upload, and ``LivefileTimeoutError`` when a message is not taken within the timeout.
        """
        async with self._lock:
            await self._write(data)

    async def keep_alive(self) -> None:
        """Tell the server that the upload goes on though no data comes: an empty binary
        message, which resets the server's idle timeout and adds nothing to the resource."""
        async with self._lock:
            await self._check_writable_or_resume()
            try:
                await self._send(memoryview(b""))
            except LivefileError as exc:
                if not self._resumable(exc):
                    raise
                await self._resume()

    async def send_from(
        self, chunks: AsyncIterable[Data], keepalive_interval: float = KEEPALIVE_INTERVAL
    ) -> None:
        """``write`` what ``chunks`` yields until it is exhausted. While it yields nothing,
        ``keep_alive`` every ``keepalive_interval`` seconds; and when the server ends the upload
        (its close, or the connection lost) raise that error at once, whatever the source is
        doing — its pending read is cancelled."""
        iterator = aiter(chunks)
        while True:
            pending: asyncio.Future[Data] = asyncio.ensure_future(anext(iterator))
            try:
                while True:
                    waits: set[asyncio.Future[Any]] = {pending, self._receiver}
                    done, _ = await asyncio.wait(
                        waits,
                        timeout=keepalive_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if pending in done:
                        break
                    if self._receiver in done:
                        if not self._resumable():
                            raise self._failure or closed_error(self._ws)
                        async with self._lock:
                            await self._resume()
                        continue
                    await self.keep_alive()
            except BaseException:
                pending.cancel()
                await asyncio.wait({pending})
                if not pending.cancelled():
                    pending.exception()  # retrieved: the upload's end is what is raised
                raise
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            await self.write(chunk)

    async def finish(self) -> UploadResult:
        """Send the checksum, wait for the server's acknowledgement, and return the result.

        Calling it again returns the same result.
        """
        async with self._lock:
            if self.result is not None:
                return self.result
            if self._transcoder is not None:
                tail, self._transcoder = self._transcoder.finish(), None
                await self._write(tail)
            await self._check_writable_or_resume()
            checksum = self._digest.hexdigest()
            ack = await self._finish_exchange(checksum)
            algorithm = self._checksum_algorithm
            if (ack.checksum, ack.checksum_algorithm, ack.size) != (checksum, algorithm, self.sent):
                await self._shut(close_codes.PROTOCOL_ERROR, "Acknowledgement does not match")
                raise ProtocolError(
                    f"The server acknowledged {ack.size} bytes with {ack.checksum_algorithm}"
                    f" {ack.checksum}, the client sent {self.sent} bytes with {algorithm}"
                    f" {checksum}"
                )
            if self._pool is not None:
                # Kept open: the receive task stopped at the acknowledgement, so the
                # connection is nobody's now; the next upload may take it.
                await self._wait_for_receiver()
                self._released = True
                await self._pool.release(self._ws)
            else:
                # The server closes right after its acknowledgement; answer that close.
                await self._shut(close_codes.NORMAL, close_codes.REASON_UPLOAD_COMPLETED)
            status = ResourceStatus(
                transfer_status=TransferStatus.COMPLETED,
                current_size=ack.size,
                number_of_lines=ack.number_of_lines,
            )
            self.acknowledged = ack.size
            self._report()
            self.result = UploadResult(
                self.reference,
                self.resource_id,
                status,
                checksum,
                ack.size,
                algorithm,
                self.derived,
            )
            return self.result

    async def _finish_exchange(self, checksum: str) -> UploadAcknowledged:
        """Send ``FinishUpload`` and wait for the acknowledgement, resuming (and finishing
        again) when the connection is lost meanwhile."""
        while True:
            try:
                if not self._has_ack():
                    self._protocol.finishing()
                    await self._send(FinishUpload(checksum=checksum).to_json())
                if not self.reference:  # pipelined (``send_whole``): the reference comes now
                    ready = await self._wait(self._ready, "the reference (ReadyForUpload)")
                    self.reference, self.resource_id = ready.reference.uri, ready.resource_id
                    self.derived = tuple(ready.derived or ())
                    if self._on_reference is not None:
                        self._on_reference(self.reference)
                return await self._wait(self._ack, "the acknowledgement (UploadAcknowledged)")
            except LivefileError as exc:
                if not self._resumable(exc):
                    raise
                await self._resume()

    async def abort(self, reason: str = "Upload aborted by the client") -> None:
        """End the upload without finishing it: the server marks the resource FAILED and keeps
        the bytes it received. Does nothing to an upload that has already ended."""
        if not self.ended:
            self._aborted = True
        await self._shut(close_codes.INTERNAL_ERROR, reason)

    async def __aenter__(self) -> AsyncUpload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            await self.abort(f"Upload aborted: {type(exc).__name__}: {exc}")
        elif not self.ended:
            await self.finish()

    # --- sending ------------------------------------------------------------------------

    async def _write(self, data: Data) -> None:
        await self._check_writable_or_resume()
        if self._transcoder is not None:
            data = self._transcoder.feed(bytes(data))
        view = memoryview(data).cast("B")
        for offset in range(0, len(view), self._message_size):
            piece = view[offset : offset + self._message_size]
            await self._check_writable_or_resume()
            await self._make_room(len(piece))
            try:
                await self._send(piece)
            except LivefileError as exc:
                if not self._resumable(exc):
                    raise
                await self._resume()  # sends this piece again, with what the server lacks
            self._report()

    async def _send(self, message: str | memoryview, again: bool = False) -> None:
        """Send one message within the timeout. New data is hashed as it goes, counted as sent
        and held for a resume even if sending fails; data sent ``again`` (resuming) is not."""
        if isinstance(message, memoryview) and message and not again:
            if self._keeping:
                self._replay.add(message)
            self.sent += len(message)
        try:
            async with asyncio.timeout(self._timeout):
                if isinstance(message, str) or again:
                    await self._ws.send(message)
                elif len(message) < self._hash_inline_below:
                    self._digest.update(message)
                    await self._ws.send(message)
                    # send() does not yield while the socket takes everything (loopback takes
                    # megabytes); yield so that the receive task sees an early close at once.
                    await asyncio.sleep(0)
                else:
                    hashing = asyncio.to_thread(self._digest.update, message)
                    _, sent = await asyncio.gather(
                        hashing, self._ws.send(message), return_exceptions=True
                    )
                    if isinstance(sent, BaseException):
                        raise sent  # hashed all the same: the digest covers every byte sent
        except TimeoutError:
            # The server stopped reading: a close frame would wait behind the unsent data.
            drop(self._ws)
            await self._wait_for_receiver()
            raise LivefileTimeoutError(f"The server took no data for {self._timeout} s") from None
        except ConnectionClosed:
            # The receive task knows why (the server's close code and reason).
            await self._wait_for_receiver()
            raise self._failure or closed_error(self._ws) from None

    def _report(self) -> None:
        # Only news: a status that repeats the last checkpoint (e.g. on subscribe) is not.
        if self._progress is not None and (self.sent, self.acknowledged) != self._reported:
            self._reported = (self.sent, self.acknowledged)
            self._progress(self.sent, self.acknowledged)

    async def _check_writable_or_resume(self) -> None:
        """Raise if the upload cannot take data; resume it first if its connection was lost."""
        if self._failure is not None and not self._aborted and self._resumable():
            await self._resume()
        self._check_writable()

    def _check_writable(self) -> None:
        if self._aborted:
            raise ProtocolError("The upload was aborted")
        if self.result is not None:
            raise ProtocolError("The upload is already finished")
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    # --- receiving ----------------------------------------------------------------------

    async def _receive(self) -> None:
        failure: Exception
        try:
            async for message in self._ws:
                self._handle(message)
                if self._pool is not None and self._ack.done():
                    return  # the connection stays open for the next upload: stop reading it
            failure = closed_error(self._ws)
        except ConnectionClosed:
            failure = closed_error(self._ws)
        except Exception as exc:  # the server broke the protocol, or a progress callback raised
            failure = exc
            code = (
                close_codes.PROTOCOL_ERROR
                if isinstance(exc, ProtocolError)
                else close_codes.INTERNAL_ERROR
            )
            await close_quietly(self._ws, code, str(exc))
        if self._ack.done():
            return  # the upload succeeded; the close that follows is its normal end
        self._failure = failure
        futures: tuple[asyncio.Future[Any], ...] = (self._ready, self._ack, self._resumed)
        for future in futures:
            if not future.done():
                future.set_exception(failure)
                future.exception()  # retrieved here: nobody may be waiting any more

    def _handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            raise ProtocolError("The server sent binary data on an upload connection")
        reply = self._protocol.receive_text(message)
        if isinstance(reply, ReadyForUpload):
            # Known at once, not only when ``finish`` reads the reply: a pipelined upload
            # (``send_whole``) cut while its data still goes out resumes with it.
            self.resource_id = reply.resource_id
            self._resume_token = reply.resume_token if self._resume_policy else None
            if self._resume_token is None:
                self._keeping = False
                self._replay.release(self.sent)
            self._ready.set_result(reply)
        elif isinstance(reply, UploadResumed):
            self._resumed.set_result(reply)
        elif isinstance(reply, StatusChanged):
            # Progress only ever moves forward, whatever order the reports come in.
            self.acknowledged = max(self.acknowledged, reply.resource_status.current_size)
            self._replay.release(min(self.acknowledged, self._replay.end))
            self._checkpoint.set()
            self._report()
        elif isinstance(reply, UploadAcknowledged):
            self._ack.set_result(reply)
            if not self._resumed.done():
                self._resumed.set_result(reply)

    async def _wait(self, future: asyncio.Future[T], what: str) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            await self._shut(close_codes.INTERNAL_ERROR, f"Timed out waiting for {what}")
            raise LivefileTimeoutError(
                f"The server did not send {what} within {self._timeout} s"
            ) from None

    # --- resuming ------------------------------------------------------------------------

    def _has_ack(self) -> bool:
        """Whether the acknowledgement arrived (its future may also hold a lost connection)."""
        return self._ack.done() and not self._ack.cancelled() and self._ack.exception() is None

    def _resumable(self, error: BaseException | None = None) -> bool:
        """Whether the connection was lost in a way an upload resumes from: no close frame,
        or the server going away; and the server gave a resume token. A server that stopped
        taking data (``LivefileTimeoutError``) is not resumed from: it would stall again."""
        if self._resume_token is None or self._aborted or self._resume_policy is None:
            return False
        if isinstance(error, LivefileTimeoutError):
            return False
        if self._ws.protocol.state is not State.CLOSED and self._failure is None:
            return False  # the connection is alive: the failure was something else
        received = self._ws.protocol.close_rcvd
        return received is None or received.code in RESUMABLE_CLOSES

    async def _make_room(self, more: int) -> None:
        """Wait for a checkpoint while the bytes held for a resume would pass their limit."""
        while self._replay.full(more):
            self._checkpoint.clear()
            waiting = asyncio.ensure_future(self._checkpoint.wait())
            done, _ = await asyncio.wait(
                {waiting, self._receiver},
                timeout=self._timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiting.cancel()
            if self._receiver in done:
                return  # the connection ended: the send that follows finds out why
            if not done:
                raise LivefileTimeoutError(
                    f"The server reported no checkpoint for {self._timeout} s"
                )

    async def _resume(self) -> None:
        """Reconnect with backoff until the server takes the upload again, and send it the
        bytes it lacks; gives up (raising why) after ``resume_for`` seconds, or at once when
        the server refuses (the upload FAILED or expired)."""
        assert self._resume_policy is not None
        assert self._resume_token is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._resume_policy.resume_for
        delay = RESUME_FIRST_DELAY
        while True:
            drop(self._ws)
            await self._wait_for_receiver()
            try:
                await self._reconnect()
                return
            except LivefileError as exc:
                if not self._resumable() and not isinstance(exc, LivefileTimeoutError):
                    raise
                if loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUME_MAX_DELAY)

    async def _reconnect(self) -> None:
        """One attempt: returns when the upload goes on (or had completed)."""
        assert self._resume_policy is not None
        assert self._resume_token is not None
        self._ws = await open_connection(
            self._resume_policy.uri, self._timeout, self._resume_policy.token
        )
        self._pool = None  # a resumed upload's connection ends with it
        self._protocol = UploadClientProtocol(resuming=True)
        loop = asyncio.get_running_loop()
        self._failure = None
        self._resumed = loop.create_future()
        if not self._has_ack():
            self._ack = loop.create_future()
        self._receiver = asyncio.create_task(self._receive(), name="livefile-upload-receiver")
        request = ResumeUpload(resource_id=self.resource_id, resume_token=self._resume_token)
        await self._send(request.to_json())
        reply = await self._wait(self._resumed, "the answer to ResumeUpload")
        self.resumes += 1
        if isinstance(reply, UploadAcknowledged):
            return
        if not self._replay.start <= reply.offset <= self.sent:
            raise ProtocolError(
                f"The server has {reply.offset} bytes; this client can send again only from"
                f" {self._replay.start} to {self.sent}"
            )
        self.acknowledged = max(self.acknowledged, reply.offset)
        for piece in self._replay.since(reply.offset):
            await self._send(piece, again=True)

    async def _wait_for_receiver(self) -> None:
        # asyncio.wait neither raises the task's outcome nor cancels it on timeout.
        done, _ = await asyncio.wait({self._receiver}, timeout=self._timeout)
        if not done:
            self._receiver.cancel()

    async def _shut(self, code: int, reason: str) -> None:
        """Close the connection (if still open and still ours) and let the receive task end."""
        if self._released:
            return  # handed back to the pool after the acknowledgement: another upload's now
        await close_quietly(self._ws, code, reason)
        await self._wait_for_receiver()


@dataclass(frozen=True)
class ResumePolicy:
    """How an upload resumes after its connection was lost: where it reconnects (with which
    access token), for how long it tries, how many unacknowledged bytes it keeps."""

    uri: str
    token: str | None
    resume_for: float = DEFAULT_RESUME_FOR
    buffer: int = DEFAULT_RESUME_BUFFER


def _start_message(
    metadata: ResourceMetadata,
    algorithm: ChecksumAlgorithm,
    pool: ConnectionPool | None,
    repack: bool,
    image: bool,
    resume: ResumePolicy | None,
) -> str:
    keep_open = pool is not None and pool.enabled
    return StartUpload(
        metadata=metadata,
        checksum_algorithm=algorithm,
        keep_open=keep_open,
        repack=repack or None,
        image=image or None,
        resumable=True if resume is not None else None,
    ).to_json()


async def _connection(
    uri: str, timeout: float, token: str | None, pool: ConnectionPool | None
) -> tuple[ClientConnection, bool]:
    """An idle connection from ``pool`` (reused: True) or a new one."""
    if pool is not None:
        return await pool.acquire(uri, timeout, token)
    return await open_connection(uri, timeout, token), False


def _closed_before_start(error: BaseException, ws: ClientConnection) -> bool:
    """Whether a reused connection failed only because it was closed as it was reused: lost,
    closed normally (a server that ignored ``keepOpen``), for shutdown, or for idling."""
    if not isinstance(error, Exception) or isinstance(error, LivefileTimeoutError):
        return False  # cancelled, or the server is slow rather than gone: not retried
    received = ws.protocol.close_rcvd
    if received is None:
        return isinstance(error, ConnectionLostError)  # lost without a close frame
    return received.code in (close_codes.NORMAL, close_codes.GOING_AWAY) or (
        received.code == close_codes.POLICY_VIOLATION
        and received.reason.startswith(close_codes.IDLE_PREFIX)
    )
