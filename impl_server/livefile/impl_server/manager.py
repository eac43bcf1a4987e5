"""The resource manager: creates resources and hands out their writer, and their readers.

It is assembled from a storage, a catalog and a status bus (see ``livefile.api.interfaces``).
Every producer gets a ``LiveWriter`` from ``create_resource`` (a WebSocket upload gets one
wrapped in its ``UploadProducer`` from ``create_upload``); every consumer gets a ``Reader`` from
``reader``. The live status of a resource this process produces is held here; the catalog holds
the durable one. A terminal status the catalog refused (its disk is full, Redis is away) is held
here too, served as the current status and written again every ``RECORD_RETRY_INTERVAL`` until
the catalog takes it, so no reader ever sees an ended resource as still running. Only FAILED is
ever held: a COMPLETED the catalog did not take in time becomes FAILED (``unrecorded``), since
its uploader is told of a failure.

Beside each resource's bytes, its record (``resource_record.py``) is kept up to date — at
creation, and with the terminal status before anyone is told of it — so a catalog that lost the
entry (Redis restarted empty) gets it back from the shared volume (``entry``, lease renewal).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time

from livefile.api.errors import PolicyViolationError, QuotaExceededError, ServerError
from livefile.api.interfaces import (
    Catalog,
    CatalogEntry,
    StatusBus,
    StatusSubscription,
    Storage,
    StorageWriter,
)
from livefile.api.model import (
    ChecksumAlgorithm,
    DerivedResource,
    ResourceError,
    ResourceInfo,
    ResourceKind,
    ResourceMetadata,
    ResourceStatus,
    TransferStatus,
    is_valid_id,
    new_resource_id,
)
from livefile.impl_common.checksums import new_digest, parse_stored
from livefile.impl_common.lru import LruCache
from livefile.impl_server.contexts import UnknownContextError, UploadContexts, context_refusal
from livefile.impl_server.line_index import LineIndexWriter, final_line_count
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.reader import Reader
from livefile.impl_server.resource_record import entry_of, record_of
from livefile.impl_server.resumable_uploads import ResumableUploads, new_resume_token
from livefile.impl_server.storage import storage_error
from livefile.impl_server.upload import UploadProducer
from livefile.impl_server.writer import EndNotRecorded, LiveWriter, ResumePoint

logger = logging.getLogger(__name__)
FINISHED_ENTRIES_CACHED = 10_000  # about 1 KiB each
# Why a resource left unfinished by a process that ended is FAILED.
INTERRUPTED = ResourceError(
    code="interrupted", message="the server process producing it ended before it was finished"
)
# The same for a resource the server produced itself (a repack): its job's worker is gone.
WORKER_LOST = ResourceError(
    code="worker_lost", message="the worker running its job ended before it was finished"
)

# What a COMPLETED becomes when the catalog could not record it in time: its uploader hears a
# failure, so the resource must never turn COMPLETED later.
UNRECORDED = ResourceError(
    code="unrecorded",
    message="the shared catalog could not record the completion in time; the upload was refused",
)

RECORD_RETRY_INTERVAL = 1.0  # seconds between attempts to record a refused terminal status
REOPEN_READ_SIZE = 4 * 1024 * 1024  # bytes read at a time to recompute a reopened digest


class CatalogUnavailableError(ServerError):
    """The catalog cannot be reached and this process knows no status to serve instead."""


def _failed_after(status: ResourceStatus, error: ResourceError) -> ResourceStatus:
    return status.model_copy(
        update={
            "transfer_status": TransferStatus.FAILED,
            "revision": (status.revision or 0) + 1,
            "error": error,
        }
    )


class ResourceManager:
    def __init__(
        self,
        storage: Storage,
        catalog: Catalog,
        bus: StatusBus,
        contexts: UploadContexts,
        quotas: Quotas,
        checkpoint_interval: float,
        durable: bool = True,
        resume_grace: float = 0.0,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.bus = bus
        self.contexts = contexts
        self.quotas = quotas
        self.checkpoint_interval = checkpoint_interval
        # Acknowledged means durable: bytes, line index, record and catalog entry reach stable
        # storage before COMPLETED is told (off for scratch data, e.g. on tmpfs).
        self.durable = durable
        self._active: dict[str, LiveWriter] = {}
        self._context_of: dict[str, str] = {}
        # Terminal statuses (FAILED only) the catalog has refused so far, by resource id, with
        # whether they were a reaper's (fenced by the owner's lease when retried).
        self._unrecorded: dict[str, tuple[ResourceStatus, str | None, bool]] = {}
        # Entries of finished resources, most recently used last.
        self._finished: LruCache[str, CatalogEntry] = LruCache(FINISHED_ENTRIES_CACHED)
        self._recorder: asyncio.Task[None] | None = None
        # WebSocket uploads whose client may come back (``resume_grace`` seconds after its
        # connection was lost; 0: never, they fail at once).
        self.resumable = ResumableUploads(resume_grace, self._record_waiting)

    async def recover(self, resumable: bool = False) -> int:
        """Mark uploads left unfinished by a previous run FAILED, keeping their bytes; with
        ``resumable`` (at start), those that can be resumed are reopened instead and wait for
        their client for the grace period."""
        entries = await self.catalog.unfinished()
        reaped = 0
        for entry in entries:
            if entry.resource_id in self._active or entry.resource_id in self._unrecorded:
                continue  # ours and alive
            if resumable and await self._adopt(entry):
                continue
            size = await asyncio.to_thread(self.storage.size, entry.resource_id)
            lines = None
            if entry.metadata.supports_line_access:
                lines = await asyncio.to_thread(
                    final_line_count, self.storage.index_path(entry.resource_id), size
                )
            status = entry.status.model_copy(
                update={
                    "transfer_status": TransferStatus.FAILED,
                    "current_size": size,
                    "number_of_lines": lines,
                    "revision": (entry.status.revision or 0) + 1,
                    "error": INTERRUPTED if entry.kind is ResourceKind.UPLOAD else WORKER_LOST,
                }
            )
            try:
                recorded = await self._record(entry.resource_id, status, None, reaping=True)
            except ServerError as exc:  # the catalog refused it (a full disk): hold it
                self._hold(entry.resource_id, status, None, reaping=True, why=exc)
                recorded = status
            except Exception as exc:
                # Unreachable (Redis): its owner may be alive after all. Nothing is held or
                # served; the next check tries again, if the lease is still missing then.
                logger.warning("could not fail orphan %s now: %s", entry.resource_id, exc)
                continue
            if recorded is None:
                continue  # its owner renewed its lease meanwhile: alive after all
            reaped += 1
            logger.warning(
                "resource %s was left unfinished: now FAILED with %d bytes", entry.resource_id, size
            )
        return reaped

    async def _adopt(self, entry: CatalogEntry) -> bool:
        """Reopen an upload a previous run left unfinished, to wait for its client; False when
        it cannot be resumed (no resume token, resume off, or its files are unreadable)."""
        if not self.resumable.enabled or entry.kind is not ResourceKind.UPLOAD:
            return False
        record = await asyncio.to_thread(self.storage.read_meta, entry.resource_id)
        token_hash = record.get("resumeTokenHash") if record else None
        if not isinstance(token_hash, str):
            return False
        try:
            writer = await self.reopen(entry.resource_id)
            tail_start = max(0, writer.written - 4)
            tail = await asyncio.to_thread(
                self.storage.read, entry.resource_id, tail_start, writer.written
            )
        except (OSError, ServerError, ValueError) as exc:
            logger.warning("upload %s cannot be resumed: %s", entry.resource_id, exc)
            return False
        producer = UploadProducer(
            writer, entry.metadata, self.quotas.max_resource_size, None, token_hash
        )
        producer.continue_text_after(tail)
        await self.resumable.adopt(producer)
        return True

    async def _record_waiting(self, producer: UploadProducer) -> None:
        """Make the status of an upload waiting for its client durable, so that a restart
        finds its revision (see ``reopen``)."""
        await self.catalog.set_status(producer.resource_id, producer.status)

    async def create_upload(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5,
        resumable: bool = False,
    ) -> UploadProducer:
        """Create a resource for a client's upload (its context's count quota checked first);
        INITIATED is published at once. ``resumable``: the upload gets a resume token (when
        resume is on) and may outlive its connection (``resumable_uploads.py``)."""
        token, token_hash = (
            new_resume_token() if resumable and self.resumable.enabled else (None, None)
        )
        if context_id is not None:
            try:
                await self.contexts.reserve(context_id, self.quotas.max_resources_per_context)
            except UnknownContextError:
                closed = await self.contexts.was_closed(context_id)
                raise PolicyViolationError(context_refusal(context_id, closed)) from None
            except QuotaExceededError as exc:
                self.contexts.creation_refused(context_id, metadata, str(exc))
                raise
        try:
            writer = await self.create_resource(
                metadata,
                context_id=context_id,
                checksum_algorithm=checksum_algorithm,
                resume_token_hash=token_hash,
            )
        except BaseException:
            if context_id is not None:
                # The resource was not created: its place in the context's quota is free again.
                with contextlib.suppress(Exception):
                    await self.contexts.release(context_id)
            raise
        return UploadProducer(writer, metadata, self.quotas.max_resource_size, token, token_hash)

    async def create_resource(
        self,
        metadata: ResourceMetadata,
        *,
        kind: ResourceKind = ResourceKind.UPLOAD,
        sources: tuple[str, ...] = (),
        context_id: str | None = None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        stage: str | None = None,
        resume_token_hash: str | None = None,
    ) -> LiveWriter:
        """Create a resource and return its writer; INITIATED (with ``stage``) is published at
        once. Every producer starts here (or, going on with an unfinished one, at ``reopen``).
        The record beside the bytes keeps the checksum algorithm (and ``resume_token_hash``),
        which ``reopen`` needs."""
        resource_id = new_resource_id()
        await self._check_catalog()
        storage_writer = None
        try:
            storage_writer = await asyncio.to_thread(self.storage.create, resource_id)
            index = None
            if metadata.supports_line_access:
                index_path = self.storage.index_path(resource_id)
                index = await asyncio.to_thread(LineIndexWriter, index_path)
        except OSError as exc:  # e.g. no inode left on a full disk
            if storage_writer is not None:
                storage_writer.close()
            raise storage_error(exc) from exc
        writer = self._live_writer(
            resource_id, storage_writer, index, checksum_algorithm, stage=stage
        )
        initial = writer.status
        now = time.time()
        entry = CatalogEntry(
            resource_id, metadata, initial, context_id, None, now, now, kind, tuple(sources)
        )
        try:
            try:
                # Not fsync'd: nothing is promised about a resource before its end.
                record = record_of(entry)
                record["checksumAlgorithm"] = checksum_algorithm.value
                if resume_token_hash is not None:
                    record["resumeTokenHash"] = resume_token_hash
                await asyncio.to_thread(self.storage.write_meta, resource_id, record, False)
            except OSError as exc:  # a full disk
                raise storage_error(exc) from exc
            await self.catalog.create(resource_id, metadata, context_id, initial, kind, sources)
        except BaseException:
            await writer.discard()  # the resource does not exist: no status to publish
            raise
        self._active[resource_id] = writer
        if context_id is not None:
            self._context_of[resource_id] = context_id
            self.contexts.resource_created(context_id, resource_id, metadata)
        self._publish(resource_id, initial)
        return writer

    async def reopen(
        self, resource_id: str, checksum_algorithm: ChecksumAlgorithm | None = None
    ) -> LiveWriter:
        """The writer of an unfinished resource, appending after its stored bytes: the
        resource goes on IN_PROGRESS at its stored size, its revision continuing above any
        its last producer can have published, its line index made whole and continued, its
        digest (in ``checksum_algorithm``, by default the one its record names) recomputed
        from the stored bytes. For any producer that resumes (a WebSocket upload whose client
        came back, tus). Raises ``ServerError`` for a resource that is unknown, ended, or
        written by this process already."""
        if resource_id in self._active:
            raise ServerError(f"Resource {resource_id} is being written already")
        entry = await self.entry(resource_id)
        if entry is None:
            raise ServerError(f"Unknown resource {resource_id}")
        if entry.status.is_terminal:
            raise ServerError(
                f"Resource {resource_id} has ended {entry.status.transfer_status.value}"
            )
        if checksum_algorithm is None:
            record = await asyncio.to_thread(self.storage.read_meta, resource_id) or {}
            try:
                checksum_algorithm = ChecksumAlgorithm(record["checksumAlgorithm"])
            except (KeyError, ValueError):
                raise ServerError(f"Resource {resource_id} names no checksum algorithm") from None
        try:
            storage_writer, index, point = await asyncio.to_thread(
                self._reopen_files, entry, checksum_algorithm
            )
        except OSError as exc:
            raise storage_error(exc) from exc
        writer = self._live_writer(
            resource_id,
            storage_writer,
            index,
            checksum_algorithm,
            revision=self._revision_beyond(entry, point.size),
            resume_from=point,
        )
        self._active[resource_id] = writer
        if entry.upload_context_id is not None:
            self._context_of[resource_id] = entry.upload_context_id
        self._publish(resource_id, writer.status)
        return writer

    async def suspend(self, writer: LiveWriter) -> None:
        """Stop producing a resource without ending it (``LiveWriter.suspend``): its bytes are
        stored, its last status recorded, and it stays unfinished for a later ``reopen``, in
        this process or after a restart."""
        if self._active.get(writer.resource_id) is not writer:
            return
        del self._active[writer.resource_id]
        self._context_of.pop(writer.resource_id, None)
        await writer.suspend()
        with contextlib.suppress(Exception):  # unrecorded, a restart still finds it unfinished
            await self.catalog.set_status(writer.resource_id, writer.status)

    def _live_writer(
        self,
        resource_id: str,
        storage_writer: StorageWriter,
        index: LineIndexWriter | None,
        checksum_algorithm: ChecksumAlgorithm,
        *,
        stage: str | None = None,
        revision: int = 0,
        resume_from: ResumePoint | None = None,
    ) -> LiveWriter:
        """A writer publishing through this manager and recording its end here."""
        return LiveWriter(
            resource_id,
            storage_writer,
            index,
            self.checkpoint_interval,
            lambda status: self._publish(resource_id, status),
            lambda status, checksum: self._persist_end(resource_id, status, checksum),
            checksum_algorithm,
            revision=revision,
            stage=stage,
            durable=self.durable,
            resume_from=resume_from,
        )

    def _reopen_files(
        self, entry: CatalogEntry, algorithm: ChecksumAlgorithm
    ) -> tuple[StorageWriter, LineIndexWriter | None, ResumePoint]:
        """Blocking part of ``reopen``: the files opened for appending, the digest so far."""
        resource_id = entry.resource_id
        size = self.storage.size(resource_id)
        digest = new_digest(algorithm)
        for start in range(0, size, REOPEN_READ_SIZE):
            digest.update(
                self.storage.read(resource_id, start, min(size, start + REOPEN_READ_SIZE))
            )
        storage_writer = self.storage.reopen(resource_id)
        index = None
        if entry.metadata.supports_line_access:
            data_path = self.storage.path(resource_id)
            index = LineIndexWriter.reopen(self.storage.index_path(resource_id), data_path, size)
        return storage_writer, index, ResumePoint(size, digest)

    def _revision_beyond(self, entry: CatalogEntry, size: int) -> int:
        """A revision above any the resource's last producer can have published: the catalog
        holds the last recorded one, and a producer publishes at most one checkpoint per
        interval (each with new bytes) since then, plus a few forced ones (start, stages)."""
        elapsed = max(0.0, time.time() - entry.updated_at)
        if self.checkpoint_interval > 0:
            checkpoints = min(size, 2 * math.ceil(elapsed / self.checkpoint_interval))
        else:
            checkpoints = size
        return (entry.status.revision or 0) + checkpoints + 8

    async def _check_catalog(self) -> None:
        """Refuse new uploads while the catalog cannot record them (e.g. Redis is away)."""
        ping = getattr(self.catalog, "ping", None)
        if ping is not None:
            try:
                await ping()
            except Exception as exc:
                reason = f"Service unavailable: the catalog is unreachable ({exc})"
                raise ServerError(reason) from None

    @property
    def active_ids(self) -> list[str]:
        """The resources whose lease this process keeps: those it produces, and those whose
        end it holds for the catalog (no other process may end them otherwise meanwhile)."""
        held = [rid for rid, (_, _, reaping) in self._unrecorded.items() if not reaping]
        return [*self._active, *held]

    async def _persist_end(
        self, resource_id: str, status: ResourceStatus, checksum: str | None
    ) -> ResourceStatus:
        """Record a writer's terminal status; returns the terminal status that stands. Raises
        ``EndNotRecorded`` (with the FAILED status held instead) when it could not be recorded
        in time."""
        try:
            return await self._end(resource_id, status, checksum)
        finally:
            # Whatever the catalog said, this process no longer produces the resource.
            self._active.pop(resource_id, None)
            self.resumable.ended(resource_id)

    async def _end(
        self, resource_id: str, status: ResourceStatus, checksum: str | None
    ) -> ResourceStatus:
        completed = status.transfer_status is TransferStatus.COMPLETED
        try:
            # The record beside the bytes first: what the uploader is told is on disk before
            # any process can serve it, and survives Redis losing its memory.
            await self._write_record(resource_id, status, checksum)
        except OSError as exc:
            logger.error("the record of %s could not be written: %s", resource_id, exc)
            if completed:
                error = ResourceError(code="storage_failed", message=f"record not written: {exc}")
                status, checksum, completed = _failed_after(status, error), None, False
        try:
            recorded = await self._record(resource_id, status, checksum)
            if recorded is None:
                raise ServerError("the catalog entry is owned by another process or lost")
        except Exception as exc:
            held = _failed_after(status, UNRECORDED) if completed else status
            with contextlib.suppress(OSError):
                await self._write_record(resource_id, held, None)
            self._hold(resource_id, held, None, reaping=False, why=exc)
            raise EndNotRecorded(
                "Service unavailable: the catalog could not record the end in time;"
                " the upload is FAILED",
                held,
            ) from exc
        if recorded != status:
            logger.error(
                "resource %s had already ended %s elsewhere: its %s was refused",
                resource_id,
                recorded.transfer_status.value,
                status.transfer_status.value,
            )
            with contextlib.suppress(OSError):
                await self._write_record(resource_id, recorded, None)
        return recorded

    async def _record(
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None,
        *,
        reaping: bool = False,
    ) -> ResourceStatus | None:
        """The catalog's fenced terminal write; an entry the catalog lost is restored from the
        record beside the bytes and the write tried again."""
        recorded = await self.catalog.record_end(resource_id, status, checksum, reaping=reaping)
        if recorded is None and not reaping and await self._restore(resource_id) is not None:
            recorded = await self.catalog.record_end(resource_id, status, checksum)
        if recorded is not None and reaping:
            with contextlib.suppress(OSError):
                await self._write_record(resource_id, recorded, None)
        return recorded

    async def _write_record(
        self, resource_id: str, status: ResourceStatus, checksum: str | None
    ) -> None:
        """Put ``status`` into the record beside the bytes (fsync'd when durable)."""
        record = await asyncio.to_thread(self.storage.read_meta, resource_id)
        if record is None:  # a resource older than records
            try:
                entry = await self.catalog.get(resource_id)
            except Exception:
                return  # nothing to build it from now; the catalog still records the end
            if entry is None:
                return
            record = record_of(entry)
        record["status"] = status.model_dump(by_alias=True, mode="json")
        record["checksum"] = checksum
        record["updatedAt"] = time.time()
        await asyncio.to_thread(self.storage.write_meta, resource_id, record, self.durable)

    async def _restore(self, resource_id: str) -> CatalogEntry | None:
        """Give the catalog back an entry it lost, from the record beside the bytes."""
        record = await asyncio.to_thread(self.storage.read_meta, resource_id)
        entry = entry_of(record) if record is not None else None
        if entry is None or entry.resource_id != resource_id:
            return None
        writer = self._active.get(resource_id)
        if writer is not None:
            entry = dataclasses.replace(entry, status=writer.status)
        elif resource_id in self._unrecorded:
            status, checksum, _ = self._unrecorded[resource_id]
            entry = dataclasses.replace(entry, status=status, checksum=checksum)
        await self.catalog.restore(entry)
        logger.warning(
            "the catalog had lost resource %s: restored (%s) from its record",
            resource_id,
            entry.status.transfer_status.value,
        )
        return entry

    async def restore_entries(self, resource_ids: list[str]) -> None:
        """Restore lost entries of resources this process produces (lease renewal found them
        missing: Redis restarted empty)."""
        for resource_id in resource_ids:
            await self._restore(resource_id)

    def _hold(
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None,
        *,
        reaping: bool,
        why: Exception,
    ) -> None:
        """Keep a terminal status the catalog refused (served by ``status`` and ``info``) and
        retry it in the background until it is written."""
        logger.error(
            "the catalog refused %s of %s (held in memory, retried every %g s): %s",
            status.transfer_status.value,
            resource_id,
            RECORD_RETRY_INTERVAL,
            why,
        )
        self._unrecorded[resource_id] = (status, checksum, reaping)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_held(), name="record-held")

    async def _record_held(self) -> None:
        while self._unrecorded:
            await asyncio.sleep(RECORD_RETRY_INTERVAL)  # a full disk or Redis gives no event
            await self._retry_held()

    async def _retry_held(self) -> None:
        for resource_id, (status, checksum, reaping) in list(self._unrecorded.items()):
            try:
                recorded = await self._record(resource_id, status, checksum, reaping=reaping)
            except Exception:
                continue
            del self._unrecorded[resource_id]
            if recorded is None:
                logger.warning("the held end of %s was not ours to record", resource_id)
            elif recorded != status:
                logger.error(
                    "resource %s had already ended %s elsewhere: its held %s was refused",
                    resource_id,
                    recorded.transfer_status.value,
                    status.transfer_status.value,
                )
                with contextlib.suppress(OSError):
                    await self._write_record(resource_id, recorded, None)
            else:
                logger.warning(
                    "the catalog recorded %s of %s at last",
                    status.transfer_status.value,
                    resource_id,
                )

    async def shutdown(self) -> None:
        """End every running upload FAILED (their connections are going away), and try once
        more to record what the catalog refused; what it still refuses, the next start's
        ``recover`` finds unfinished and marks FAILED. Uploads waiting for their client are
        left unfinished instead, stored and recorded, to wait again after the next start."""
        for producer in await self.resumable.close():
            await self.suspend(producer.writer)
        for writer in list(self._active.values()):
            await writer.fail(INTERRUPTED)
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        await self._retry_held()
        for resource_id, (status, _, _) in self._unrecorded.items():
            logger.error(
                "the catalog never recorded %s of %s", status.transfer_status.value, resource_id
            )

    def _publish(self, resource_id: str, status: ResourceStatus) -> None:
        self.bus.publish(resource_id, status)
        if status.is_terminal:
            context_id = self._context_of.pop(resource_id, None)
        else:
            context_id = self._context_of.get(resource_id)
        if context_id is not None:
            self.contexts.status_changed(context_id, resource_id, status)

    async def entry(self, resource_id: str) -> CatalogEntry | None:
        """The catalog's entry, with the terminal status and checksum it has not recorded yet."""
        if not is_valid_id(resource_id):
            return None
        if (cached := self._finished.get(resource_id)) is not None:
            return cached
        entry = await self.catalog.get(resource_id)
        if entry is None:
            # Lost by the catalog (Redis restarted empty)? The record beside the bytes says.
            entry = await self._restore(resource_id)
        if entry is not None and resource_id in self._unrecorded:
            status, checksum, _ = self._unrecorded[resource_id]
            entry = dataclasses.replace(entry, status=status, checksum=checksum)
        elif entry is not None and entry.status.is_terminal:
            # A terminal entry never changes again (rule 2): downloads of finished resources,
            # the hot path of a file server, need not ask the catalog each time.
            self._finished.put(resource_id, entry)
        return entry

    async def status(self, resource_id: str) -> ResourceStatus | None:
        """The current status: the live one of a resource produced here, else the catalog's
        (or the terminal one it has not recorded yet)."""
        writer = self._active.get(resource_id)
        if writer is not None:
            return writer.status
        if resource_id in self._unrecorded:
            return self._unrecorded[resource_id][0]
        try:
            entry = await self.entry(resource_id)
        except Exception as exc:  # the catalog is unreachable (Redis is away)
            # Serve the newest status this process has heard: the bytes it announces were
            # written before it was published, so they are readable.
            known = self.bus.latest(resource_id)
            if known is None:
                raise CatalogUnavailableError(
                    f"Service unavailable: the catalog is unreachable ({exc})"
                ) from exc
            return known
        return entry.status if entry else None

    async def info(self, resource_id: str) -> ResourceInfo | None:
        entry = await self.entry(resource_id)
        if entry is None:
            return None
        writer = self._active.get(resource_id)
        algorithm, checksum = parse_stored(entry.checksum) if entry.checksum else (None, None)
        derived = await self.catalog.derived_from(resource_id)
        return ResourceInfo(
            id=resource_id,
            metadata=entry.metadata,
            status=writer.status if writer else entry.status,
            upload_context_id=entry.upload_context_id,
            checksum=checksum,
            checksum_algorithm=algorithm,
            kind=entry.kind,
            sources=list(entry.sources),
            derived=[DerivedResource(id=rid, kind=kind) for rid, kind in derived],
        )

    async def subscribe(self, resource_id: str) -> StatusSubscription | None:
        """Statuses of ``resource_id`` starting with the current one; None if it is unknown."""
        status = await self.status(resource_id)
        if status is None:
            return None
        # Re-read after the await: the resource may have moved on while the catalog answered,
        # and the subscription must start from the newest status (rule: never backwards).
        writer = self._active.get(resource_id)
        if writer is not None and writer.status.is_newer_than(status):
            status = writer.status
        return await self.bus.subscribe(resource_id, status)

    async def reader(self, resource_id: str) -> Reader | None:
        """How to read ``resource_id``; None when there is no such resource."""
        entry = await self.entry(resource_id)
        if entry is None:
            return None
        return Reader(
            entry,
            self.storage,
            lambda: self.status(resource_id),
            lambda: self.subscribe(resource_id),
        )
