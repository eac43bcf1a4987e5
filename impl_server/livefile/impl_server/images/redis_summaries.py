"""The BlurHash summaries computed by every worker, shared through Redis (``--redis-url``).

A module of its own so that a server without Redis never imports its client (about a second of
CPU at every start).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livefile.impl_server.images.convert import ImageSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisSummaries:
    """Where the summaries computed by every worker are shared."""

    client: aioredis.Redis
    prefix: str = "livefile"
    ttl: float = 7 * 24 * 3600.0  # seconds; 0 = kept for ever

    def key(self, key: str) -> str:
        return f"{self.prefix.rstrip(':')}:blurhash:{key}"

    async def get(self, key: str) -> ImageSummary | None:
        """The summary shared under ``key``; None when there is none, or Redis failed."""
        try:
            value = await self.client.get(self.key(key))
        except RedisError as exc:  # a cache: computing instead is slower, not wrong
            logger.warning("BlurHash cache read from Redis failed: %s", exc)
            return None
        if value is None:
            return None
        try:
            data = json.loads(value)
            return ImageSummary(int(data["width"]), int(data["height"]), str(data["blurhash"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, key: str, summary: ImageSummary) -> None:
        value = json.dumps(
            {"width": summary.width, "height": summary.height, "blurhash": summary.blurhash}
        )
        try:
            await self.client.set(
                self.key(key), value, ex=max(1, round(self.ttl)) if self.ttl > 0 else None
            )
        except RedisError as exc:
            logger.warning("BlurHash cache write to Redis failed: %s", exc)
