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

A resource can be deleted (``delete``): its watchers hear a FAILED ``deleted`` status and are
closed, its producer is stopped, then its catalog entry (a tombstone stays for a while), bytes,
line index and record go. A running upload older than the upload expiry is ended FAILED
``expired`` (``expire_running``, ``expire_orphan``; the sweeper calls them).

Beside each resource's bytes, its record (``resource_record.py``) is kept up to date — at
creation, and with the terminal status before anyone is told of it — so a catalog that lost the
entry (Redis restarted empty) gets it back from the shared volume (``entry``, lease renewal).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from livefile.api.errors import PolicyViolationError, QuotaExceededError, ServerError
from livefile.api.interfaces import (
    Catalog,
    CatalogEntry,
    CatalogPage,
    PageQuery,
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
from livefile.impl_common.checksums import new_digest, parse_stored, stored_form
from livefile.impl_common.lines import line_count, line_ends
from livefile.impl_common.lru import LruCache
from livefile.impl_server.contexts import UnknownContextError, UploadContexts, context_refusal
from livefile.impl_server.deletions import DeletionWatchers, deleted_error
from livefile.impl_server.file_threads import in_file_thread
from livefile.impl_server.lifecycle import Lifecycle, expired_error
from livefile.impl_server.line_index import LineIndexWriter, final_line_count
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.reader import Reader
from livefile.impl_server.reopen import reopen_index, stored_prefix
from livefile.impl_server.resource_record import entry_of, record_of
from livefile.impl_server.resumable_uploads import (
    CLIENT_LOST,
    RESUME_DEADLINE,
    RESUME_TOKEN_HASH,
    ResumableUploads,
    new_resume_token,
)
from livefile.impl_server.storage import storage_error
from livefile.impl_server.storage_usage import StorageUsage
from livefile.impl_server.upload import UploadProducer
from livefile.impl_server.writer import EndNotRecorded, LiveWriter, initial_status

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
DELETIONS_REMEMBERED = 10_000  # ids deleted lately, whose ends are no longer recorded


# Makes the reader of a resource: its entry, the storage, its current status, its statuses.
ReaderFactory = Callable[
    [
        CatalogEntry,
        Storage,
        Callable[[], Awaitable[ResourceStatus | None]],
        Callable[[], Awaitable[StatusSubscription | None]],
    ],
    Awaitable[Reader],
]


class Keep:
    """A recovery policy's answer: leave the resource unfinished, to be reopened later."""


KEEP = Keep()
# What recovery does with an unfinished resource no process produces: ``KEEP`` leaves it
# unfinished (a resumable upload: ``ResourceManager.reopen`` takes it up again), an error ends it
# FAILED with that error, None leaves the decision to the next policy (or the default: FAILED).
RecoveryPolicy = Callable[[CatalogEntry], Awaitable[Keep | ResourceError | None]]


class ResourceHeldError(ServerError):
    """Another process is writing the resource (it holds its lease)."""


class CatalogUnavailableError(ServerError):
    """The catalog cannot be reached and this process knows no status to serve instead."""


def _end_fields(status: ResourceStatus, checksum: str | None) -> dict[str, Any]:
    """What a resource's record says of its (terminal) status."""
    return {
        "status": status.model_dump(by_alias=True, mode="json"),
        "checksum": checksum,
        "updatedAt": time.time(),
    }


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
        lifecycle: Lifecycle | None = None,
        resume_grace: float = 0.0,
    ) -> None:
        self.storage = storage
        self.lifecycle = lifecycle or Lifecycle()
        self.usage = StorageUsage(storage)
        self.deletions = DeletionWatchers()
        # Tells the other processes of a deletion (the Redis feed); None: this one is alone.
        self.announce_deletion: Callable[[str, ResourceStatus], Awaitable[None]] | None = None
        self._deleted: LruCache[str, bool] = LruCache(DELETIONS_REMEMBERED)
        self._created_at: dict[str, float] = {}  # of the resources this process produces
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
        self._recovery_policies: list[RecoveryPolicy] = []
        self._background: set[asyncio.Task[None]] = set()
        self._reader_types: dict[ResourceKind, ReaderFactory] = {}
        # WebSocket uploads whose client may come back (``resume_grace`` seconds after its
        # connection was lost; 0: never, they fail at once).
        self.resumable = ResumableUploads(resume_grace, self._record_waiting)
        self.add_recovery_policy(self._resume_policy)

    def register_reader(self, kind: ResourceKind, factory: ReaderFactory) -> None:
        """Readers of resources of ``kind`` are made by ``factory`` (a bundle's ZIP is composed
        from its members' files: ``bundle/reader.py``); every other resource is one file."""
        self._reader_types[kind] = factory

    async def recover(self) -> int:
        """Mark resources left unfinished by a previous run (or, with a shared catalog, by a
        process that died) FAILED, keeping their bytes — unless a recovery policy keeps them:
        a WebSocket upload that can be resumed waits for its client (``_resume_policy``), a
        tus upload until it expires."""
        entries = await self.catalog.unfinished()
        reaped = 0
        for entry in entries:
            if entry.resource_id in self._active or entry.resource_id in self._unrecorded:
                continue  # ours and alive
            decision = await self._recovery_decision(entry)
            if decision is KEEP:
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
                    "error": decision
                    or (INTERRUPTED if entry.kind is ResourceKind.UPLOAD else WORKER_LOST),
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

    # --- Resumable resources: left unfinished by their producer, reopened later -------------

    def add_recovery_policy(self, policy: RecoveryPolicy) -> None:
        """Let ``policy`` decide what ``recover`` does with unfinished resources."""
        self._recovery_policies.append(policy)

    async def _recovery_decision(self, entry: CatalogEntry) -> Keep | ResourceError | None:
        for policy in self._recovery_policies:
            decision = await policy(entry)
            if decision is not None:
                return decision
        return None

    async def reopen(
        self, resource_id: str, checksum_algorithm: ChecksumAlgorithm | None = None
    ) -> LiveWriter:
        """Take up an unfinished resource that no writer of this process holds (a resumed
        upload, tus, a job taken over): a writer that appends after its stored bytes (the
        running checksum, in ``checksum_algorithm`` or the one its record names, recomputed,
        the line index made to
        match them) and whose first status, published at once, continues the revisions. For
        producers that publish only sizes (see ``reopen.continued_revision``). With a shared
        catalog this process takes the resource's lease and ownership over
        (``ResourceHeldError`` while another process holds it). Raises ``ServerError`` when it
        is unknown, ended or held here already."""
        if resource_id in self._active:
            raise ServerError(f"resource {resource_id} is being written already")
        entry = await self.entry(resource_id)
        if entry is None or entry.status.is_terminal or resource_id in self._unrecorded:
            raise ServerError(f"resource {resource_id} is unknown or has ended")
        if not await self.catalog.adopt(resource_id):  # takes the lease of a shared catalog
            raise ResourceHeldError(f"resource {resource_id} is being written by another process")
        record = await in_file_thread(self.storage.read_meta, resource_id)
        recorded = (entry_of(record) if record else None) or entry
        if checksum_algorithm is None:  # the one its record names (CRC-32C for older records)
            named = (record or {}).get("checksumAlgorithm", ChecksumAlgorithm.CRC32C.value)
            checksum_algorithm = ChecksumAlgorithm(named)
        path = self.storage.path(resource_id)
        prefix = await asyncio.to_thread(stored_prefix, path, checksum_algorithm, recorded.status)
        # A shared catalog holds the newest status published (a job's stage and percent move
        # the revision without the size): go on beyond it too, in its stage.
        known = max(entry.status, recorded.status, key=lambda status: status.revision or 0)
        newest = max(known.revision or 0, prefix.revision - 1)
        prefix = dataclasses.replace(prefix, revision=newest + 1)
        storage_writer = index = None
        try:
            storage_writer = await in_file_thread(self.storage.create, resource_id)
            if entry.metadata.supports_line_access:
                index_path = self.storage.index_path(resource_id)
                index = await asyncio.to_thread(reopen_index, index_path, path, prefix.size)
        except OSError as exc:
            if storage_writer is not None:
                storage_writer.close()
            raise storage_error(exc) from exc
        writer = self._writer(
            resource_id,
            storage_writer,
            index,
            checksum_algorithm,
            reopened=prefix,
            stage=known.stage,
        )
        self._active[resource_id] = writer
        self._created_at[resource_id] = entry.created_at
        if entry.upload_context_id is not None:
            self._context_of[resource_id] = entry.upload_context_id
        self._publish(resource_id, writer.status)
        return writer

    async def release(self, writer: LiveWriter) -> ResourceStatus:
        """Stop producing ``writer``'s resource but leave it unfinished (its bytes stored and
        published, the status recorded beside them) for ``reopen`` to take up again."""
        status = await writer.release()
        self._active.pop(writer.resource_id, None)
        self._context_of.pop(writer.resource_id, None)
        if not status.is_terminal:
            with contextlib.suppress(OSError):
                await self._write_record(writer.resource_id, status, None)
            drop = getattr(self.catalog, "drop_lease", None)
            if drop is not None:
                await drop(writer.resource_id)  # any process may take it up now
        return status

    async def _resume_policy(self, entry: CatalogEntry) -> Keep | ResourceError | None:
        """The one decision on an unfinished WebSocket upload that has a resume token, at
        start and, with a shared catalog, whenever the lease keeper finds its lease missing:
        it waits for its client — reopened and parked with a fresh grace period — unless it
        is parked already (shared: the record's deadline says until when, then it FAILS
        ``client_lost``). Without a token (or with resume off) it is not this policy's."""
        if not self.resumable.enabled or entry.kind is not ResourceKind.UPLOAD:
            return None
        record = await in_file_thread(self.storage.read_meta, entry.resource_id) or {}
        if not isinstance(record.get(RESUME_TOKEN_HASH), str):
            return None
        deadline = record.get(RESUME_DEADLINE)
        if self.resumable.shared is not None and isinstance(deadline, int | float):
            return KEEP if time.time() < deadline else CLIENT_LOST
        try:
            producer = await self.reopen_upload(entry.resource_id)
        except ResourceHeldError:
            return KEEP  # another process took it up meanwhile
        except (OSError, ServerError, ValueError) as exc:
            logger.warning("upload %s cannot be resumed: %s", entry.resource_id, exc)
            return None
        await self.resumable.adopt(producer)
        return KEEP

    async def reopen_upload(self, resource_id: str) -> UploadProducer:
        """Take up an unfinished WebSocket upload (``reopen``) as the producer its client goes
        on with, its UTF-8 check picking up after the stored bytes."""
        entry = await self.entry(resource_id)
        if entry is None:
            raise ServerError(f"resource {resource_id} is unknown")
        writer = await self.reopen(resource_id)
        record = await in_file_thread(self.storage.read_meta, resource_id) or {}
        tail_start = max(0, writer.written - 4)
        tail = await in_file_thread(self.storage.read, resource_id, tail_start, writer.written)
        token_hash = record.get(RESUME_TOKEN_HASH)
        producer = UploadProducer(
            writer,
            entry.metadata,
            self.quotas.max_resource_size,
            None,
            token_hash if isinstance(token_hash, str) else None,
        )
        producer.continue_text_after(tail)
        return producer

    async def set_resume_deadline(self, resource_id: str, deadline: float | None) -> float | None:
        """Note in the record beside the bytes until when a released upload waits for its
        client (None: it waits no more); returns the deadline noted before."""

        def update() -> float | None:
            record = self.storage.read_meta(resource_id)
            if record is None:
                return None
            before = record.pop(RESUME_DEADLINE, None)
            if deadline is not None:
                record[RESUME_DEADLINE] = deadline
            if deadline is not None or before is not None:
                # Not fsync'd: ``release`` writes the record durably next.
                self.storage.write_meta(resource_id, record, False)
            return before if isinstance(before, int | float) else None

        return await in_file_thread(update)

    async def _record_waiting(self, producer: UploadProducer) -> None:
        """Make the status of an upload waiting for its client durable, so that a restart
        finds its revision (see ``reopen``)."""
        await self.catalog.set_status(producer.resource_id, producer.status)

    async def create_upload(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5,
        uploader: str | None = None,
        resumable: bool = False,
        record: Mapping[str, Any] | None = None,
    ) -> UploadProducer:
        """Create a resource for a client's upload (its context's count quota checked first);
        INITIATED is published at once. The metadata fields the server describes are not the
        uploader's to set: they are dropped. ``resumable``: the upload gets a resume token
        (when resume is on) and may outlive its connection (``resumable_uploads.py``).
        ``record``: the producer's own fields for the record beside the bytes (tus's state)."""
        metadata = metadata.described({})
        token, token_hash = (
            new_resume_token() if resumable and self.resumable.enabled else (None, None)
        )
        async with self._placed_in(context_id, metadata):
            writer = await self.create_resource(
                metadata,
                context_id=context_id,
                checksum_algorithm=checksum_algorithm,
                uploader=uploader,
                resume_token_hash=token_hash,
                record=record,
            )
        return UploadProducer(writer, metadata, self.quotas.max_resource_size, token, token_hash)

    @contextlib.asynccontextmanager
    async def _placed_in(
        self, context_id: str | None, metadata: ResourceMetadata
    ) -> AsyncIterator[None]:
        """A place in ``context_id``'s count quota for a new upload (refused when the context is
        unknown, closed or full), given back when the upload is not created after all."""
        if context_id is None:
            yield
            return
        try:
            await self.contexts.reserve(context_id, self.quotas.max_resources_per_context)
        except UnknownContextError:
            closed = await self.contexts.was_closed(context_id)
            raise PolicyViolationError(context_refusal(context_id, closed)) from None
        except QuotaExceededError as exc:
            self.contexts.creation_refused(context_id, metadata, str(exc))
            raise
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await self.contexts.release(context_id)
            raise

    async def store_upload(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        data: bytes,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        record: Mapping[str, Any] | None = None,
    ) -> tuple[str, ResourceStatus]:
        """Create a client's upload whose bytes all came with its creation (a small tus
        creation-with-upload) and end it COMPLETED; returns its id and the status that stands.

        Its bytes, line index and terminal record are stored (durable, when the server is) in
        one trip to a worker thread, then the catalog creates the entry and records the end:
        one trip where ``create_upload`` and the writer's end take two, and no writer. Nobody
        can watch the resource before this returns (its id is known nowhere else yet), so its
        statuses INITIATED and COMPLETED are published one after the other; its context hears
        of it as of any upload. Raises as ``create_upload`` does, ``ServerError`` when storing
        failed (nothing is left), ``EndNotRecorded`` as any end (the resource is FAILED)."""
        metadata = metadata.described({})
        async with self._placed_in(context_id, metadata):
            resource_id, entry, fields = await self._new_entry(
                metadata, ResourceKind.UPLOAD, (), context_id, checksum_algorithm, None, record
            )
            digest = new_digest(checksum_algorithm)
            digest.update(data)
            checksum = stored_form(checksum_algorithm, digest.hexdigest())
            ends = line_ends(data, 0) if metadata.supports_line_access else None
            completed = entry.status.model_copy(
                update={
                    "transfer_status": TransferStatus.COMPLETED,
                    "current_size": len(data),
                    "number_of_lines": None
                    if ends is None
                    else line_count(len(ends), ends[-1] if ends else 0, len(data), True),
                    "revision": 1,
                }
            )
            ended = fields | _end_fields(completed, checksum)

            def store() -> None:
                """The bytes, their line index and the terminal record beside them."""
                storage_writer = self.storage.create(resource_id)
                try:
                    storage_writer.write(data)
                    if self.durable:
                        storage_writer.sync()
                finally:
                    storage_writer.close()
                if ends is not None:
                    index = LineIndexWriter(self.storage.index_path(resource_id))
                    try:
                        index.append(ends)
                        if self.durable:
                            index.sync()
                    finally:
                        index.close()
                self.storage.write_meta(resource_id, ended, self.durable)

            try:
                await in_file_thread(store)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    await in_file_thread(self.storage.remove, resource_id)
                raise storage_error(exc) from exc
            self.usage.stored(len(data))
            try:
                await self.catalog.create(
                    resource_id, metadata, context_id, entry.status, ResourceKind.UPLOAD
                )
            except BaseException:
                with contextlib.suppress(OSError):
                    await in_file_thread(self.storage.remove, resource_id)
                raise
        self._announce(resource_id, context_id, metadata, entry.status)
        standing = await self._record_standing(resource_id, completed, checksum)
        self._publish(resource_id, standing)
        return resource_id, standing

    async def create_resource(
        self,
        metadata: ResourceMetadata,
        *,
        kind: ResourceKind = ResourceKind.UPLOAD,
        sources: tuple[str, ...] = (),
        context_id: str | None = None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
        stage: str | None = None,
        uploader: str | None = None,
        resume_token_hash: str | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> LiveWriter:
        """Create a resource and return its writer; INITIATED (with ``stage``) is published at
        once. Every producer starts here (or, going on with an unfinished one, at ``reopen``).
        ``uploader`` identifies the token that created it (its own token may delete it while it
        runs). The record beside the bytes keeps the checksum algorithm (and
        ``resume_token_hash``), which ``reopen`` needs. ``StorageQuotaError`` when the data
        directory holds the most bytes allowed."""
        return await self._create(
            metadata,
            kind,
            sources,
            context_id,
            checksum_algorithm,
            stage,
            owned=True,
            uploader=uploader,
            resume_token_hash=resume_token_hash,
            record=record,
        )

    async def create_unowned(
        self,
        metadata: ResourceMetadata,
        *,
        kind: ResourceKind,
        sources: tuple[str, ...] = (),
        stage: str | None = None,
    ) -> str:
        """Create a resource that this process does not produce: a job queued for whichever
        worker claims it (``adopt``). Its empty file and INITIATED status exist at once."""
        writer = await self._create(
            metadata, kind, sources, None, ChecksumAlgorithm.CRC32C, stage, owned=False
        )
        return writer.resource_id

    async def adopt(self, resource_id: str) -> LiveWriter | None:
        """Produce unfinished ``resource_id`` here from now on (a claimed job, or one whose
        worker died), going on after its stored bytes; None when it has ended, is missing, or
        another live process produces it."""
        try:
            return await self.reopen(resource_id)
        except ServerError:  # ResourceHeldError included
            return None

    def _writer(
        self,
        resource_id: str,
        storage_writer: StorageWriter,
        index: LineIndexWriter | None,
        algorithm: ChecksumAlgorithm,
        **options: Any,
    ) -> LiveWriter:
        """The writer of ``resource_id``, publishing through this manager."""
        return LiveWriter(
            resource_id,
            storage_writer,
            index,
            self.checkpoint_interval,
            lambda status: self._publish(resource_id, status),
            lambda status, checksum, durable_bytes: self._persist_end(
                resource_id, status, checksum, durable_bytes
            ),
            algorithm,
            durable=self.durable,
            on_stored=self.usage.stored,
            **options,
        )

    async def abandon(self, resource_id: str) -> None:
        """Stop producing ``resource_id`` here at once and silently (nothing more stored,
        published or recorded): another process produces it now."""
        writer = self._active.pop(resource_id, None)
        self._created_at.pop(resource_id, None)
        self._context_of.pop(resource_id, None)
        if writer is not None:
            await writer.abandon()

    def taken_over(self, resource_id: str) -> None:
        """Another process produces ``resource_id`` now (its job was taken over): this one
        stops at once."""
        task = asyncio.get_running_loop().create_task(self.abandon(resource_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _create(
        self,
        metadata: ResourceMetadata,
        kind: ResourceKind,
        sources: tuple[str, ...],
        context_id: str | None,
        checksum_algorithm: ChecksumAlgorithm,
        stage: str | None,
        *,
        owned: bool,
        uploader: str | None = None,
        resume_token_hash: str | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> LiveWriter:
        resource_id, entry, fields = await self._new_entry(
            metadata, kind, sources, context_id, checksum_algorithm, stage, record
        )
        if uploader is not None:
            fields["uploader"] = uploader
        if resume_token_hash is not None:
            fields[RESUME_TOKEN_HASH] = resume_token_hash
        initial, now = entry.status, entry.created_at

        def store() -> tuple[StorageWriter, LineIndexWriter | None]:
            """The empty file, its line index, and the record beside them: one trip to a
            worker thread (a creation's cost is mostly such trips). The record is not
            fsync'd: nothing is promised about a resource before its end."""
            storage_writer = self.storage.create(resource_id)
            index = None
            try:
                if metadata.supports_line_access:
                    index = LineIndexWriter(self.storage.index_path(resource_id))
                self.storage.write_meta(resource_id, fields, False)
            except BaseException:
                storage_writer.close()
                if index is not None:
                    index.close()
                raise
            return storage_writer, index

        try:
            storage_writer, index = await in_file_thread(store)
        except OSError as exc:  # e.g. no inode left on a full disk
            raise storage_error(exc) from exc
        writer = self._writer(resource_id, storage_writer, index, checksum_algorithm, stage=stage)
        try:
            await self.catalog.create(
                resource_id, metadata, context_id, initial, kind, sources, owned=owned
            )
        except BaseException:
            await writer.discard()  # the resource does not exist: no status to publish
            raise
        if not owned:
            await writer.discard()  # its producer will be whoever adopts it
            self._publish(resource_id, initial)
            return writer
        self._active[resource_id] = writer
        self._created_at[resource_id] = now
        self._announce(resource_id, context_id, metadata, initial)
        return writer

    def _announce(
        self,
        resource_id: str,
        context_id: str | None,
        metadata: ResourceMetadata,
        initial: ResourceStatus,
    ) -> None:
        """A new resource's first status published, and its context told of it."""
        if context_id is not None:
            self._context_of[resource_id] = context_id
            self.contexts.resource_created(context_id, resource_id, metadata)
        self._publish(resource_id, initial)

    async def _new_entry(
        self,
        metadata: ResourceMetadata,
        kind: ResourceKind,
        sources: tuple[str, ...],
        context_id: str | None,
        checksum_algorithm: ChecksumAlgorithm,
        stage: str | None,
        record: Mapping[str, Any] | None,
    ) -> tuple[str, CatalogEntry, dict[str, Any]]:
        """A new resource's id, its INITIATED entry and the fields of the record beside its
        bytes (``record``: the producer's own); refused while the data directory is full or the
        catalog cannot record it."""
        await self.usage.check(self.lifecycle.max_storage_bytes)
        resource_id = new_resource_id()
        await self._check_catalog()
        initial = initial_status(metadata.supports_line_access, stage)
        now = time.time()
        entry = CatalogEntry(
            resource_id, metadata, initial, context_id, None, now, now, kind, tuple(sources)
        )
        fields = {**record_of(entry), **(record or {})}
        fields["checksumAlgorithm"] = checksum_algorithm.value
        return resource_id, entry, fields

    async def describe(self, resource_id: str, description: dict[str, Any]) -> None:
        """Record what a producer learnt of its resource's content (the metadata fields of
        ``DESCRIBED_FIELDS``: an image's size and BlurHash) in the record beside the bytes and
        in the catalog. Called before the producer completes, so whoever sees the resource
        COMPLETED finds them in its metadata."""
        record = await in_file_thread(self.storage.read_meta, resource_id)
        if record is not None:
            metadata = ResourceMetadata.model_validate(record["metadata"]).described(description)
            record["metadata"] = metadata.model_dump(by_alias=True, mode="json")
            try:
                # Not fsync'd: the terminal record written next is, and keeps this metadata.
                await in_file_thread(self.storage.write_meta, resource_id, record, False)
            except OSError as exc:
                raise storage_error(exc) from exc
        await self.catalog.describe(resource_id, description)

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
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None,
        durable_bytes: Callable[[], None] | None = None,
    ) -> ResourceStatus:
        """Record a writer's terminal status; returns the terminal status that stands. Raises
        ``EndNotRecorded`` (with the FAILED status held instead) when it could not be recorded
        in time."""
        try:
            if self._deleted.get(resource_id):
                return status  # deleted: nothing is left to record it in
            return await self._end(resource_id, status, checksum, durable_bytes)
        finally:
            # Whatever the catalog said, this process no longer produces the resource.
            self._active.pop(resource_id, None)
            self._created_at.pop(resource_id, None)
            self.resumable.ended(resource_id)

    async def _end(
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None,
        durable_bytes: Callable[[], None] | None,
    ) -> ResourceStatus:
        completed = status.transfer_status is TransferStatus.COMPLETED
        try:
            # The bytes and the record beside them first: what the uploader is told is on disk
            # before any process can serve it, and survives Redis losing its memory.
            await self._write_record(resource_id, status, checksum, durable_bytes)
        except OSError as exc:
            logger.error("the end of %s could not be stored: %s", resource_id, exc)
            if completed:
                error = ResourceError(code="storage_failed", message=f"not stored: {exc}")
                status, checksum = _failed_after(status, error), None
                with contextlib.suppress(OSError):  # the size it says is the size stored
                    stored = await in_file_thread(self.storage.size, resource_id)
                    if stored < status.current_size:
                        status = status.model_copy(update={"current_size": stored})
                with contextlib.suppress(OSError):  # the record says FAILED, if it can
                    await self._write_record(resource_id, status, None)
        return await self._record_standing(resource_id, status, checksum)

    async def _record_standing(
        self, resource_id: str, status: ResourceStatus, checksum: str | None
    ) -> ResourceStatus:
        """Record a terminal status already stored beside the bytes in the catalog; returns the
        one that stands. A COMPLETED the catalog could not take in time is held FAILED
        (``EndNotRecorded``)."""
        completed = status.transfer_status is TransferStatus.COMPLETED
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
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None,
        durable_bytes: Callable[[], None] | None = None,
    ) -> None:
        """Put ``status`` into the record beside the bytes (fsync'd when durable), after
        ``durable_bytes`` (the writer's fsync of them) on the same worker thread."""
        if self._deleted.get(resource_id):
            return  # its record is gone, or about to go: never write it again
        change = _end_fields(status, checksum)

        def update() -> bool:  # one trip to a worker thread: this is on every resource's end
            if durable_bytes is not None:
                durable_bytes()
            record = self.storage.read_meta(resource_id)
            if record is None:
                return False
            self.storage.write_meta(resource_id, record | change, self.durable)
            return True

        if await in_file_thread(update):
            return
        try:  # a resource older than records
            entry = await self.catalog.get(resource_id)
        except Exception:
            return  # nothing to build it from now; the catalog still records the end
        if entry is not None:
            record = record_of(entry) | change
            await in_file_thread(self.storage.write_meta, resource_id, record, self.durable)

    async def _restore(self, resource_id: str) -> CatalogEntry | None:
        """Give the catalog back an entry it lost, from the record beside the bytes."""
        if self._deleted.get(resource_id):
            return None  # not lost: deleted (its record may not be removed yet)
        record = await in_file_thread(self.storage.read_meta, resource_id)
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
            await self.release(producer.writer)
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
        current = functools.partial(self.status, resource_id)
        statuses = functools.partial(self.subscribe, resource_id)
        factory = self._reader_types.get(entry.kind)
        if factory is not None:
            return await factory(entry, self.storage, current, statuses)
        return Reader(entry, self.storage, current, statuses)

    # The lifecycle: deletion, expiry, listing.

    async def uploader(self, resource_id: str) -> str | None:
        """Which token created ``resource_id`` (``Grant.token_id``), as its record says."""
        if not is_valid_id(resource_id):
            return None
        record = await in_file_thread(self.storage.read_meta, resource_id)
        uploader = record.get("uploader") if record is not None else None
        return uploader if isinstance(uploader, str) else None

    async def gone(self, resource_id: str) -> bool:
        """Whether ``resource_id`` was deleted lately enough that its tombstone is kept (410)."""
        if not is_valid_id(resource_id):
            return False
        deleted_at = await self.catalog.deleted_at(resource_id)
        if deleted_at is None:
            return False
        return time.time() - deleted_at < self.lifecycle.tombstone_seconds

    async def delete(
        self, resource_id: str, reason: str = "deleted through DELETE /resources/{id}"
    ) -> ResourceStatus | None:
        """Delete a resource: its producer is stopped, its watchers (here and, through
        ``announce_deletion``, in every process) get its last status, FAILED ``deleted``, and
        are closed; then its catalog entry (a tombstone stays), bytes, line index and record
        go. Returns that last status; None when there is no such resource. Safe to call twice,
        and from two processes at once. Resources derived from it stay (their ``sources``
        still name it)."""
        entry = await self.entry(resource_id)
        if entry is None:
            return None
        self._deleted.put(resource_id, True)
        error = deleted_error(reason)
        writer = self._active.get(resource_id)
        if writer is not None:
            # Its FAILED is published here at once; it is not recorded (see _persist_end).
            status = await writer.stop(error)
            if status.error != error:  # it had ended just before: its end stood until now
                status = _failed_after(status, error)
                self.bus.publish(resource_id, status)
        else:
            current = await self.status(resource_id) or entry.status
            status = _failed_after(current, error)
            self.bus.publish(resource_id, status)
            if entry.upload_context_id is not None:
                self.contexts.status_changed(entry.upload_context_id, resource_id, status)
        await self.catalog.delete(resource_id, status, time.time())
        self._forget(resource_id)
        self.deletions.deleted(resource_id, status)
        if self.announce_deletion is not None:
            try:
                await self.announce_deletion(resource_id, status)
            except Exception as exc:  # the others' watchers then learn it from the catalog
                logger.warning("could not announce the deletion of %s: %s", resource_id, exc)
        freed = await in_file_thread(self.storage.remove, resource_id)
        self.usage.freed(freed)
        logger.info("resource %s deleted (%s): %d bytes freed", resource_id, reason, freed)
        return status

    async def deleted_elsewhere(self, resource_id: str, status: ResourceStatus) -> None:
        """Another process deleted ``resource_id``: stop producing it, close its watchers here,
        forget what is cached."""
        self._deleted.put(resource_id, True)
        writer = self._active.get(resource_id)
        if writer is not None and status.error is not None:
            await writer.stop(status.error)
        self._forget(resource_id)
        self.deletions.deleted(resource_id, status)

    def _forget(self, resource_id: str) -> None:
        self._finished.pop(resource_id)
        self._unrecorded.pop(resource_id, None)
        self._context_of.pop(resource_id, None)

    async def expire_running(self, now: float) -> int:
        """End FAILED ``expired`` the uploads this process produces that are older than the
        upload expiry; returns how many."""
        limit = self.lifecycle.upload_expiry
        if limit is None:
            return 0
        expired = 0
        for resource_id, writer in list(self._active.items()):
            created_at = self._created_at.get(resource_id)
            if created_at is not None and now - created_at >= limit:
                status = await writer.stop(expired_error(limit))
                if status.error is not None and status.error.code == "expired":
                    expired += 1
                    logger.warning("upload %s expired after %g s", resource_id, limit)
        return expired

    async def expire_orphan(self, entry: CatalogEntry) -> bool:
        """End FAILED ``expired`` an unfinished resource no process here produces (a resumable
        upload waiting for its client); refused while another live process holds its lease
        (that process's own sweep ends it). Whether it ended now."""
        limit = self.lifecycle.upload_expiry
        if limit is None or entry.resource_id in self._active or entry.status.is_terminal:
            return False
        status = _failed_after(entry.status, expired_error(limit))
        recorded = await self._record(entry.resource_id, status, None, reaping=True)
        if recorded is None or recorded.error != status.error:
            return False
        self.bus.publish(entry.resource_id, recorded)
        if entry.upload_context_id is not None:
            self.contexts.status_changed(entry.upload_context_id, entry.resource_id, recorded)
        logger.warning("unfinished resource %s expired after %g s", entry.resource_id, limit)
        return True

    def live_status(self, entry: CatalogEntry) -> ResourceStatus:
        """The entry's status, or the newer one this process knows (its producer's, or an end
        the catalog has not recorded yet)."""
        writer = self._active.get(entry.resource_id)
        if writer is not None:
            return writer.status
        if entry.resource_id in self._unrecorded:
            return self._unrecorded[entry.resource_id][0]
        return entry.status

    async def page(self, query: PageQuery) -> CatalogPage:
        """The resources ``query`` asks for, with their live statuses. A page may hold fewer
        than ``query.limit`` even when more follow (entries of other statuses were passed
        over): go on while ``next`` is set."""
        found: list[CatalogEntry] = []
        limit, statuses, cursor = query.limit, query.statuses, query.after
        examined = 0
        while True:
            page = await self.catalog.page(
                dataclasses.replace(query, after=cursor, limit=limit - len(found))
            )
            examined += len(page.entries)
            for entry in page.entries:
                entry = dataclasses.replace(entry, status=self.live_status(entry))
                if statuses is None or entry.status.transfer_status in statuses:
                    found.append(entry)
            cursor = page.next
            # Bounded work per request: a page that passed over many entries ends early.
            if cursor is None or len(found) >= limit or examined >= 10 * limit:
                return CatalogPage(found, cursor)
