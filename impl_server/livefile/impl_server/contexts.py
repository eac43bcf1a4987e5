"""Upload contexts: named groups of uploads that an application opens, watches and closes.

Listeners on a context hear of each resource created in it, each status change of those
resources, each refused creation, and the context's closing. In-process listeners are called
synchronously and must not block; remote listeners (the SSE stream) are bounded queues.

``UploadContexts`` keeps contexts in this process. ``RedisUploadContexts`` (``redis_contexts``)
keeps them in Redis and carries their events over pub/sub, so that a context opened through one
process takes uploads and feeds listeners on every other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from livefile.api.errors import QuotaExceededError
from livefile.api.model import ResourceMetadata, ResourceStatus, new_context_id
from livefile.impl_common.lru import LruCache

logger = logging.getLogger(__name__)

# Closed contexts are remembered so that an upload into one is told it is closed, not unknown:
# the most recent ones in memory, each for a week in Redis.
CLOSED_REMEMBERED = 10_000
CLOSED_TTL_SECONDS = 7 * 24 * 3600

ContextEventKind = Literal["resourceCreated", "statusChanged", "creationRefused", "contextClosed"]


@dataclass(frozen=True)
class ContextEvent:
    kind: ContextEventKind
    data: dict[str, object]


class UploadContextListener(Protocol):
    def on_event(self, event: ContextEvent) -> None: ...


class UnknownContextError(LookupError):
    pass


def context_refusal(context_id: str, closed: bool) -> str:
    """Why an upload into a context that is not open is refused (a close reason)."""
    if closed:
        return f"Upload context {context_id[:64]} is closed"
    return f"Unknown upload context {context_id[:64]}"


class UploadContexts:
    """The registry of open upload contexts, in this process."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._listeners: dict[str, list[UploadContextListener]] = {}
        self._closed: LruCache[str, bool] = LruCache(CLOSED_REMEMBERED)

    async def open(self) -> str:
        context_id = new_context_id()
        self._counts[context_id] = 0
        return context_id

    async def close(self, context_id: str) -> None:
        if self._counts.pop(context_id, None) is None:
            raise UnknownContextError(context_id)
        self._closed.put(context_id, True)
        self._emit(context_id, ContextEvent("contextClosed", {}))

    async def resource_count(self, context_id: str) -> int | None:
        """Resources created in the context so far; None when it is not open."""
        return self._counts.get(context_id)

    async def was_closed(self, context_id: str) -> bool:
        """Whether the context was open once and has been closed (as far as remembered)."""
        return self._closed.get(context_id) is not None

    async def reserve(self, context_id: str, limit: int | None) -> None:
        """Count one more resource in the context, within ``limit``."""
        count = self._counts.get(context_id)
        if count is None:
            raise UnknownContextError(context_id)
        if limit is not None and count >= limit:
            raise QuotaExceededError(f"Upload context {context_id} already holds {limit} resources")
        self._counts[context_id] = count + 1

    async def release(self, context_id: str) -> None:
        """Give back a ``reserve``d count: the resource was not created after all."""
        count = self._counts.get(context_id)
        if count:
            self._counts[context_id] = count - 1

    async def add_listener(self, context_id: str, listener: UploadContextListener) -> None:
        if await self.resource_count(context_id) is None:
            raise UnknownContextError(context_id)
        self._listeners.setdefault(context_id, []).append(listener)

    def remove_listener(self, context_id: str, listener: UploadContextListener) -> None:
        listeners = self._listeners.get(context_id, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop(context_id, None)

    def resource_created(self, context_id: str, resource_id: str, meta: ResourceMetadata) -> None:
        event = ContextEvent(
            "resourceCreated", {"resourceId": resource_id, "metadata": meta.to_wire()}
        )
        self._emit(context_id, event)

    def status_changed(self, context_id: str, resource_id: str, status: ResourceStatus) -> None:
        event = ContextEvent(
            "statusChanged", {"resourceId": resource_id, "resourceStatus": status.to_wire()}
        )
        self._emit(context_id, event)

    def creation_refused(
        self, context_id: str, metadata: ResourceMetadata | None, reason: str
    ) -> None:
        data: dict[str, object] = {"reason": reason}
        if metadata is not None:
            data["metadata"] = metadata.to_wire()
        self._emit(context_id, ContextEvent("creationRefused", data))

    def _emit(self, context_id: str, event: ContextEvent) -> None:
        self._deliver(context_id, event)

    def _deliver(self, context_id: str, event: ContextEvent) -> None:
        for listener in list(self._listeners.get(context_id, ())):
            # A listener's failure must not break an upload or the other listeners.
            try:
                listener.on_event(event)
            except Exception:
                logger.exception("upload context listener failed")

    async def stop(self) -> None:
        return None


class QueueingContextListener:
    """A listener that queues events for a remote watcher; overflows end the stream."""

    def __init__(self, max_events: int = 1000) -> None:
        self.events: asyncio.Queue[ContextEvent | None] = asyncio.Queue(max_events)
        self.overflowed = False

    def on_event(self, event: ContextEvent) -> None:
        try:
            self.events.put_nowait(event)
            if event.kind == "contextClosed":
                self.events.put_nowait(None)
        except asyncio.QueueFull:
            self.overflowed = True
