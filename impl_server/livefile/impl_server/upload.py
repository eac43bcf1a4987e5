"""A client's upload: the thin producer that puts a WebSocket upload's policy on a ``LiveWriter``.

The policy is the upload's own — the writer knows none of it: the size quota (checked against
the bytes accepted so far, as soon as a message would pass it), the client's checksum compared
with the server's before COMPLETED, and every other end (a dropped connection, a refused
message, a timeout) ending FAILED with the bytes received.
"""

from __future__ import annotations

from livefile.api.errors import ChecksumMismatchError, QuotaExceededError, ServerError
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceMetadata,
    ResourceStatus,
)
from livefile.impl_server.writer import LiveWriter


class UploadProducer:
    """The server side of one upload between ``ReadyForUpload`` and its terminal status."""

    def __init__(
        self, writer: LiveWriter, metadata: ResourceMetadata, max_size: int | None
    ) -> None:
        self.writer = writer
        self.metadata = metadata
        self._max_size = max_size
        self._accepted = 0  # bytes taken from the client (queued or written)

    @property
    def resource_id(self) -> str:
        return self.writer.resource_id

    @property
    def status(self) -> ResourceStatus:
        return self.writer.status

    @property
    def ended(self) -> bool:
        return self.writer.ended

    @property
    def checksum_algorithm(self) -> ChecksumAlgorithm:
        return self.writer.checksum_algorithm

    @property
    def checksum(self) -> str:
        return self.writer.checksum

    def check_storage(self) -> None:
        self.writer.check_storage()

    async def write(self, data: bytes) -> None:
        """Take one data message; raises when the upload must stop (quota, storage failure)."""
        if self.ended:
            raise ServerError(f"The upload has already ended {self.status.transfer_status.value}")
        self.writer.check_storage()
        if self._max_size is not None and self._accepted + len(data) > self._max_size:
            raise QuotaExceededError(
                f"Size {self._accepted + len(data)} exceeds the maximum resource size"
                f" {self._max_size}"
            )
        self._accepted += len(data)
        await self.writer.append(data)

    async def finish(self, client_checksum: str) -> ResourceStatus:
        """Store what is queued, compare the checksums, and end COMPLETED (FAILED on a
        mismatch, raising ``ChecksumMismatchError``)."""
        if self.ended:
            raise ServerError(f"The upload has already ended {self.status.transfer_status.value}")
        try:
            checksum = await self.writer.flush()
        except ServerError as exc:
            await self.writer.fail(ResourceError(code="storage_failed", message=str(exc)))
            raise
        if client_checksum.lower() != checksum:
            # Fits a close frame (123 bytes): 40 hex digits of each side (all of an MD5 or a
            # CRC-32) are what the client needs to know.
            reason = f"Checksum mismatch: client={client_checksum[:40]} server={checksum[:40]}"
            await self.writer.fail(ResourceError(code="checksum_mismatch", message=reason))
            raise ChecksumMismatchError(reason)
        return await self.writer.complete()

    async def fail(self, error: ResourceError) -> ResourceStatus:
        """End FAILED, keeping every byte received so far (what is queued is written first)."""
        return await self.writer.fail(error)
