"""How many bytes the data directory holds, for the total storage quota.

Walking the directory costs time proportional to its files, so it is measured now and then (the
sweeper's interval, and before the first check) and kept up to date in between with what this
process stores and deletes itself. With several processes each adds only its own writes between
two measurements, so together they may pass the quota by what the others wrote within one
interval; the next measurement sees everything.
"""

from __future__ import annotations

import asyncio

from livefile.api.errors import StorageQuotaError
from livefile.api.interfaces import Storage


class StorageUsage:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._measured: int | None = None
        self._since = 0  # bytes stored (positive) and freed (negative) since the measurement

    @property
    def used(self) -> int | None:
        """Bytes in use, as far as known (None before the first measurement)."""
        return None if self._measured is None else self._measured + self._since

    def stored(self, count: int) -> None:
        self._since += count

    def freed(self, count: int) -> None:
        self._since -= count

    async def measure(self) -> int:
        self._since = 0
        self._measured = await asyncio.to_thread(self._storage.used_bytes)
        return self._measured + self._since

    async def check(self, limit: int | None) -> None:
        """Raise ``StorageQuotaError`` when ``limit`` bytes are in use already."""
        if limit is None:
            return
        used = self.used
        if used is None:
            used = await self.measure()
        if used >= limit:
            raise StorageQuotaError(
                f"Storage quota reached: {used} of {limit} bytes in use; delete resources first"
            )
