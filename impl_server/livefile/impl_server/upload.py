"""One running upload: ordered appends off the event loop, the MD5, the line index, checkpoints.

Data messages go into a small bounded queue; a writer task appends and hashes them in worker
threads (both release the GIL), so receiving the next message overlaps storing the last one, and
memory stays bounded (queue depth times message size). For text resources the same thread that
appends the bytes appends their line ends to the index, so a checkpoint never publishes a size
or a line count that a reader cannot read yet. After each append the checkpoint clock decides
whether to publish now; otherwise a timer publishes within one interval, so a quiet uploader's
last bytes are never held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livefile.api.errors import (
    ChecksumMismatchError,
    LivefileError,
    QuotaExceededError,
    ServerError,
)
from livefile.api.interfaces import StorageWriter
from livefile.api.model import ChecksumAlgorithm, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_common.checkpoint import CheckpointClock
from livefile.impl_common.checksums import cheaper_than_a_thread_hop, new_digest, stored_form
from livefile.impl_common.lines import line_count, line_ends
from livefile.impl_server.line_index import LineIndexWriter
from livefile.impl_server.storage import storage_error

logger = logging.getLogger(__name__)

QUEUE_DEPTH = 4
Publish = Callable[[ResourceStatus], None]


class ActiveUpload:
    """The server side of one upload between ``ReadyForUpload`` and its terminal status."""

    def __init__(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        writer: StorageWriter,
        index: LineIndexWriter | None,
        checkpoint_interval: float,
        max_size: int | None,
        publish: Publish,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5,
    ) -> None:
        self.resource_id = resource_id
        self.metadata = metadata
        self.status = ResourceStatus(
            transfer_status=TransferStatus.INITIATED,
            current_size=0,
            number_of_lines=0 if index is not None else None,
        )
        self._writer = writer
        self._index = index
        self._clock = CheckpointClock(checkpoint_interval)
        self._max_size = max_size
        self._publish = publish
        self.checksum_algorithm = checksum_algorithm
        self._digest = new_digest(checksum_algorithm)
        self._hash_with_store = cheaper_than_a_thread_hop(checksum_algorithm)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_DEPTH)
        self._accepted = 0  # bytes taken from the client (queued or written)
        self._written = 0  # bytes appended to storage: the most a checkpoint may publish
        self._write_error: OSError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        # Done when storing failed: the session stops waiting for the client's next message,
        # so an uploader that has gone quiet still learns of it at once (see ``check_storage``).
        self.storage_failed: asyncio.Future[None] = self._loop.create_future()
        self._writer_task = asyncio.create_task(self._drain(), name=f"upload-{resource_id}")

    @property
    def ended(self) -> bool:
        return self.status.is_terminal

    @property
    def checksum(self) -> str:
        """The hex digest of the bytes so far, in the uploader's checksum algorithm."""
        return self._digest.hexdigest()

    @property
    def stored_checksum(self) -> str:
        """The checksum as the catalog keeps it: ``<hex>`` for MD5, else ``<algorithm>:<hex>``."""
        return stored_form(self.checksum_algorithm, self.checksum)

    async def write(self, data: bytes) -> None:
        """Take one data message; raises when the upload must stop (quota, storage failure)."""
        if self.ended:
            raise ServerError(f"The upload has already ended {self.status.transfer_status.value}")
        self.check_storage()
        if self._max_size is not None and self._accepted + len(data) > self._max_size:
            raise QuotaExceededError(
                f"Size {self._accepted + len(data)} exceeds the maximum resource size"
                f" {self._max_size}"
            )
        if not data:
            return
        self._accepted += len(data)
        await self._queue.put(data)

    def check_storage(self) -> None:
        """Raise the storage failure (a ``ServerError`` naming a full disk as such), if any."""
        if self._write_error is not None:
            raise storage_error(self._write_error)

    async def finish(self, client_checksum: str) -> ResourceStatus:
        """Write what is queued, check the checksum, and end COMPLETED (or FAILED on mismatch)."""
        if self.ended:
            raise ServerError(f"The upload has already ended {self.status.transfer_status.value}")
        await self._stop_writer()
        if self._write_error is not None:
            await self.fail()
            raise storage_error(self._write_error)
        checksum = self._digest.hexdigest()
        if client_checksum.lower() != checksum:
            await self.fail()
            # Fits a close frame (123 bytes): 40 hex digits of each side (all of an MD5 or a
            # CRC-32) are what the client needs to know.
            raise ChecksumMismatchError(
                f"Checksum mismatch: client={client_checksum[:40]} server={checksum[:40]}"
            )
        self._end(TransferStatus.COMPLETED)
        return self.status

    async def fail(self) -> ResourceStatus:
        """End FAILED, keeping every byte received so far (what is queued is written first)."""
        if not self.ended:
            await self._stop_writer()
            self._end(TransferStatus.FAILED)
        return self.status

    async def discard(self) -> None:
        """Stop the writer and close the files without any status: for a resource whose
        creation was refused, which nobody can watch."""
        await self._stop_writer()

    async def _stop_writer(self) -> None:
        if not self._writer_task.done():
            await self._queue.put(None)
            await self._writer_task
        self._writer.close()
        if self._index is not None:
            self._index.close()

    async def _drain(self) -> None:
        while (data := await self._queue.get()) is not None:
            if self._write_error is not None:
                continue  # the upload is stopping; nothing more can be stored
            try:
                if self._hash_with_store:
                    # A CRC costs less than a second thread hop: one thread does both.
                    await asyncio.to_thread(self._store_and_hash, data, self._written)
                else:
                    # Storing and hashing both release the GIL: run them side by side.
                    await asyncio.gather(
                        asyncio.to_thread(self._store, data, self._written),
                        asyncio.to_thread(self._digest.update, data),
                    )
            except OSError as exc:
                logger.error("writing resource %s failed: %s", self.resource_id, exc)
                self._write_error = exc
                if not self.storage_failed.done():
                    self.storage_failed.set_result(None)
                continue
            self._written += len(data)
            if self._clock.on_write(self._loop.time()):
                self._checkpoint()
            elif self._timer is None:
                deadline = self._clock.deadline()
                if deadline is not None:
                    self._timer = self._loop.call_at(deadline, self._checkpoint)

    def _store_and_hash(self, data: bytes, offset: int) -> None:
        self._store(data, offset)
        self._digest.update(data)

    def _store(self, data: bytes, offset: int) -> None:
        self._writer.write(data)
        if self._index is not None:
            self._index.append(line_ends(data, offset))

    def _lines(self, ended: bool) -> int | None:
        if self._index is None:
            return None
        return line_count(self._index.count, self._index.last_end, self._written, ended)

    def _checkpoint(self) -> None:
        self._timer = None
        if self.ended or not self._clock.dirty:
            return
        self._clock.on_checkpoint(self._loop.time())
        self._set(
            ResourceStatus(
                transfer_status=TransferStatus.IN_PROGRESS,
                current_size=self._written,
                number_of_lines=self._lines(ended=False),
            )
        )

    def _end(self, transfer_status: TransferStatus) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._set(
            ResourceStatus(
                transfer_status=transfer_status,
                current_size=self._written,
                number_of_lines=self._lines(ended=True),
            )
        )

    def _set(self, status: ResourceStatus) -> None:
        self.status = status
        try:
            self._publish(status)
        except LivefileError:
            logger.exception("publishing the status of %s failed", self.resource_id)
