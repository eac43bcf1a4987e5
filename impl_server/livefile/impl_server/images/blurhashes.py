"""BlurHash lookups (``POST /blurhashes``): a resource's BlurHash, width and height.

Where the answer comes from, first found wins (``Lookup.found`` says which):

1. ``described``: the resource's own metadata (a derived image records them when it completes),
   or that of a COMPLETED image derived from it — what its conversion computed;
2. ``memory``: this process's bounded LRU of earlier computations;
3. ``redis``: with Redis, the computations of every worker, kept ``ttl`` seconds;
4. ``computed``: the source file itself, COMPLETED, read like the image producer reads it (same
   limits, same thumbnail, so the same hash), in a worker thread, a few at a time.

Cache keys hold the resource's id, its checksum and the number of components: a source whose
bytes changed (a data directory restored from elsewhere) never meets a stale hash, and the hash
of one resource is never served for another that happens to share its checksum (a CRC-32C).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceKind, TransferStatus
from livefile.impl_common.lru import LruCache
from livefile.impl_server.images.convert import ImageError, ImageLimits, ImageSummary, summarize
from livefile.impl_server.manager import ResourceManager

if TYPE_CHECKING:  # Redis's client is imported only by a server that uses Redis
    from livefile.impl_server.images.redis_summaries import RedisSummaries

Found = Literal["described", "memory", "redis", "computed"]
MAX_RESOURCES_PER_LOOKUP = 100  # ids in one POST /blurhashes


class BlurhashUnavailableError(Exception):
    """No BlurHash for this resource; ``code`` says why (``not_found``, ``not_completed``, or
    the image's refusal: ``unsupported_format``, ``image_too_large``, ``invalid_image``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Lookup:
    summary: ImageSummary
    found: Found


class Blurhashes:
    """Looks BlurHashes up (see the module docstring)."""

    def __init__(
        self,
        manager: ResourceManager,
        limits: ImageLimits,
        components: tuple[int, int],
        *,
        cache_size: int,
        shared: RedisSummaries | None = None,
        concurrency: int = 2,
    ) -> None:
        self._manager = manager
        self._limits = limits
        self._components = components
        self._memory: LruCache[str, ImageSummary] = LruCache(cache_size)
        self._shared = shared
        self._computing = asyncio.Semaphore(concurrency)

    async def lookup(self, resource_id: str) -> Lookup:
        """``resource_id``'s summary; raises ``BlurhashUnavailableError``."""
        entry = await self._manager.entry(resource_id)
        if entry is None:
            raise BlurhashUnavailableError("not_found", "no resource with that id")
        described = _described(entry) or await self._derived_image(resource_id)
        if described is not None:
            return Lookup(described, "described")
        status = await self._manager.status(resource_id)
        if status is None or status.transfer_status is not TransferStatus.COMPLETED:
            state = status.transfer_status.value if status else "gone"
            raise BlurhashUnavailableError(
                "not_completed", f"the resource is {state}: an image is read once it is COMPLETED"
            )
        entry = await self._manager.entry(resource_id) or entry  # its checksum, now recorded
        cx, cy = self._components
        key = f"{resource_id}:{entry.checksum}:{cx}x{cy}"
        if (cached := self._memory.get(key)) is not None:
            return Lookup(cached, "memory")
        if (shared := await self._shared_get(key)) is not None:
            self._memory.put(key, shared)
            return Lookup(shared, "redis")
        summary = await self._compute(resource_id)
        self._memory.put(key, summary)
        await self._shared_put(key, summary)
        return Lookup(summary, "computed")

    async def _derived_image(self, resource_id: str) -> ImageSummary | None:
        for derived_id, kind in await self._manager.catalog.derived_from(resource_id):
            if kind is not ResourceKind.IMAGE:
                continue
            derived = await self._manager.entry(derived_id)
            if derived is None or derived.status.transfer_status is not TransferStatus.COMPLETED:
                continue
            if (summary := _described(derived)) is not None:
                return summary
        return None

    async def _compute(self, resource_id: str) -> ImageSummary:
        path = self._manager.storage.path(resource_id)
        cx, cy = self._components
        async with self._computing:
            try:
                return await asyncio.to_thread(summarize, path, self._limits, cx, cy)
            except ImageError as exc:
                raise BlurhashUnavailableError(exc.code, exc.message) from None

    async def _shared_get(self, key: str) -> ImageSummary | None:
        return None if self._shared is None else await self._shared.get(key)

    async def _shared_put(self, key: str, summary: ImageSummary) -> None:
        if self._shared is not None:
            await self._shared.put(key, summary)


def _described(entry: CatalogEntry) -> ImageSummary | None:
    metadata = entry.metadata
    if metadata.width and metadata.height and metadata.blurhash:
        return ImageSummary(metadata.width, metadata.height, metadata.blurhash)
    return None
