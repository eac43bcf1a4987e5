"""Lifecycles over real sockets: checkpoints, watchers, dropped clients, kills and restarts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import threading
from pathlib import Path

from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import (
    META,
    finish_upload,
    get_json,
    next_status,
    open_ws,
    plain_status,
    read_chunk,
    read_context_events,
    receive_json,
    start_upload,
    status_where,
    wait_closed,
)

WAIT = 10.0  # generous bound for events on a loaded CI machine; never a synchronisation sleep


async def test_quiet_uploaders_bytes_are_published_without_further_writes(
    server: LivefileProcess,
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up)
        async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as watcher:
            assert (await next_status(watcher))["transferStatus"] == "INITIATED"
            await up.send(b"first")
            await status_where(watcher, currentSize=5)
            await up.send(b"second")  # within the interval: published by the timer
            await status_where(watcher, currentSize=11)
            assert await read_chunk(watcher, 0, 11) == b"firstsecond"
            await finish_upload(up, b"firstsecond")
            await status_where(watcher, transferStatus="COMPLETED", currentSize=11)


async def test_watchers_see_statuses_in_order_and_terminal_is_final(
    server: LivefileProcess,
) -> None:
    data = os.urandom(2_000_000)
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up)
        uri = f"{server.ws_url}/ws/streaming/download/{resource_id}"
        async with open_ws(uri) as early:
            for offset in range(0, 1_000_000, 50_000):
                await up.send(data[offset : offset + 50_000])
            async with open_ws(uri) as late:
                for offset in range(1_000_000, len(data), 50_000):
                    await up.send(data[offset : offset + 50_000])
                await finish_upload(up, data)
                for watcher in (early, late):
                    seen = [await next_status(watcher)]
                    while seen[-1]["transferStatus"] not in ("COMPLETED", "FAILED"):
                        seen.append(await next_status(watcher))
                    sizes = [status["currentSize"] for status in seen]
                    assert sizes == sorted(sizes)
                    assert plain_status(seen[-1]) == {
                        "transferStatus": "COMPLETED",
                        "currentSize": 2_000_000,
                        "numberOfLines": None,
                    }
                    assert await read_chunk(watcher, 0, len(data)) == data
            # A watcher connecting after the end gets the terminal status and nothing else.
            async with open_ws(uri) as after:
                assert (await next_status(after))["transferStatus"] == "COMPLETED"


async def test_dropped_client_connection_fails_the_resource_with_bytes_kept(
    server: LivefileProcess,
) -> None:
    up = await open_ws(f"{server.ws_url}/ws/streaming/upload")
    resource_id = await start_upload(up)
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as watcher:
        await up.send(b"kept bytes")
        await status_where(watcher, currentSize=10)
        up.transport.abort()  # TCP reset, no close frame
        failed = await status_where(watcher, transferStatus="FAILED")
        assert failed["currentSize"] == 10
        assert await read_chunk(watcher, 0, 10) == b"kept bytes"


async def test_killed_server_leaves_a_failed_resource_with_bytes_after_restart(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "restart"
    first = start_server(data_dir=data_dir)
    up = await open_ws(f"{first.ws_url}/ws/streaming/upload")
    resource_id = await start_upload(up)
    async with open_ws(f"{first.ws_url}/ws/streaming/download/{resource_id}") as watcher:
        await up.send(b"x" * 70_000)
        await status_where(watcher, currentSize=70_000)
        first.kill()
    up.transport.abort()
    second = start_server(data_dir=data_dir)
    _, info = get_json(f"{second.http_url}/resources/{resource_id}")
    assert plain_status(info["status"]) == {
        "transferStatus": "FAILED",
        "currentSize": 70_000,
        "numberOfLines": None,
    }
    async with open_ws(f"{second.ws_url}/ws/streaming/download/{resource_id}") as watcher:
        assert (await next_status(watcher))["transferStatus"] == "FAILED"
        assert await read_chunk(watcher, 0, 70_000) == b"x" * 70_000


async def test_sigterm_closes_connections_1001_and_leaves_truthful_states(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "sigterm"
    server = start_server(data_dir=data_dir)
    up = await open_ws(f"{server.ws_url}/ws/streaming/upload")
    resource_id = await start_upload(up)
    watcher = await open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}")
    await up.send(b"abc")
    await status_where(watcher, currentSize=3)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    upload_close, watcher_close = await asyncio.gather(wait_closed(up), wait_closed(watcher))
    assert upload_close == (1001, "Server shutdown")
    assert watcher_close == (1001, "Server shutdown")
    # uvicorn re-raises the signal after a graceful shutdown, as a service manager expects.
    assert server.stop() in (0, -signal.SIGTERM)
    restarted = start_server(data_dir=data_dir)
    _, info = get_json(f"{restarted.http_url}/resources/{resource_id}")
    assert info["status"]["transferStatus"] == "FAILED"
    assert info["status"]["currentSize"] == 3


async def test_zero_byte_upload_is_completed_with_size_zero(server: LivefileProcess) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up)
        ack = await finish_upload(up, b"")
        assert await wait_closed(up) == (1000, "Upload completed")
    assert ack["size"] == 0
    assert ack["checksum"] == "d41d8cd98f00b204e9800998ecf8427e"
    _, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert plain_status(info["status"]) == {
        "transferStatus": "COMPLETED",
        "currentSize": 0,
        "numberOfLines": None,
    }


async def test_reference_is_absolute_as_seen_by_the_client(server: LivefileProcess) -> None:
    async with open_ws(f"ws://localhost:{server.port}/ws/streaming/upload") as up:
        await up.send(
            json.dumps({"@": "StartUpload", "metadata": {"filename": "a", "mimeType": "a/b"}})
        )
        ready = await receive_json(up)
    assert ready["reference"]["uri"] == (
        f"ws://localhost:{server.port}/ws/streaming/download/{ready['resourceId']}"
    )


async def test_context_event_stream_reports_creation_statuses_and_close(
    server: LivefileProcess,
) -> None:
    _, context = get_json(f"{server.http_url}/contexts", method="POST")
    context_id = context["contextId"]
    subscribed = threading.Event()
    events_url = f"{server.http_url}/contexts/{context_id}/events"
    reader = asyncio.ensure_future(asyncio.to_thread(read_context_events, events_url, subscribed))
    assert await asyncio.to_thread(subscribed.wait, WAIT)
    async with open_ws(
        f"{server.ws_url}/ws/streaming/upload?streamingUploadContextId={context_id}"
    ) as up:
        resource_id = await start_upload(up)
        await up.send(b"hello")
        await finish_upload(up, b"hello")
    _, described = get_json(f"{server.http_url}/contexts/{context_id}")
    assert described == {"contextId": context_id, "resourceCount": 1}
    status, _ = get_json(f"{server.http_url}/contexts/{context_id}", method="DELETE")
    assert status == 204
    events = await asyncio.wait_for(reader, WAIT)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "resourceCreated"
    assert events[0][1]["resourceId"] == resource_id
    assert kinds[-1] == "contextClosed"
    statuses = [data["resourceStatus"] for kind, data in events if kind == "statusChanged"]
    assert plain_status(statuses[-1]) == {
        "transferStatus": "COMPLETED",
        "currentSize": 5,
        "numberOfLines": None,
    }
    status, _ = get_json(f"{server.http_url}/contexts/{context_id}")
    assert status == 404


async def test_an_upload_ending_within_one_interval_hears_only_its_acknowledgement(
    start_server: ServerFactory,
) -> None:
    server = start_server("--checkpoint-interval", "30")
    data = b"quick\n"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        await ws.send(json.dumps({"@": "StartUpload", "metadata": META}))
        await ws.send(data)
        await ws.send(json.dumps({"@": "FinishUpload", "checksum": hashlib.md5(data).hexdigest()}))
        kinds = [json.loads(message)["@"] async for message in ws]
    assert kinds == ["ReadyForUpload", "UploadAcknowledged"]


async def test_an_uploader_hears_its_checkpoints_once_an_interval_has_passed(
    start_server: ServerFactory,
) -> None:
    server = start_server("--checkpoint-interval", "0.2")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        await start_upload(ws)
        await ws.send(b"first")
        status = await status_where(ws, currentSize=5)
        assert status["transferStatus"] == "IN_PROGRESS"
