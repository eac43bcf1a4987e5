"""The download client against scripted servers: the ends of a connection that a well-behaved
server rarely produces on demand — drops in the middle of a request, silence, slow replies,
protocol violations — and how the client closes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from livefile.api import (
    ConnectionLostError,
    LivefileTimeoutError,
    ProtocolError,
    ServerError,
)
from livefile.client_download import AsyncDownloadClient
from tests.support.server import free_port

RESOURCE = "ab" * 16
Script = Callable[[ServerConnection], Awaitable[None]]


def status(transfer_status: str = "IN_PROGRESS", size: int = 100) -> str:
    return json.dumps(
        {
            "@": "StatusChanged",
            "resourceStatus": {"transferStatus": transfer_status, "currentSize": size},
        }
    )


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    """A WebSocket server running ``script`` for each connection; yields the reference."""
    port = free_port()
    async with serve(script, "127.0.0.1", port, compression=None):
        yield f"ws://127.0.0.1:{port}/ws/streaming/download/{RESOURCE}"


async def next_request(ws: ServerConnection) -> dict[str, object]:
    request: dict[str, object] = json.loads(await ws.recv())
    return request


async def test_a_dropped_connection_fails_every_pending_call_with_connection_lost() -> None:
    async def drop_on_request(ws: ServerConnection) -> None:
        await ws.send(status())
        await next_request(ws)
        ws.transport.abort()

    async with (
        scripted(drop_on_request) as reference,
        AsyncDownloadClient(reference, timeout=5) as download,
    ):
        waiting = asyncio.create_task(download.wait_for_end())
        with pytest.raises(ConnectionLostError, match="lost"):
            await download.read(0, 10)
        with pytest.raises(ConnectionLostError):
            await waiting
        with pytest.raises(ConnectionLostError):  # and every later call, at once
            await download.read(0, 10)


async def test_a_server_shutdown_fails_pending_calls_with_its_close_reason() -> None:
    async def shut_down_on_request(ws: ServerConnection) -> None:
        await ws.send(status())
        await next_request(ws)
        await ws.close(1001, "Server shutdown")

    async with (
        scripted(shut_down_on_request) as reference,
        AsyncDownloadClient(reference, timeout=5) as download,
    ):
        with pytest.raises(ServerError, match="1001: Server shutdown"):
            await download.read(0, 10)


async def test_a_server_that_never_sends_a_status_times_out_on_connect() -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with scripted(silent) as reference:
        with pytest.raises(LivefileTimeoutError, match="no status"):
            async with AsyncDownloadClient(reference, timeout=0.3):
                pass


async def test_a_request_without_reply_times_out() -> None:
    async def never_answers(ws: ServerConnection) -> None:
        await ws.send(status())
        await ws.wait_closed()

    async with (
        scripted(never_answers) as reference,
        AsyncDownloadClient(reference, timeout=0.3) as download,
    ):
        with pytest.raises(LivefileTimeoutError, match="no reply"):
            await download.read(0, 10)


async def test_a_slow_reply_that_keeps_coming_does_not_time_out() -> None:
    async def trickles_the_reply(ws: ServerConnection) -> None:
        await ws.send(status())
        await next_request(ws)
        for piece in (b"ab", b"cd", b"ef", b"gh", b"ij"):
            await asyncio.sleep(0.1)  # pacing: the whole reply takes longer than the timeout
            await ws.send(piece)
            await ws.send(status(size=100 + len(piece)))  # statuses between data messages
        await ws.wait_closed()

    async with (
        scripted(trickles_the_reply) as reference,
        AsyncDownloadClient(reference, timeout=0.3) as download,
    ):
        assert await download.read(0, 10) == b"abcdefghij"


async def test_a_server_breaking_the_protocol_gets_closed_with_1002() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def too_many_bytes(ws: ServerConnection) -> None:
        await ws.send(status())
        await next_request(ws)
        await ws.send(b"more than two bytes")
        with suppress(ConnectionClosed):
            await ws.recv()
        closed.set_result((ws.close_code, ws.close_reason))

    async with (
        scripted(too_many_bytes) as reference,
        AsyncDownloadClient(reference, timeout=5) as download,
    ):
        with pytest.raises(ProtocolError, match="19 bytes for a request of 2"):
            await download.read(0, 2)
        code, reason = await asyncio.wait_for(closed, 5)
    assert code == 1002
    assert reason is not None
    assert "19 bytes" in reason


async def test_closing_the_client_sends_1000_client_session_closed() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def record_close(ws: ServerConnection) -> None:
        await ws.send(status())
        await ws.wait_closed()
        closed.set_result((ws.close_code, ws.close_reason))

    async with scripted(record_close) as reference:
        async with AsyncDownloadClient(reference, timeout=5):
            pass
        assert await asyncio.wait_for(closed, 5) == (1000, "Client Session closed")


async def test_nobody_listening_raises_connection_lost() -> None:
    reference = f"ws://127.0.0.1:{free_port()}/ws/streaming/download/{RESOURCE}"
    with pytest.raises(ConnectionLostError, match="Cannot connect"):
        async with AsyncDownloadClient(reference, timeout=5):
            pass
