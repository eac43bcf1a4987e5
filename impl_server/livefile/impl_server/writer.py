"""The one writer every producer uses: ordered appends off the event loop, the checksum, the
line index, checkpoints, progress and the end — each published status with a new revision.

Data goes into a small bounded queue; a writer task appends and hashes it in worker threads (both
release the GIL), so producing the next piece overlaps storing the last one, and memory stays
bounded (queue depth times piece size). For text resources the same thread that appends the
bytes appends their line ends to the index, so a checkpoint never publishes a size or a line
count that a reader cannot read yet. After each append the checkpoint clock decides whether to
publish now; otherwise a timer publishes within one interval, so a quiet producer's last bytes
(or its last progress) are never held back. A new stage is published at once.

What a producer does with this — a client's checksum to compare, a quota, "a dropped connection
means FAILED" — is the producer's own policy (``upload.py`` for WebSocket uploads).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from opentelemetry import trace

from livefile.api.errors import LivefileError, ServerError
from livefile.api.interfaces import StorageWriter
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceStatus,
    TransferStatus,
)
from livefile.impl_common.checkpoint import CheckpointClock
from livefile.impl_common.checksums import (
    cheaper_than_a_thread_hop,
    new_digest,
    stored_form,
)
from livefile.impl_common.lines import line_count, line_ends
from livefile.impl_server.file_threads import in_file_thread
from livefile.impl_server.line_index import LineIndexWriter
from livefile.impl_server.reopen import StoredPrefix
from livefile.impl_server.storage import storage_error

logger = logging.getLogger(__name__)

QUEUE_DEPTH = 4
# The most bytes ``complete`` stores itself as a resource's last piece: they are hashed on the
# event loop (a CRC-32C of 64 KiB takes microseconds).
LAST_PIECE_MOST = 64 * 1024
Publish = Callable[[ResourceStatus], None]
# Records a terminal status (and the checksum of a COMPLETED resource) durably and returns the
# terminal status that stands: this one, or the one another process recorded first. Raises
# ``EndNotRecorded`` when it could not be recorded in time.
# ``durable_bytes``, when given, makes the resource's bytes durable: it runs on the same worker
# thread just before the record beside them is written (one trip for both, at every end), and
# its ``OSError`` ends the resource FAILED ``storage_failed``.
RecordEnd = Callable[
    [ResourceStatus, str | None, Callable[[], None] | None], Awaitable[ResourceStatus]
]


class EndNotRecorded(ServerError):
    """The terminal status could not be recorded where every process reads it (Redis away for
    too long). ``status`` is what the resource ends with instead — FAILED, never COMPLETED: its
    producer is told of a failure, so nothing may later call it complete. The manager holds it
    and records it once the catalog answers."""

    def __init__(self, message: str, status: ResourceStatus) -> None:
        super().__init__(message)
        self.status = status


class StoppedError(ServerError):
    """The resource was ended by someone other than its producer — deleted, or expired — and
    takes nothing more; ``error`` says why (its FAILED status's error)."""

    def __init__(self, error: ResourceError) -> None:
        super().__init__(error.message or error.code)
        self.error = error


def initial_status(line_access: bool, stage: str | None) -> ResourceStatus:
    """A new resource's first status (INITIATED, nothing stored): its creation records it
    before the resource's writer exists."""
    return ResourceStatus(
        transfer_status=TransferStatus.INITIATED,
        current_size=0,
        number_of_lines=0 if line_access else None,
        revision=0,
        stage=stage,
    )


class LiveWriter:
    """Writes one resource between its creation and its terminal status (``ResourceWriter``).

    A writer made with ``reopened`` continues a resource that was stored up to some size
    (``ResourceManager.reopen``): it starts IN_PROGRESS at that size, with that digest."""

    def __init__(
        self,
        resource_id: str,
        writer: StorageWriter,
        index: LineIndexWriter | None,
        checkpoint_interval: float,
        publish: Publish,
        record_end: RecordEnd,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        stage: str | None = None,
        durable: bool = False,
        on_stored: Callable[[int], None] | None = None,
        reopened: StoredPrefix | None = None,
    ) -> None:
        """``reopened``: go on after the bytes an unfinished resource already holds (a resumed
        upload, a job taken over); ``writer`` and ``index`` append after them."""
        self._resource_id = resource_id
        self._on_stored = on_stored  # hears how many bytes each append stored (storage usage)
        self._durable = durable  # fsync the bytes (and line index) before COMPLETED
        self._ending = False  # the end is being recorded: nothing more is published
        self._abandoned = False  # another process produces the resource now
        self._released = False  # handed back unfinished (``release``): nothing more happens
        self._written = reopened.size if reopened else 0  # bytes appended to storage
        self._writer = writer
        self._index = index
        self.status = (
            ResourceStatus(
                transfer_status=TransferStatus.IN_PROGRESS,
                current_size=self._written,
                number_of_lines=self._lines(ended=False),
                revision=reopened.revision,
                stage=stage,
            )
            if reopened
            else initial_status(index is not None, stage)
        )
        self._clock = CheckpointClock(checkpoint_interval)
        self._publish = publish
        self._record_end = record_end
        self._algorithm = checksum_algorithm
        self._digest = reopened.digest if reopened else new_digest(checksum_algorithm)
        self._hash_with_store = cheaper_than_a_thread_hop(checksum_algorithm)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_DEPTH)
        self._stage = stage
        self._percent: float | None = None
        self._write_error: OSError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        # Done when storing failed: a producer waiting for its next input (a client's next
        # message) stops waiting, so even one that has gone quiet learns of it at once.
        self.storage_failed: asyncio.Future[None] = self._loop.create_future()
        # Done, with the reason, when the resource was ended by someone other than its producer
        # (``stop``): a producer waiting for its next input stops waiting, as for a failure.
        self.stopped: asyncio.Future[ResourceError] = self._loop.create_future()
        # One end at a time: a deletion arriving while COMPLETED is being recorded waits for it.
        self._end_lock = asyncio.Lock()
        self._writer_task = asyncio.create_task(self._drain(), name=f"writer-{resource_id}")

    @property
    def resource_id(self) -> str:
        return self._resource_id

    @property
    def ended(self) -> bool:
        return self.status.is_terminal

    @property
    def checksum_algorithm(self) -> ChecksumAlgorithm:
        return self._algorithm

    @property
    def checksum(self) -> str:
        """The hex digest of the bytes stored so far."""
        return self._digest.hexdigest()

    @property
    def stored_checksum(self) -> str:
        """The checksum as the catalog keeps it: ``<hex>`` for MD5, else ``<algorithm>:<hex>``."""
        return stored_form(self._algorithm, self.checksum)

    @property
    def written(self) -> int:
        """Bytes stored so far (published or about to be)."""
        return self._written

    def check_stopped(self) -> None:
        """Raise ``StoppedError`` when the resource was deleted or expired meanwhile."""
        if self.stopped.done():
            raise StoppedError(self.stopped.result())

    async def append(self, data: bytes) -> None:
        if self._abandoned:
            raise ServerError("Another worker produces this resource now")
        self.check_stopped()
        if self._released:
            raise ServerError("The resource's writer was released; reopen it to append")
        if self.ended or self._ending:
            raise ServerError(f"The resource has already ended {self.status.transfer_status.value}")
        self.check_storage()
        if data:
            await self._queue.put(data)

    def check_storage(self) -> None:
        """Raise the storage failure (a ``ServerError`` naming a full disk as such), if any."""
        if self._write_error is not None:
            raise storage_error(self._write_error)

    def progress(self, stage: str | None, percent: float | None = None) -> None:
        if self.ended or self._ending or self._abandoned or self._released:
            return
        if percent is not None:
            percent = min(100.0, max(0.0, round(percent, 1)))
        new_stage = stage != self._stage
        if not new_stage and percent is not None and self._percent is not None:
            percent = max(percent, self._percent)  # never backwards within a stage
        if not new_stage and percent == self._percent:
            return
        self._stage, self._percent = stage, percent
        if new_stage:  # an event of the job's span, when tracing is on
            trace.get_current_span().add_event("livefile.stage", {"livefile.stage": stage or ""})
        if self._clock.on_write(self._loop.time()) or new_stage:
            self._checkpoint(force=True)
        else:
            self._arm_timer()

    def checkpoint(self) -> None:
        """Publish what is stored now, if anything is unpublished (a producer that pauses: a
        tus PATCH that ended), rather than at the next checkpoint."""
        self._checkpoint()

    async def flush(self) -> str:
        await self._queue.join()
        self.check_storage()
        return self.checksum

    async def complete(
        self, *, size: int | None = None, checksum: str | None = None, last: bytes = b""
    ) -> ResourceStatus:
        """End COMPLETED once everything is stored (and, when durable, on stable storage).

        ``size`` and ``checksum`` (stored form) end a resource whose bytes were not appended
        here but are composed by its reader from other resources' files (a bundle of finished
        members, ``bundle/reader.py``): nothing may have been appended to it.

        ``last``: the resource's last bytes, stored on the end's own trip to a worker thread,
        with the bytes made durable and the record written: for a short upload (a small tus
        creation-with-upload) one trip less. Beyond ``LAST_PIECE_MOST`` bytes, or for a
        resource with a line index, they are appended first as any other bytes.

        COMPLETED is recorded first, by the catalog's fenced write, and published only once it
        stands, so nobody anywhere sees COMPLETED for a resource that ends otherwise. Raises —
        the producer must not report success — when storing failed (then FAILED), when another
        process ended the resource first (its status stands), or when the end could not be
        recorded in time (``EndNotRecorded``: the resource is FAILED)."""
        if self._abandoned:
            raise ServerError("Another worker produces this resource now")
        if last and (len(last) > LAST_PIECE_MOST or self._index is not None or size is not None):
            await self.append(last)
            last = b""
        async with self._end_lock:
            return await self._complete(size=size, checksum=checksum, last=last)

    async def _complete(
        self, *, size: int | None, checksum: str | None, last: bytes
    ) -> ResourceStatus:
        self.check_stopped()
        if self.ended or self._ending:
            raise ServerError(f"The resource has already ended {self.status.transfer_status.value}")
        self._ending = True
        self._cancel_timer()
        await self._stop_writer(close=False)  # made durable with the record: one trip
        if self._write_error is not None:
            self._ending = False
            self._close_files()
            error = ResourceError(code="storage_failed", message=str(self._write_error))
            await self._fail(error)
            raise storage_error(self._write_error)
        try:
            if size is not None:
                if self._written:
                    raise ServerError("a composed resource cannot have bytes of its own")
                self._written = size
            end_trip = self._end_trip(last)
            self._stage = self._percent = None
            completed = self._next(TransferStatus.COMPLETED, None)
            standing = await self._record_end(completed, checksum or self.stored_checksum, end_trip)
            if last and self._on_stored is not None:
                self._on_stored(len(last))  # here, on the event loop, as after every append
        except EndNotRecorded as exc:
            self._settle(exc.status)
            raise
        finally:
            self._ending = False
            self._close_files()
        self._settle(standing)
        if standing.error is not None and standing.error.code == "storage_failed":
            raise ServerError(f"Storage failure: {standing.error.message}")
        if standing.transfer_status is not TransferStatus.COMPLETED:
            why = f": {standing.error.code}" if standing.error else ""
            raise ServerError(f"The resource was ended elsewhere before it completed (FAILED{why})")
        return standing

    async def fail(self, error: ResourceError) -> ResourceStatus:
        """End FAILED: published here at once, then recorded. Never raises for the catalog: a
        refused record is held and retried by the manager."""
        async with self._end_lock:
            return await self._fail(error)

    async def stop(self, error: ResourceError) -> ResourceStatus:
        """End FAILED from outside the producer (a deletion, an expiry): as ``fail``, and the
        producer hears of it through ``stopped``. A resource that has ended already keeps its
        end; its status is returned."""
        async with self._end_lock:
            status = await self._fail(error)
        if not self.stopped.done() and status.error == error:
            self.stopped.set_result(error)
        return status

    async def _fail(self, error: ResourceError) -> ResourceStatus:
        if not self.ended and not self._abandoned:
            await self._stop_writer()
            self._end(TransferStatus.FAILED, error)
            try:
                standing = await self._record_end(self.status, None, None)
            except EndNotRecorded:
                pass
            except Exception:
                logger.exception("recording the end of %s failed", self._resource_id)
            else:
                self.status = standing  # another process's end, if it came first
        return self.status

    async def abandon(self) -> None:
        """Stop at once without any status: another process produces the resource now (its
        job was taken over). Appends raise from now on; ``fail`` and ``complete`` do nothing."""
        self._abandoned = True
        self._cancel_timer()
        await self._stop_writer()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    async def release(self) -> ResourceStatus:
        """Stop writing but leave the resource unfinished, everything appended so far stored
        and published (a resumable upload whose producer goes away; ``ResourceManager.reopen``
        takes it up again)."""
        if not self.ended and not self._released:
            self._released = True
            # Durable: what is stored is what a restart finds to go on from.
            await self._stop_writer(sync=self._durable)
            self._cancel_timer()
            if self._written != self.status.current_size:
                self._set(TransferStatus.IN_PROGRESS, None)
        return self.status

    async def discard(self) -> None:
        """Stop the writer and close the files without any status: for a resource whose
        creation was refused, which nobody can watch."""
        await self._stop_writer()

    async def _stop_writer(self, sync: bool = False, close: bool = True) -> None:
        if not self._writer_task.done():
            await self._queue.put(None)
            await self._writer_task
        if sync and self._write_error is None:
            try:
                await in_file_thread(self._sync)
            except OSError as exc:
                logger.error("flushing resource %s to disk failed: %s", self._resource_id, exc)
                self._write_error = exc
        if close:
            self._close_files()

    def _end_trip(self, last: bytes) -> Callable[[], None] | None:
        """What the end's trip to a worker thread does before the record is written: store
        ``last`` (counted and hashed here, on the event loop), make the bytes durable."""
        if not last:
            return self._sync if self._durable else None
        offset = self._written
        self._digest.update(last)
        self._written += len(last)

        def store_last() -> None:
            self._append(last, offset)
            if self._durable:
                self._sync()

        return store_last

    def _close_files(self) -> None:
        self._writer.close()
        if self._index is not None:
            self._index.close()

    def _sync(self) -> None:
        self._writer.sync()
        if self._index is not None:
            self._index.sync()

    async def _drain(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                if data is None:
                    return
                await self._store(data)
            finally:
                self._queue.task_done()

    async def _store(self, data: bytes) -> None:
        if self._write_error is not None or self._abandoned:
            return  # the resource is ending, or another process writes it now
        try:
            if self._hash_with_store:
                # A CRC costs less than a second thread hop: one thread does both.
                await in_file_thread(self._append_and_hash, data, self._written)
            else:
                # Storing and hashing both release the GIL: run them side by side.
                await asyncio.gather(
                    in_file_thread(self._append, data, self._written),
                    in_file_thread(self._digest.update, data),
                )
        except OSError as exc:
            logger.error("writing resource %s failed: %s", self._resource_id, exc)
            self._write_error = exc
            if not self.storage_failed.done():
                self.storage_failed.set_result(None)
            return
        self._written += len(data)
        if self._on_stored is not None:
            self._on_stored(len(data))
        if self._clock.on_write(self._loop.time()):
            self._checkpoint()
        else:
            self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is None:
            deadline = self._clock.deadline()
            if deadline is not None:
                self._timer = self._loop.call_at(deadline, self._checkpoint)

    def _append_and_hash(self, data: bytes, offset: int) -> None:
        self._append(data, offset)
        self._digest.update(data)

    def _append(self, data: bytes, offset: int) -> None:
        self._writer.write(data)
        if self._index is not None:
            self._index.append(line_ends(data, offset))

    def _lines(self, ended: bool) -> int | None:
        if self._index is None:
            return None
        return line_count(self._index.count, self._index.last_end, self._written, ended)

    def _checkpoint(self, force: bool = False) -> None:
        self._cancel_timer()
        stopped = self._abandoned or self._released
        if self.ended or self._ending or stopped or not (self._clock.dirty or force):
            return
        self._clock.on_checkpoint(self._loop.time())
        self._set(TransferStatus.IN_PROGRESS, None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self, transfer_status: TransferStatus, error: ResourceError | None) -> None:
        self._cancel_timer()
        self._set(transfer_status, error)

    def _set(self, transfer_status: TransferStatus, error: ResourceError | None) -> None:
        self._settle(self._next(transfer_status, error))

    def _next(self, transfer_status: TransferStatus, error: ResourceError | None) -> ResourceStatus:
        """The status that follows the current one, not yet published."""
        return ResourceStatus(
            transfer_status=transfer_status,
            current_size=self._written,
            number_of_lines=self._lines(ended=transfer_status.is_terminal),
            revision=(self.status.revision or 0) + 1,
            stage=self._stage,
            percent=self._percent,
            error=error,
        )

    def _settle(self, status: ResourceStatus) -> None:
        self.status = status
        try:
            self._publish(status)
        except LivefileError:
            logger.exception("publishing the status of %s failed", self._resource_id)
