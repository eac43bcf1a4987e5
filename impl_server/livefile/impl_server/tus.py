"""tus uploads as live resources: the producer behind the tus 1.0 endpoint (and the IETF draft).

A tus upload is one more producer on the writer seam: its creation makes a resource (watchers
follow it at once, like any upload), each PATCH appends through the resource's ``LiveWriter``,
and the upload ends COMPLETED when its declared length is reached. A creation whose body is the
whole upload, up to ``WHOLE_MOST`` bytes, is stored and completed in one go instead
(``create_whole``: nobody can watch an upload before its creation is answered). Between
PATCHes it stays IN_PROGRESS; it outlives a dropped connection and a restart of the server
(recovery keeps it, ``ResourceManager.reopen`` takes its writer up again at its stored size)
until it expires, then it ends FAILED with ``expired``.

What tus adds to a resource — its declared length, its expiry, its raw ``Upload-Metadata``, its
part in a concatenation — is kept in the record beside its bytes (key ``tus``), so any process
that can read the data directory can answer for it. The offset is the stored size.

With the checksum extension a PATCH's bytes are staged in a file (memory stays bounded whatever
the PATCH's size) and appended — so published — only once their checksum matched; a mismatch
discards them (460). Without it, bytes are appended as they arrive and whatever arrived before a
dropped connection is kept, as the protocol asks.

A final upload of a concatenation follows its parts in order as they are published, so it is
readable while they are still being uploaded.

The HTTP side (headers, status codes) is ``livefile.impl_websocket.tus_api``; this module knows
no HTTP beyond the status code a refusal maps to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livefile.api.errors import LivefileError, ResourceFailedError, ServerError
from livefile.api.interfaces import CatalogEntry
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceMetadata,
    ResourceStatus,
    TransferStatus,
)
from livefile.impl_common.checksums import Digest, new_digest
from livefile.impl_server.file_threads import in_file_thread
from livefile.impl_server.manager import KEEP, Keep, ResourceHeldError, ResourceManager
from livefile.impl_server.writer import LiveWriter

logger = logging.getLogger(__name__)

RECORD_KEY = "tus"
PARTIAL = "partial"
FINAL = "final"
STAGE_PIECE = 1024 * 1024  # bytes read back from a staged PATCH per append
COALESCE_MOST = 1024 * 1024  # bytes of body pieces joined into one append
BODY_QUEUE = 16  # body pieces read ahead of the appends
# The most bytes a creation-with-upload may carry to be stored in one go (``create_whole``):
# read whole into memory before anything is created.
WHOLE_MOST = 64 * 1024
LOCK_WAIT = 10.0  # seconds a request waits for the PATCH holding its upload to end

EXPIRED = ResourceError(code="expired", message="the tus upload was not finished before it expired")
TERMINATED = ResourceError(code="terminated", message="the tus client terminated the upload")


def _crc32c() -> Digest:
    return new_digest(ChecksumAlgorithm.CRC32C)


# The checksum extension's algorithms (``Tus-Checksum-Algorithm``); sha1 is the mandatory one.
CHECKSUMS: dict[str, Callable[[], Digest]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "crc32c": _crc32c,
}


class TusError(LivefileError):
    """A tus request refused: ``status`` is the HTTP status the protocol gives it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyInterrupted(Exception):
    """The client's connection ended before the request body did."""


