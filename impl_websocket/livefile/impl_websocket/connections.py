"""The open WebSocket connections of this process, so that shutdown can close them with 1001."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketState

from livefile.api import close_codes

logger = logging.getLogger(__name__)


class Connections:
    def __init__(self) -> None:
        self._open: dict[WebSocket, asyncio.Task[object] | None] = {}
        self._counts: dict[str, int] = {}
        self.closing = False

    def count(self, kind: str) -> int:
        """How many connections of ``kind`` (``"upload"`` or ``"download"``) are open now."""
        return self._counts.get(kind, 0)

    @contextlib.asynccontextmanager
    async def track(self, websocket: WebSocket, kind: str, limit: int) -> AsyncIterator[bool]:
        """Track an accepted connection; yields False (and closes it with 1013) over ``limit``."""
        if self._counts.get(kind, 0) >= limit:
            await websocket.close(
                close_codes.TRY_AGAIN_LATER, f"Too many {kind}s on this server (limit {limit})"
            )
            yield False
            return
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._open[websocket] = asyncio.current_task()
        try:
            yield True
        finally:
            self._open.pop(websocket, None)
            self._counts[kind] -= 1

    async def close_all(self, grace: float = 5.0) -> None:
        """Close every connection with 1001 and wait (bounded) for their handlers to finish."""
        self.closing = True
        tasks = []
        for websocket, task in list(self._open.items()):
            if websocket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(
                        close_codes.GOING_AWAY, close_codes.REASON_SERVER_SHUTDOWN
                    )
            if task is not None:
                tasks.append(task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)


async def cancel_quietly(task: asyncio.Task[None], grace: float = 1.0) -> None:
    """Cancel a helper task and give it ``grace`` seconds to end. A task blocked in a client
    library that does not honour cancellation promptly (seen with redis-py while Redis
    restarts) must not hold up the connection it serves."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        logger.warning("task %s did not stop within %.1f s", task.get_name(), grace)
