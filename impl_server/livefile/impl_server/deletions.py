"""Who in this process hears that a resource was deleted: the connections watching it (each
waits on a future that gets the resource's last status, FAILED ``deleted``) and the caches
that must forget it. A deletion made by another process reaches here through the Redis feed
(``redis_backend.RedisDeletionFeed``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livefile.api.model import ResourceError, ResourceStatus

logger = logging.getLogger(__name__)


DELETED = "deleted"  # the error code of a deleted resource's last status


def deleted_error(reason: str) -> ResourceError:
    """The error of a deleted resource's last status."""
    return ResourceError(code=DELETED, message=reason)


class DeletionWatchers:
    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Future[ResourceStatus]]] = {}
        self._listeners: list[Callable[[str], None]] = []

    def watch(self, resource_id: str) -> asyncio.Future[ResourceStatus]:
        """A future done with the deleted status once ``resource_id`` is deleted; ``unwatch``
        it when done watching."""
        future: asyncio.Future[ResourceStatus] = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(resource_id, set()).add(future)
        return future

    def unwatch(self, resource_id: str, future: asyncio.Future[ResourceStatus]) -> None:
        watchers = self._watchers.get(resource_id)
        if watchers is not None:
            watchers.discard(future)
            if not watchers:
                del self._watchers[resource_id]
        future.cancel()

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """``listener(resource_id)`` is called for every deletion (e.g. to evict a cache)."""
        self._listeners.append(listener)

    def deleted(self, resource_id: str, status: ResourceStatus) -> None:
        for listener in self._listeners:
            try:
                listener(resource_id)
            except Exception:
                logger.exception("a deletion listener failed")
        for future in self._watchers.pop(resource_id, ()):
            if not future.done():
                future.set_result(status)
