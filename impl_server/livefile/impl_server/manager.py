"""The resource manager: creates resources, runs their uploads, answers status and byte reads.

It is assembled from a storage, a catalog and a status bus (see ``livefile.api.interfaces``). The
live status of a running upload is held here; the catalog holds the durable one. A terminal status
the catalog refused (its disk is full, Redis is away) is held here too, served as the current
status and written again every ``RECORD_RETRY_INTERVAL`` until the catalog takes it, so no reader
ever sees an ended upload as still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from livefile.api.errors import PolicyViolationError, QuotaExceededError, ServerError
from livefile.api.interfaces import Catalog, CatalogEntry, StatusBus, StatusSubscription, Storage
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceInfo,
    ResourceMetadata,
    ResourceStatus,
    TransferStatus,
    is_valid_id,
    new_resource_id,
)
from livefile.impl_common.checksums import parse_stored
from livefile.impl_common.lru import LruCache
from livefile.impl_server.contexts import UnknownContextError, UploadContexts
from livefile.impl_server.line_index import LineIndexWriter, final_line_count, read_lines
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.storage import storage_error
from livefile.impl_server.upload import ActiveUpload

logger = logging.getLogger(__name__)
FINISHED_ENTRIES_CACHED = 10_000  # about 1 KiB each
INLINE_READ_MAX = 256 * 1024

RECORD_RETRY_INTERVAL = 1.0  # seconds between attempts to record a refused terminal status


class ResourceManager:
    def __init__(
        self,
        storage: Storage,
        catalog: Catalog,
        bus: StatusBus,
        contexts: UploadContexts,
        quotas: Quotas,
        checkpoint_interval: float,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.bus = bus
        self.contexts = contexts
        self.quotas = quotas
        self.checkpoint_interval = checkpoint_interval
        self._active: dict[str, ActiveUpload] = {}
        self._context_of: dict[str, str] = {}
        # Terminal statuses (and checksums) the catalog has refused so far, by resource id.
        self._unrecorded: dict[str, tuple[ResourceStatus, str | None]] = {}
        # Entries of finished resources, most recently used last.
        self._finished: LruCache[str, CatalogEntry] = LruCache(FINISHED_ENTRIES_CACHED)
        self._recorder: asyncio.Task[None] | None = None

    async def recover(self) -> int:
        """Mark uploads left unfinished by a previous run FAILED, keeping their bytes."""
        entries = await self.catalog.unfinished()
        for entry in entries:
            if entry.resource_id in self._active:
                continue  # ours and alive
            size = await asyncio.to_thread(self.storage.size, entry.resource_id)
            lines = None
            if entry.metadata.supports_line_access:
                lines = await asyncio.to_thread(
                    final_line_count, self.storage.index_path(entry.resource_id), size
                )
            status = ResourceStatus(
                transfer_status=TransferStatus.FAILED, current_size=size, number_of_lines=lines
            )
            with contextlib.suppress(Exception):  # held, retried and logged by _record_end
                await self._record_end(entry.resource_id, status, None)
            logger.warning(
                "resource %s was left unfinished: now FAILED with %d bytes", entry.resource_id, size
            )
        return len(entries)

    async def create(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5,
    ) -> ActiveUpload:
        """Create a resource and start its upload (INITIATED is published at once)."""
        if context_id is not None:
            try:
                await self.contexts.reserve(context_id, self.quotas.max_resources_per_context)
            except UnknownContextError:
                raise PolicyViolationError(f"Unknown upload context {context_id[:64]}") from None
            except QuotaExceededError as exc:
                self.contexts.creation_refused(context_id, metadata, str(exc))
                raise
        try:
            return await self._create(metadata, context_id, checksum_algorithm)
        except BaseException:
            if context_id is not None:
                # The resource was not created: its place in the context's quota is free again.
                with contextlib.suppress(Exception):
                    await self.contexts.release(context_id)
            raise

    async def _create(
        self,
        metadata: ResourceMetadata,
        context_id: str | None,
        checksum_algorithm: ChecksumAlgorithm,
    ) -> ActiveUpload:
        resource_id = new_resource_id()
        await self._check_catalog()
        writer = None
        try:
            writer = await asyncio.to_thread(self.storage.create, resource_id)
            index = None
            if metadata.supports_line_access:
                index_path = self.storage.index_path(resource_id)
                index = await asyncio.to_thread(LineIndexWriter, index_path)
        except OSError as exc:  # e.g. no inode left on a full disk
            if writer is not None:
                writer.close()
            raise storage_error(exc) from exc
        upload = ActiveUpload(
            resource_id,
            metadata,
            writer,
            index,
            self.checkpoint_interval,
            self.quotas.max_resource_size,
            lambda status: self._publish(resource_id, status),
            checksum_algorithm,
        )
        initial = upload.status
        try:
            await self.catalog.create(resource_id, metadata, context_id, initial)
        except BaseException:
            await upload.discard()  # the resource does not exist: no status to publish
            raise
        self._active[resource_id] = upload
        if context_id is not None:
            self._context_of[resource_id] = context_id
            self.contexts.resource_created(context_id, resource_id, metadata)
        self._publish(resource_id, initial)
        return upload

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
        return list(self._active)

    async def complete(self, upload: ActiveUpload, client_checksum: str) -> ResourceStatus:
        """Finish ``upload``: COMPLETED when the checksums agree; raises otherwise (then FAILED),
        or when the catalog refused to record the end (it is then held here and retried)."""
        try:
            status = await upload.finish(client_checksum)
        finally:
            await self._persist_end(upload)
        return status

    async def fail(self, upload: ActiveUpload) -> ResourceStatus:
        """End ``upload`` FAILED. Never raises for the catalog: the session must still close
        its connection, and a refused status is held here and retried."""
        status = await upload.fail()
        with contextlib.suppress(Exception):  # held, retried and logged by _record_end
            await self._persist_end(upload)
        return status

    async def _persist_end(self, upload: ActiveUpload) -> None:
        if self._active.get(upload.resource_id) is not upload or not upload.ended:
            return
        completed = upload.status.transfer_status is TransferStatus.COMPLETED
        try:
            await self._record_end(
                upload.resource_id, upload.status, upload.stored_checksum if completed else None
            )
        finally:
            # Even if the catalog could not record it (Redis away too long), this process no
            # longer owns the upload: its lease lapses and the resource cannot stay IN_PROGRESS.
            del self._active[upload.resource_id]
            self._context_of.pop(upload.resource_id, None)

    async def _record_end(
        self, resource_id: str, status: ResourceStatus, checksum: str | None
    ) -> None:
        """Write a terminal status to the catalog; if it refuses, hold the status (served by
        ``status`` and ``info``) and retry in the background until it is written."""
        try:
            await self.catalog.set_status(resource_id, status, checksum)
        except Exception as exc:
            logger.error(
                "the catalog refused %s of %s (held in memory, retried every %g s): %s",
                status.transfer_status.value,
                resource_id,
                RECORD_RETRY_INTERVAL,
                exc,
            )
            self._unrecorded[resource_id] = (status, checksum)
            if self._recorder is None or self._recorder.done():
                self._recorder = asyncio.create_task(self._record_held(), name="record-held")
            raise

    async def _record_held(self) -> None:
        while self._unrecorded:
            await asyncio.sleep(RECORD_RETRY_INTERVAL)  # a full disk or Redis gives no event
            await self._retry_held()

    async def _retry_held(self) -> None:
        for resource_id, (status, checksum) in list(self._unrecorded.items()):
            try:
                await self.catalog.set_status(resource_id, status, checksum)
            except Exception:
                continue
            del self._unrecorded[resource_id]
            logger.warning(
                "the catalog recorded %s of %s at last", status.transfer_status.value, resource_id
            )

    async def shutdown(self) -> None:
        """End every running upload FAILED (their connections are going away), and try once
        more to record what the catalog refused; what it still refuses, the next start's
        ``recover`` finds unfinished and marks FAILED."""
        for upload in list(self._active.values()):
            await self.fail(upload)
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        await self._retry_held()
        for resource_id, (status, _) in self._unrecorded.items():
            logger.error(
                "the catalog never recorded %s of %s", status.transfer_status.value, resource_id
            )

    def _publish(self, resource_id: str, status: ResourceStatus) -> None:
        self.bus.publish(resource_id, status)
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
        if entry is not None and resource_id in self._unrecorded:
            status, checksum = self._unrecorded[resource_id]
            entry = dataclasses.replace(entry, status=status, checksum=checksum)
        elif entry is not None and entry.status.is_terminal:
            # A terminal entry never changes again (rule 2): downloads of finished resources,
            # the hot path of a file server, need not ask the catalog each time.
            self._finished.put(resource_id, entry)
        return entry

    async def status(self, resource_id: str) -> ResourceStatus | None:
        """The current status: the live one of a running upload, else the catalog's (or the
        terminal one it has not recorded yet)."""
        upload = self._active.get(resource_id)
        if upload is not None:
            return upload.status
        entry = await self.entry(resource_id)
        return entry.status if entry else None

    async def info(self, resource_id: str) -> ResourceInfo | None:
        entry = await self.entry(resource_id)
        if entry is None:
            return None
        upload = self._active.get(resource_id)
        algorithm, checksum = parse_stored(entry.checksum) if entry.checksum else (None, None)
        return ResourceInfo(
            id=resource_id,
            metadata=entry.metadata,
            status=upload.status if upload else entry.status,
            upload_context_id=entry.upload_context_id,
            checksum=checksum,
            checksum_algorithm=algorithm,
        )

    async def subscribe(self, resource_id: str) -> StatusSubscription | None:
        """Statuses of ``resource_id`` starting with the current one; None if it is unknown."""
        status = await self.status(resource_id)
        if status is None:
            return None
        # Re-read after the await: an upload may have moved on while the catalog answered, and
        # the subscription must start from the newest status (rule: never backwards).
        upload = self._active.get(resource_id)
        if upload is not None and upload.status.is_newer_than(status):
            status = upload.status
        return await self.bus.subscribe(resource_id, status)

    async def read_lines(
        self, resource_id: str, status: ResourceStatus, start: int, count: int, max_bytes: int
    ) -> list[bytes]:
        """Lines of ``resource_id`` as of ``status`` (bounds already checked against it)."""
        assert status.number_of_lines is not None
        return await asyncio.to_thread(
            read_lines,
            self.storage.path(resource_id),
            self.storage.index_path(resource_id),
            start,
            count,
            status.number_of_lines,
            status.current_size,
            max_bytes,
        )

    async def read(self, resource_id: str, start: int, end: int) -> bytes:
        if end - start <= INLINE_READ_MAX:
            # A small read from the page cache takes microseconds, less than the hop to a
            # worker thread and back: like nginx without aio threads, the loop reads it itself.
            return self.storage.read(resource_id, start, end)
        return await asyncio.to_thread(self.storage.read, resource_id, start, end)
