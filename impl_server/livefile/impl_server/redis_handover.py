"""Handing a resumable WebSocket upload over between processes (several workers, Redis).

A ``ResumeUpload`` may reach a process other than the one whose connection still holds the
upload (a half-open TCP connection it has not noticed yet). That process asks on
``P:handovers`` (``request_release``); the holder hears it, supersedes its connection — which
parks the upload, releasing it — and answers ``released``. The asking process then reopens it.
A notice missed costs time, never data: the asking one waits a bounded time, then tries anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livefile.impl_server.redis_backend import RedisFeed, RedisStore

RELEASE = "release"  # asks the holder to let go
RELEASED = "released"  # the holder has let go: the upload may be reopened


class RedisHandoverFeed(RedisFeed):
    """``on_release``: another process asks for the upload (stop the connection holding it
    here, if one does); ``on_released``: another process let go of one."""

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store, store.keys.handovers)
        self._on_release: Callable[[str], None] | None = None
        self._on_released: Callable[[str], None] | None = None

    async def listen(
        self, on_release: Callable[[str], None], on_released: Callable[[str], None]
    ) -> None:
        self._on_release, self._on_released = on_release, on_released
        await self.start()

    async def request_release(self, resource_id: str) -> None:
        await self.send({"kind": RELEASE, "id": resource_id})

    async def announce_released(self, resource_id: str) -> None:
        await self.send({"kind": RELEASED, "id": resource_id})

    async def heard(self, notice: dict[str, Any]) -> None:
        handle = self._on_release if notice["kind"] == RELEASE else self._on_released
        if handle is not None:
            handle(str(notice["id"]))
