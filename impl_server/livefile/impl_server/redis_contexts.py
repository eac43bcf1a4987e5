"""Upload contexts kept in Redis (``--redis-url``), their events carried over pub/sub, so that
a context opened through one process takes uploads and feeds listeners on every other.

A module of its own so that a server without Redis never imports its client (about a second of
CPU at every start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livefile.api.errors import QuotaExceededError
from livefile.api.model import new_context_id
from livefile.impl_server.contexts import (
    CLOSED_TTL_SECONDS,
    ContextEvent,
    UnknownContextError,
    UploadContexts,
)

logger = logging.getLogger(__name__)


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
