"""Idle upload connections kept open for the next upload to the same server.

An upload that asked ``keepOpen`` gives its connection back after a successful
``UploadAcknowledged``; the next upload takes the most recently returned one (LIFO: the freshest
connection is the least likely to have been closed meanwhile) instead of paying for a TCP
connection and a WebSocket handshake. At most ``max_idle`` connections wait, none longer than
``max_idle_time`` seconds: a timer closes older ones, so that they do not hold a slot on the
server until its start timeout. A connection the server closed meanwhile is discarded when
found; one that dies just as it is reused is the caller's to retry (see ``AsyncUpload.start``).
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from livefile.api import close_codes
from livefile.client_upload.connection import close_quietly, open_connection

DEFAULT_MAX_IDLE = 8
DEFAULT_MAX_IDLE_TIME = 10.0


class ConnectionPool:
    """The idle upload connections of one client (to one URI, with one token)."""

    def __init__(
        self, max_idle: int = DEFAULT_MAX_IDLE, max_idle_time: float = DEFAULT_MAX_IDLE_TIME
    ) -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle_connections must not be negative, not {max_idle}")
        if max_idle_time <= 0:
            raise ValueError(f"idle_connection_timeout must be positive, not {max_idle_time}")
        self.max_idle = max_idle
        self.max_idle_time = max_idle_time
        self._idle: list[tuple[ClientConnection, float]] = []  # (connection, idle since), LIFO
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """Whether connections are kept at all (uploads then ask the server ``keepOpen``)."""
        return self.max_idle > 0

    @property
    def idle(self) -> int:
        """How many connections wait for an upload now."""
        return len(self._idle)

    async def acquire(
        self, uri: str, timeout: float, token: str | None
    ) -> tuple[ClientConnection, bool]:
        """An open connection to ``uri``: an idle one (``True``) or a new one (``False``)."""
        self._adopt_loop()
        now = asyncio.get_running_loop().time()
        while self._idle:
            ws, since = self._idle.pop()
            if ws.state is State.OPEN and now - since < self.max_idle_time:
                return ws, True
            self._close_later(ws)
        return await open_connection(uri, timeout, token), False

    async def release(self, ws: ClientConnection) -> None:
        """Keep ``ws`` (its upload was acknowledged and it stays open) for the next upload."""
        self._adopt_loop()
        if not self.enabled or ws.state is not State.OPEN:
            await close_quietly(ws, close_codes.NORMAL, close_codes.REASON_CLIENT_CLOSED)
            return
        loop = asyncio.get_running_loop()
        self._idle.append((ws, loop.time()))
        while len(self._idle) > self.max_idle:
            oldest, _ = self._idle.pop(0)
            self._close_later(oldest)
        if self._timer is None:
            self._timer = loop.call_later(self.max_idle_time, self._prune)

    async def aclose(self) -> None:
        """Close every idle connection (with 1000) and wait until they are closed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self.abandon()
            return
        idle, self._idle = self._idle, []
        for ws, _ in idle:
            self._close_later(ws)
        if self._closing:
            await asyncio.wait(set(self._closing))

    def abandon(self) -> None:
        """Drop every idle connection without a close handshake; safe from any thread and
        after the connections' event loop has stopped (the client was garbage-collected, or is
        used from another event loop now)."""
        idle, self._idle = self._idle, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        for ws, _ in idle:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(ws.transport.abort)

    def _adopt_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Connections belong to the loop that opened them: another loop cannot use them.
            self.abandon()
            self._loop = loop

    def _prune(self) -> None:
        """Close the connections idle for ``max_idle_time``; run again while any remain."""
        assert self._loop is not None
        self._timer = None
        cutoff = self._loop.time() - self.max_idle_time
        keep: list[tuple[ClientConnection, float]] = []
        for ws, since in self._idle:
            if since <= cutoff or ws.state is not State.OPEN:
                self._close_later(ws)
            else:
                keep.append((ws, since))
        self._idle = keep
        if keep:
            delay = keep[0][1] + self.max_idle_time - self._loop.time()
            self._timer = self._loop.call_later(max(delay, 0.0), self._prune)

    def _close_later(self, ws: ClientConnection) -> None:
        """Close ``ws`` in the background (the close handshake is a round trip nobody needs to
        wait for, except ``aclose``)."""
        if ws.state is State.CLOSED:
            return
        task = asyncio.get_running_loop().create_task(
            close_quietly(ws, close_codes.NORMAL, close_codes.REASON_CLIENT_CLOSED),
            name="livefile-close-idle-upload-connection",
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
