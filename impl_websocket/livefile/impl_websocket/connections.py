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
        self.closing = False

    @contextlib.asynccontextmanager
    async def track(self, websocket: WebSocket) -> AsyncIterator[None]:
        self._open[websocket] = asyncio.current_task()
        try:
            yield
        finally:
            self._open.pop(websocket, None)

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
