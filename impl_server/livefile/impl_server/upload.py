"""A client's upload: the thin producer that puts a WebSocket upload's policy on a ``LiveWriter``.

The policy is the upload's own — the writer knows none of it: the size quota (checked against
the bytes accepted so far, as soon as a message would pass it), UTF-8 for text with line access
(lines are served as UTF-8 strings: other bytes would turn into U+FFFD without a word), the
client's checksum compared with the server's before COMPLETED, and every other end (a dropped
connection, a refused message, a timeout) ending FAILED with the bytes received.
"""

from __future__ import annotations

import codecs

from livefile.api import close_codes
from livefile.api.errors import (
    ChecksumMismatchError,
    LivefileError,
    QuotaExceededError,
    ServerError,
)
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceMetadata,
    ResourceStatus,
)
from livefile.impl_server.writer import LiveWriter


class NotUtf8Error(LivefileError):
    """A line-access upload sent bytes that are not UTF-8; ``offset`` is the first bad byte."""

    def __init__(self, offset: int) -> None:
        super().__init__(
            f"{close_codes.NOT_UTF8_PREFIX}invalid byte at offset {offset}; line access needs"
            " UTF-8 text: give its charset (--charset)"
        )
        self.offset = offset


class UploadProducer:
    """The server side of one upload between ``ReadyForUpload`` and its terminal status."""

    def __init__(
        self,
        writer: LiveWriter,
        metadata: ResourceMetadata,
        max_size: int | None,
        resume_token: str | None = None,
        resume_token_hash: str | None = None,
    ) -> None:
        self.writer = writer
        self.metadata = metadata
        self._max_size = max_size
        # The secret handed to the uploader once (ReadyForUpload), and the hash kept of it:
        # both None for an upload that cannot be resumed (step-streaming's dialect).
        self.resume_token = resume_token
        self.resume_token_hash = resume_token_hash
        self._accepted = writer.written  # bytes taken from the client (queued or written)
        self._utf8 = (
            codecs.getincrementaldecoder("utf-8")("strict")
            if metadata.supports_line_access
            else None
        )

    def continue_text_after(self, tail: bytes) -> None:
        """Pick up UTF-8 checking after a restart: ``tail`` is the last (up to 4) bytes
        stored, which may end within a character that the next bytes complete."""
        if self._utf8 is None:
            return
        start = 0
        while start < len(tail) and tail[start] & 0xC0 == 0x80:
            start += 1  # the rest of a character that began before the tail: complete
        try:
            self._utf8.decode(tail[start:])
        except UnicodeDecodeError:
            self._utf8.reset()  # checked when it was received; nothing pending to carry on

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
        """Take one data message; raises when the upload must stop (quota, storage failure,
        ``StoppedError`` once its resource was deleted or expired)."""
        self.writer.check_stopped()
        if self.ended:
            raise ServerError(f"The upload has already ended {self.status.transfer_status.value}")
        self.writer.check_storage()
        if self._max_size is not None and self._accepted + len(data) > self._max_size:
            raise QuotaExceededError(
                f"Size {self._accepted + len(data)} exceeds the maximum resource size"
                f" {self._max_size}"
            )
        if self._utf8 is not None:
            bad = self._check_utf8(data)
            if bad is not None:
                # The valid bytes before the bad one are kept (FAILED with them, like any end).
                if (valid := bad - self._accepted) > 0:
                    self._accepted += valid
                    await self.writer.append(data[:valid])
                raise NotUtf8Error(bad)
        self._accepted += len(data)
        await self.writer.append(data)

    def _check_utf8(self, data: bytes, final: bool = False) -> int | None:
        """The offset of the first byte in the upload that is not UTF-8, if ``data`` holds it
        (or, with ``final``, if the upload ends within a character)."""
        assert self._utf8 is not None
        pending = len(self._utf8.getstate()[0])  # the start of a character cut by a message
        try:
            self._utf8.decode(data, final)
        except UnicodeDecodeError as exc:
            return self._accepted - pending + exc.start
        return None

    async def finish(self, client_checksum: str) -> ResourceStatus:
        """Store what is queued, compare the checksums, and end COMPLETED (FAILED on a
        mismatch, raising ``ChecksumMismatchError``)."""
        self.writer.check_stopped()
        if self.ended:
            raise ServerError(f"The upload has already ended {self.status.transfer_status.value}")
        if self._utf8 is not None and (bad := self._check_utf8(b"", final=True)) is not None:
            raise NotUtf8Error(bad)
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
