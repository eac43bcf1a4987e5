"""Limits: silent and idle uploads, slow consumers and connection counts are cut off with a
reason, and nobody else is held up."""

from __future__ import annotations

import asyncio
import json
import os

from websockets.asyncio.client import connect

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.wire import LIVEFILE, get_json, open_ws, start_upload, wait_closed

WAIT = 30.0


async def test_connection_that_never_sends_start_upload_is_closed(
    start_server: ServerFactory,
) -> None:
    server = start_server("--start-timeout", "0.5")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        assert await asyncio.wait_for(wait_closed(ws), WAIT) == (
            1008, "No StartUpload for 0.5 s: connection closed",
        )  # fmt: skip


async def test_idle_upload_fails_with_its_bytes_and_a_reason(start_server: ServerFactory) -> None:
    server = start_server("--upload-idle-timeout", "0.5")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws)
        await ws.send(b"stalled")
        assert await asyncio.wait_for(wait_closed(ws), WAIT) == (
            1008, "No data for 0.5 s: connection closed",
        )  # fmt: skip
    _, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert info["status"]["transferStatus"] == "FAILED"
    assert info["status"]["currentSize"] == 7


async def test_slow_consumer_is_dropped_without_slowing_the_uploader_or_others(
    start_server: ServerFactory,
) -> None:
    server = start_server("--send-timeout", "1")
    data = os.urandom(30_000_000)
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="big.bin", mime_type="application/octet-stream")
        await upload.write(data[:20_000_000])
        async with AsyncDownloadClient(upload.reference, timeout=WAIT) as reader:
            await reader.wait_for_status(lambda status: status.current_size == 20_000_000)
        # A client that asks for 20 MB and then reads nothing: its receive queue and socket
        # buffers fill up, and the server's sends to it block.
        slow = await connect(
            upload.reference,
            compression=None,
            max_size=None,
            max_queue=1,
            subprotocols=LIVEFILE,
        )
        await slow.send(
            json.dumps({"@": "RequestChunk", "startOffset": 0, "endOffset": 20_000_000})
        )
        async with AsyncDownloadClient(upload.reference, timeout=WAIT) as other:
            await upload.write(data[20_000_000:])
            result = await upload.finish()
            assert await other.read(29_000_000, 30_000_000) == data[29_000_000:]
        # The server gave up on the client that reads nothing, with a reason in its log; the
        # uploader and the other reader above were never held up by it.
        assert await asyncio.to_thread(server.wait_for_log, "disconnecting a slow consumer")
        slow.transport.abort()
    assert result.size == 30_000_000


async def test_uploads_over_the_limit_are_told_to_try_again_later(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-uploads", "1")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as first:
        await start_upload(first)
        async with open_ws(f"{server.ws_url}/ws/streaming/upload") as second:
            assert await wait_closed(second) == (
                1013, "Too many uploads on this server (limit 1)",
            )  # fmt: skip
