"""The sweeper: one task per process that, every sweep interval, applies the lifecycle settings.

Each process ends the uploads it produces itself once they pass the upload expiry, and measures
the data directory when a storage quota is set. The shared part — failing expired uploads no
process produces, deleting finished resources past the retention period, forgetting old
tombstones (and removing again whatever files a deleted resource's racing writer left) — runs in
one process per interval (``Catalog.claim_sweep``); and were two to run it at once, each step is
idempotent: a resource is deleted once, and an orphan is failed by one fenced write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from livefile.api.interfaces import Cursor, PageQuery
from livefile.api.model import TransferStatus
from livefile.impl_server.manager import ResourceManager

logger = logging.getLogger(__name__)
BATCH = 500  # entries read from the catalog at a time
MAX_EXAMINED = 20 * BATCH  # entries one sweep looks at: a huge backlog takes several sweeps
UNFINISHED = frozenset({TransferStatus.INITIATED, TransferStatus.IN_PROGRESS})


class Sweeper:
    def __init__(self, manager: ResourceManager) -> None:
        self._manager = manager
        self._lifecycle = manager.lifecycle
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livefile-sweeper")

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # e.g. Redis away: the next sweep tries again
                logger.exception("sweeping failed")
            await asyncio.sleep(self._lifecycle.sweep_interval)

    async def sweep(self) -> None:
        manager, lifecycle, now = self._manager, self._lifecycle, time.time()
        if lifecycle.max_storage_bytes is not None:
            await manager.usage.measure()
        await manager.expire_running(now)
        if not await manager.catalog.claim_sweep(lifecycle.sweep_interval):
            return
        if lifecycle.upload_expiry is not None or lifecycle.retention is not None:
            await self._sweep_catalog(now)
        for resource_id in await manager.catalog.purge_tombstones(
            now - lifecycle.tombstone_seconds
        ):
            # Removed at the deletion already; again here for what a writer in another process
            # may have written after it.
            freed = await asyncio.to_thread(manager.storage.remove, resource_id)
            manager.usage.freed(freed)

    async def _sweep_catalog(self, now: float) -> None:
        """The oldest resources first: unfinished ones past the upload expiry end FAILED,
        finished ones whose end is older than the retention period are deleted."""
        manager, lifecycle = self._manager, self._lifecycle
        horizons = [h for h in (lifecycle.upload_expiry, lifecycle.retention) if h is not None]
        created_before = now - min(horizons)
        cursor: Cursor | None = None
        examined = 0
        while examined < MAX_EXAMINED:
            query = PageQuery(cursor, BATCH, newest_first=False, created_before=created_before)
            page = await manager.catalog.page(query)
            examined += len(page.entries)
            for entry in page.entries:
                status = manager.live_status(entry)
                if status.transfer_status in UNFINISHED:
                    expiry = lifecycle.upload_expiry
                    if expiry is not None and now - entry.created_at >= expiry:
                        await manager.expire_orphan(entry)
                elif lifecycle.retention is not None and now - entry.updated_at >= (
                    lifecycle.retention
                ):
                    await manager.delete(
                        entry.resource_id,
                        f"retention period of {lifecycle.retention:g} s passed",
                    )
            if page.next is None:
                return
            cursor = page.next

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
