"""Upload contexts: named groups of uploads that an application opens, watches and closes.

Listeners on a context hear of each resource created in it, each status change of those
resources, each refused creation, and the context's closing. In-process listeners are called
synchronously and must not block; remote listeners (the SSE stream) are bounded queues.

``UploadContexts`` keeps contexts in this process. ``RedisUploadContexts`` keeps them in Redis
and carries their events over pub/sub, so that a context opened through one process takes
uploads and feeds listeners on every other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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


class RedisUploadContexts(UploadContexts):
    """Contexts in Redis: ``P:context:{id}`` holds the resource count while the context is open,
    ``P:context-closed:{id}`` says for a week that it was closed; events travel on
    ``P:context-events:{id}`` to the listeners of every process."""

    _RESERVE = """
    local count = redis.call('HGET', KEYS[1], 'resourceCount')
    if not count then return -1 end
    if ARGV[1] ~= '' and tonumber(count) >= tonumber(ARGV[1]) then return 0 end
    redis.call('HINCRBY', KEYS[1], 'resourceCount', 1)
    return 1
    """
    _RELEASE = """
    local count = redis.call('HGET', KEYS[1], 'resourceCount')
    if count and tonumber(count) > 0 then redis.call('HINCRBY', KEYS[1], 'resourceCount', -1) end
    return 1
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        super().__init__()
        self._client = client
        self._prefix = prefix.rstrip(":")
        self._reserve = client.register_script(self._RESERVE)
        self._release = client.register_script(self._RELEASE)
        self._outbox: asyncio.Queue[tuple[str, ContextEvent]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def _key(self, context_id: str) -> str:
        return f"{self._prefix}:context:{context_id}"

    def _channel(self, context_id: str) -> str:
        return f"{self._prefix}:context-events:{context_id}"

    def _closed_key(self, context_id: str) -> str:
        return f"{self._prefix}:context-closed:{context_id}"

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_events()),
            asyncio.create_task(self._receive_events()),
        ]

    async def open(self) -> str:
        context_id = new_context_id()
        await self._client.hset(self._key(context_id), "resourceCount", 0)
        return context_id

    async def close(self, context_id: str) -> None:
        if not await self._client.delete(self._key(context_id)):
            raise UnknownContextError(context_id)
        await self._client.set(self._closed_key(context_id), 1, ex=CLOSED_TTL_SECONDS)
        self._emit(context_id, ContextEvent("contextClosed", {}))

    async def was_closed(self, context_id: str) -> bool:
        return bool(await self._client.exists(self._closed_key(context_id)))

    async def resource_count(self, context_id: str) -> int | None:
        count = await self._client.hget(self._key(context_id), "resourceCount")
        return None if count is None else int(count)

    async def reserve(self, context_id: str, limit: int | None) -> None:
        result = await self._reserve(
            keys=[self._key(context_id)], args=["" if limit is None else limit]
        )
        if result == -1:
            raise UnknownContextError(context_id)
        if result == 0:
            raise QuotaExceededError(f"Upload context {context_id} already holds {limit} resources")

    async def release(self, context_id: str) -> None:
        await self._release(keys=[self._key(context_id)])

    def _emit(self, context_id: str, event: ContextEvent) -> None:
        self._outbox.put_nowait((context_id, event))

    async def _publish_events(self) -> None:
        while True:
            context_id, event = await self._outbox.get()
            payload = json.dumps({"kind": event.kind, "data": event.data})
            for _attempt in range(100):  # ride out a short Redis outage, then drop the event
                try:
                    await self._client.publish(self._channel(context_id), payload)
                    break
                except (RedisError, ConnectionError) as exc:
                    logger.warning("publishing a context event failed: %s", exc)
                    await asyncio.sleep(0.1)

    async def _receive_events(self) -> None:
        prefix = self._channel("")
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(f"{prefix}*")
                async for message in pubsub.listen():
                    if message["type"] != "pmessage":
                        continue
                    parsed = cast(dict[str, Any], json.loads(message["data"]))
                    event = ContextEvent(parsed["kind"], parsed["data"])
                    self._deliver(str(message["channel"])[len(prefix) :], event)
            except (RedisError, ConnectionError) as exc:
                logger.warning("context events connection lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


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