@dataclass
class TusState:
    """What tus adds to a resource, kept in its record under ``tus``."""

    length: int | None  # None: deferred (creation-defer-length) or an unfinished final
    expires_at: float  # epoch seconds
    metadata: str = ""  # the raw Upload-Metadata, echoed by HEAD
    concat: str | None = None  # PARTIAL, FINAL or None
    parts: tuple[str, ...] = ()  # a final upload's partial uploads, in order

    def to_json(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "expiresAt": self.expires_at,
            "metadata": self.metadata,
            "concat": self.concat,
            "parts": list(self.parts),
        }

    @classmethod
    def from_json(cls, raw: Any) -> TusState | None:
        if not isinstance(raw, dict):
            return None
        try:
            length = raw.get("length")
            return cls(
                length=None if length is None else int(length),
                expires_at=float(raw["expiresAt"]),
                metadata=str(raw.get("metadata") or ""),
                concat=raw.get("concat"),
                parts=tuple(str(part) for part in raw.get("parts") or ()),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class TusUpload:
    """An upload as HEAD describes it."""

    resource_id: str
    state: TusState
    offset: int
    status: ResourceStatus
    context_id: str | None

    @property
    def complete(self) -> bool:
        return self.status.transfer_status is TransferStatus.COMPLETED


@dataclass
class _Open:
    """An upload whose writer this process holds."""

    writer: LiveWriter
    state: TusState
    context_id: str | None
    task: asyncio.Task[None] | None = None  # a final upload's concatenation


class TusUploads:
    """The tus uploads of one server process."""

    def __init__(
        self,
        manager: ResourceManager,
        expiry: float,
        staging_dir: Path,
        clock: Callable[[], float] = time.time,
        *,
        shared: bool = False,
    ) -> None:
        self._manager = manager
        # Several processes serve the uploads (Redis): a writer is let go after each request,
        # so the next PATCH may land on any process, which takes the upload over
        # (``ResourceManager.reopen``: the lease is the lock between processes).
        self._shared = shared
        self._expiry = expiry
        self._staging_dir = staging_dir
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        if not shared:
            # Checksummed PATCHes a killed process left staged: this process alone uses them.
            shutil.rmtree(staging_dir, ignore_errors=True)
        manager.add_recovery_policy(self._recovery)

    @property
    def max_size(self) -> int | None:
        return self._manager.quotas.max_resource_size

    # --- creation ---------------------------------------------------------------------------

    async def create(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        length: int | None,
        raw_metadata: str,
        partial: bool = False,
    ) -> TusUpload:
        """A new upload of ``length`` bytes (None: deferred); empty ones complete at once."""
        self._check_length(length)
        state = TusState(length, self._expires_at(), raw_metadata, PARTIAL if partial else None)
        upload = await self._open_new(metadata, context_id, state)
        if length == 0:
            await self._complete(upload)
        described = self._describe_open(upload.writer.resource_id, upload)
        await self._let_go(upload)
        return described

    async def create_whole(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        data: bytes,
        raw_metadata: str,
        *,
        checksum: tuple[str, bytes] | None = None,
        partial: bool = False,
    ) -> TusUpload:
        """A new upload whose creation carries all of its bytes (a small creation-with-upload,
        up to ``WHOLE_MOST``): checked against ``checksum`` (460: nothing is created), then
        stored and COMPLETED in one go (``ResourceManager.store_upload``)."""
        self._check_length(len(data))
        if checksum is not None:
            digest = CHECKSUMS[checksum[0]]()
            digest.update(data)
            _check_digest(digest, checksum, "the upload")
        state = TusState(len(data), self._expires_at(), raw_metadata, PARTIAL if partial else None)
        resource_id, status = await self._manager.store_upload(
            metadata,
            context_id,
            data,
            ChecksumAlgorithm.CRC32C,
            record={RECORD_KEY: state.to_json()},
        )
        return TusUpload(resource_id, state, status.current_size, status, context_id)

    async def create_final(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        parts: list[TusUpload],
        raw_metadata: str,
    ) -> TusUpload:
        """The final upload of a concatenation: its bytes are those of ``parts``, in order, taken
        as they are published (the parts may still be uploading)."""
        for part in parts:
            if part.state.concat != PARTIAL:
                raise TusError(400, f"upload {part.resource_id} is not a partial upload")
            if part.status.transfer_status is TransferStatus.FAILED:
                raise TusError(400, f"partial upload {part.resource_id} has FAILED")
        lengths = [part.state.length for part in parts]
        length = None if None in lengths else sum(n for n in lengths if n is not None)
        self._check_length(length)
        ids = tuple(part.resource_id for part in parts)
        state = TusState(length, self._expires_at(), raw_metadata, FINAL, ids)
        upload = await self._open_new(metadata, context_id, state)
        self._start_concatenation(upload)
        return self._describe_open(upload.writer.resource_id, upload)

    def _check_length(self, length: int | None) -> None:
        if length is not None and self.max_size is not None and length > self.max_size:
            raise TusError(413, f"Upload-Length {length} is above the limit of {self.max_size}")

    async def _open_new(
        self, metadata: ResourceMetadata, context_id: str | None, state: TusState
    ) -> _Open:
        """Create the upload's resource, ``state`` in its record from the start, and hold it."""
        producer = await self._manager.create_upload(
            metadata,
            context_id,
            checksum_algorithm=ChecksumAlgorithm.CRC32C,
            record={RECORD_KEY: state.to_json()},
        )
        writer = producer.writer
        upload = _Open(writer, state, context_id)
        self._open[writer.resource_id] = upload
        self._arm_expiry(writer.resource_id, state.expires_at)
        return upload

    # --- HEAD -------------------------------------------------------------------------------

    async def describe(self, resource_id: str) -> TusUpload:
        """The upload's offset and state; TusError 404 when there is no such tus upload, 410
        when it ended FAILED (terminated, expired). Waits for a running PATCH to end (so a
        client resuming after a dropped connection learns the offset its bytes reached)."""
        with contextlib.suppress(TusError):  # 423: answer with the offset reached so far
            async with self._locked(resource_id):
                pass
        return await self._find(resource_id)

    async def _find(self, resource_id: str) -> TusUpload:
        upload = self._open.get(resource_id)
        if upload is not None and not upload.writer.ended:
            return self._describe_open(resource_id, upload)
        entry = await self._manager.entry(resource_id)
        record = (
            await in_file_thread(self._manager.storage.read_meta, resource_id)
            if entry is not None
            else None
        )
        state = TusState.from_json(record.get(RECORD_KEY)) if record else None
        if entry is None or state is None:
            raise TusError(404, "No tus upload with that id")
        status = await self._manager.status(resource_id) or entry.status
        if status.transfer_status is TransferStatus.FAILED:
            why = status.error.code if status.error else "failed"
            raise TusError(410, f"The upload has ended FAILED ({why})")
        if status.is_terminal:
            offset = status.current_size
        else:
            offset = await in_file_thread(self._manager.storage.size, resource_id)
        return TusUpload(resource_id, state, offset, status, entry.upload_context_id)

    def _describe_open(self, resource_id: str, upload: _Open) -> TusUpload:
        writer = upload.writer
        return TusUpload(
            resource_id, upload.state, writer.written, writer.status, upload.context_id
        )

    # --- PATCH ------------------------------------------------------------------------------

    async def write(
        self,
        resource_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        checksum: tuple[str, bytes] | None = None,
        length: int | None = None,
        last: bool = False,
        size: int | None = None,
    ) -> TusUpload:
        """Append ``body`` (``size`` bytes, when its request says) at ``offset`` (409 unless it
        is the upload's offset). ``checksum``:
        the algorithm and digest the body must have (460 if not: nothing appended). ``length``:
        a deferred length declared now. ``last``: this body ends the upload (the IETF draft's
        ``Upload-Complete: ?1``). The upload completes when its length is reached. Raises
        ``BodyInterrupted`` when the client went away (what arrived is kept, unless checked)."""
        async with self._locked(resource_id):
            upload = await self._writable(resource_id)
            if upload.state.concat == FINAL:
                raise TusError(403, "The final upload of a concatenation cannot be patched")
            writer = upload.writer
            if offset != writer.written:
                raise TusError(409, f"Upload-Offset {offset} is not the offset {writer.written}")
            if length is not None:
                await self._declare_length(upload, length)
            limit = upload.state.length if upload.state.length is not None else self.max_size
            if limit is not None and size is not None and offset + size > limit:
                # Refused before a byte is read: the body says how long it is.
                raise TusError(413, f"The body reaches past the upload's length ({limit})")
            held = b""
            try:
                if checksum is None:
                    held = await self._append(writer, body, limit, upload.state.length)
                else:
                    await self._append_checked(writer, body, limit, checksum)
            except BaseException:
                await writer.flush()
                await self._settle(upload)  # what was stored stays (resumable, or complete)
                await self._let_go(upload)
                raise
            if held:  # the body reached the upload's length
                await self._complete(upload, last=held)  # stored on the end's own trip
            else:
                await writer.flush()
                if last:
                    await self._declare_length(upload, writer.written)
                await self._settle(upload)
            described = self._describe_open(resource_id, upload)
            await self._let_go(upload)
            return described

    async def _settle(self, upload: _Open) -> None:
        """After a body: complete the upload if its length is reached, else publish its size
        (watchers and readers see the offset HEAD answers) and push its expiry back."""
        if upload.state.length is not None and upload.writer.written == upload.state.length:
            await self._complete(upload)
        else:
            upload.writer.checkpoint()
            await self._renew(upload)

    async def _let_go(self, upload: _Open) -> None:
        """With several processes, release the writer of an unfinished upload after a request
        (any process may take the next one)."""
        if self._shared and not upload.writer.ended and upload.state.concat != FINAL:
            self._open.pop(upload.writer.resource_id, None)
            await self._manager.release(upload.writer)

    async def _renew(self, upload: _Open) -> None:
        """Push the upload's expiry back after a PATCH."""
        upload.state.expires_at = self._expires_at()
        self._arm_expiry(upload.writer.resource_id, upload.state.expires_at)
        await self._save_state(upload.writer.resource_id, upload.state)

    async def _writable(self, resource_id: str) -> _Open:
        """The open upload, reopened if this process does not hold it (after a restart)."""
        upload = self._open.get(resource_id)
        if upload is None:
            found = await self._find(resource_id)
            if found.complete:
                raise TusError(409, "The upload is complete already")
            try:
                writer = await self._manager.reopen(resource_id, ChecksumAlgorithm.CRC32C)
            except ResourceHeldError:
                raise TusError(423, "Another process is writing this upload; retry") from None
            except ServerError as exc:
                raise TusError(409, str(exc)) from None
            upload = _Open(writer, found.state, found.context_id)
            self._open[resource_id] = upload
        if upload.writer.ended:
            raise TusError(410, "The upload has ended")
        return upload

    async def _declare_length(self, upload: _Open, length: int) -> None:
        if upload.state.length is not None and upload.state.length != length:
            raise TusError(400, f"Upload-Length is {upload.state.length} already, not {length}")
        if length < upload.writer.written:
            raise TusError(400, f"Upload-Length {length} is below the offset")
        self._check_length(length)
        if upload.state.length is None:
            upload.state.length = length
            await self._save_state(upload.writer.resource_id, upload.state)

    async def _append(
        self,
        writer: LiveWriter,
        body: AsyncIterator[bytes],
        limit: int | None,
        length: int | None,
    ) -> bytes:
        """Append ``body`` as it arrives, but for the piece that reaches the upload's
        ``length``, which is returned (the caller ends the upload with it: nothing may follow
        it)."""
        # The writer's size lags behind the pieces queued for it: count what was taken here.
        taken = writer.written
        held = b""
        try:
            async for piece in coalesced(body, COALESCE_MOST):
                if limit is not None and taken + len(piece) > limit:
                    # Nothing of a piece reaching past the end is taken (a client bug, or a lie).
                    raise TusError(413, f"The body reaches past the upload's length ({limit})")
                taken += len(piece)
                if taken == length:
                    held = piece  # the last one: stored with the upload's end
                else:
                    await writer.append(piece)  # at once: watchers follow the upload live
        except BaseException:
            if held:
                await writer.append(held)  # what arrived is kept
            raise
        return held

    async def _append_checked(
        self,
        writer: LiveWriter,
        body: AsyncIterator[bytes],
        limit: int | None,
        checksum: tuple[str, bytes],
    ) -> None:
        digest = CHECKSUMS[checksum[0]]()
        self._staging_dir.mkdir(parents=True, exist_ok=True)
        name = f"{writer.resource_id}.{os.getpid()}-{secrets.token_hex(4)}.patch"
        staged = self._staging_dir / name
        try:
            with staged.open("w+b") as stage:
                size = 0
                async for piece in body:
                    size += len(piece)
                    if limit is not None and writer.written + size > limit:
                        raise TusError(413, f"The body reaches past the upload's length ({limit})")
                    await in_file_thread(_stage, stage, digest, piece)
                _check_digest(digest, checksum, "the PATCH")
                stage.seek(0)
                while piece := await in_file_thread(stage.read, STAGE_PIECE):
                    await writer.append(piece)
        finally:
            staged.unlink(missing_ok=True)

    async def _complete(self, upload: _Open, last: bytes = b"") -> None:
        resource_id = upload.writer.resource_id
        self._cancel_expiry(resource_id)
        try:
            await upload.writer.complete(last=last)
        finally:
            self._forget(resource_id)

    # --- DELETE -----------------------------------------------------------------------------

    async def terminate(self, resource_id: str) -> None:
        """End the upload FAILED (``terminated``); its bytes so far stay readable."""
        async with self._locked(resource_id):
            found = await self._find(resource_id)
            if found.status.is_terminal:
                raise TusError(410, f"The upload has ended {found.status.transfer_status.value}")
            upload = await self._writable(resource_id)
            await self._fail(upload, TERMINATED)

    async def _fail(self, upload: _Open, error: ResourceError) -> None:
        resource_id = upload.writer.resource_id
        if upload.task is not None and upload.task is not asyncio.current_task():
            upload.task.cancel()
        await upload.writer.fail(error)
        self._forget(resource_id)

    def _forget(self, resource_id: str) -> None:
        self._open.pop(resource_id, None)
        self._cancel_expiry(resource_id)

    # --- concatenation ----------------------------------------------------------------------

    def _start_concatenation(self, upload: _Open) -> None:
        task = asyncio.create_task(
            self._concatenate(upload), name=f"tus-concat-{upload.writer.resource_id}"
        )
        upload.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _concatenate(self, upload: _Open) -> None:
        """Append the parts' bytes in order as they are published, skipping those the final
        upload holds already (one taken up again after a restart)."""
        writer = upload.writer
        skip = writer.written
        try:
            for part_id in upload.state.parts:
                reader = await self._manager.reader(part_id)
                if reader is None:
                    raise ResourceFailedError(f"partial upload {part_id} is gone")
                if skip:
                    size = (await reader.wait_for(lambda _: False)).current_size
                    if skip >= size:
                        skip -= size
                        continue
                async for piece in reader.follow(skip):
                    await writer.append(piece)
                skip = 0
            await writer.flush()
            if upload.state.length is None:
                upload.state.length = writer.written
                await self._save_state(writer.resource_id, upload.state)
            await self._complete(upload)
        except ResourceFailedError as exc:
            await self._fail(upload, ResourceError(code="part_failed", message=str(exc)))
        except LivefileError as exc:
            logger.warning("concatenating %s failed: %s", writer.resource_id, exc)
            await self._fail(upload, ResourceError(code="storage_failed", message=str(exc)))

    # --- expiry and recovery ----------------------------------------------------------------

    def _expires_at(self) -> float:
        return self._clock() + self._expiry

    def _arm_expiry(self, resource_id: str, expires_at: float) -> None:
        self._cancel_expiry(resource_id)
        loop = asyncio.get_running_loop()
        delay = max(0.0, expires_at - self._clock())
        self._timers[resource_id] = loop.call_later(delay, self._expire_soon, resource_id)

    def _cancel_expiry(self, resource_id: str) -> None:
        timer = self._timers.pop(resource_id, None)
        if timer is not None:
            timer.cancel()

    def _expire_soon(self, resource_id: str) -> None:
        self._timers.pop(resource_id, None)
        task = asyncio.create_task(self._expire(resource_id), name=f"tus-expire-{resource_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, resource_id: str) -> None:
        if self._lock(resource_id).locked():
            return  # a PATCH is running: it renews the expiry when it ends
        async with self._locked(resource_id):
            try:
                found = await self._find(resource_id)
                if found.status.is_terminal:
                    return
                if found.state.expires_at > self._clock():
                    self._arm_expiry(resource_id, found.state.expires_at)  # renewed elsewhere
                    return
                await self._fail(await self._writable(resource_id), EXPIRED)
                logger.info("tus upload %s expired at %d bytes", resource_id, found.offset)
            except (TusError, ServerError) as exc:
                logger.warning("expiring tus upload %s: %s", resource_id, exc)

    async def _recovery(self, entry: CatalogEntry) -> Keep | ResourceError | None:
        """Recovery takes an unfinished tus upload up again until it expires: its writer is
        reopened at once, so its status says truthfully IN_PROGRESS with the stored size (what
        HEAD answers) and watchers can read those bytes; a final upload's concatenation goes on."""
        record = await in_file_thread(self._manager.storage.read_meta, entry.resource_id)
        state = TusState.from_json(record.get(RECORD_KEY)) if record else None
        if state is None:
            return None
        if state.expires_at <= self._clock():
            return EXPIRED
        if self._shared and state.concat != FINAL:
            return KEEP  # idle between PATCHes: its lease is missing on purpose
        if entry.resource_id not in self._open:
            try:
                writer = await self._manager.reopen(entry.resource_id, ChecksumAlgorithm.CRC32C)
            except ServerError as exc:
                logger.warning("tus upload %s cannot be taken up: %s", entry.resource_id, exc)
                return None
            upload = _Open(writer, state, entry.upload_context_id)
            self._open[entry.resource_id] = upload
            self._arm_expiry(entry.resource_id, state.expires_at)
            if state.concat == FINAL:
                self._start_concatenation(upload)
            logger.info("tus upload %s resumable at %d bytes", entry.resource_id, writer.written)
        return KEEP

    # --- state and shutdown -----------------------------------------------------------------

    async def _save_state(self, resource_id: str, state: TusState) -> None:
        storage = self._manager.storage

        def save() -> None:
            record = storage.read_meta(resource_id)
            if record is None:
                raise OSError(f"the record of {resource_id} is missing")
            record[RECORD_KEY] = state.to_json()
            # Not fsync'd, like the record at creation: it survives the server process (page
            # cache), and nothing is acknowledged as durable before the upload completes.
            storage.write_meta(resource_id, record, False)

        await in_file_thread(save)

    def _lock(self, resource_id: str) -> asyncio.Lock:
        return self._locks.setdefault(resource_id, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _locked(self, resource_id: str) -> AsyncIterator[None]:
        """Hold the upload's lock (423 when the request holding it does not end in time)."""
        lock = self._lock(resource_id)
        try:
            async with asyncio.timeout(LOCK_WAIT):
                await lock.acquire()
        except TimeoutError:
            raise TusError(423, "Another request is writing this upload; retry later") from None
        try:
            yield
        finally:
            lock.release()
            if resource_id not in self._open and not lock.locked():
                self._locks.pop(resource_id, None)  # ended (or never ours): forget its lock

    async def close(self) -> None:
        """Leave every unfinished upload resumable: writers released, not failed."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for resource_id, upload in list(self._open.items()):
            if not upload.writer.ended:
                await self._manager.release(upload.writer)
            self._open.pop(resource_id, None)


async def coalesced(body: AsyncIterator[bytes], most: int) -> AsyncIterator[bytes]:
    """The pieces of ``body`` joined up to ``most`` bytes from what has arrived already.

    The server hands a request body on in socket-read pieces (64 KiB or so), and each append
    costs a hop to a worker thread: joining the pieces that wait saves most of those hops on a
    fast body. It never waits for more to join, so a quiet client's bytes are appended (and
    published) at once. A task reads the body ahead into a small bounded queue; the body's end
    is an empty piece, its failure (``BodyInterrupted``) the exception itself."""
    queue: asyncio.Queue[bytes | Exception] = asyncio.Queue(BODY_QUEUE)

    async def read_ahead() -> None:
        try:
            async for piece in body:
                if piece:
                    await queue.put(piece)
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put(exc)
        else:
            await queue.put(b"")

    reader = asyncio.create_task(read_ahead())
    try:
        pending: bytes | Exception | None = None
        while True:
            item = pending if pending is not None else await queue.get()
            pending = None
            if isinstance(item, Exception):
                raise item
            if not item:
                return
            pieces, size = [item], len(item)
            while size < most and not queue.empty():
                following = queue.get_nowait()
                if isinstance(following, Exception) or not following:
                    pending = following  # the end or a failure: after these bytes
                    break
                pieces.append(following)
                size += len(following)
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _check_digest(digest: Digest, checksum: tuple[str, bytes], what: str) -> None:
    """460 unless ``digest`` is the ``Upload-Checksum`` given (algorithm, expected digest)."""
    algorithm, expected = checksum
    if bytes.fromhex(digest.hexdigest()) != expected:
        raise TusError(460, f"Checksum mismatch ({algorithm}): {what} was discarded")


def _stage(stage: Any, digest: Digest, piece: bytes) -> None:
    stage.write(piece)
    digest.update(piece)
