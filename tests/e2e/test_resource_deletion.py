"""DELETE /resources/{id} against a real server: watchers over WebSocket, SSE and HTTP follow
get FAILED ``deleted`` and are closed, the uploader is stopped, the files go, later requests get
410 while the tombstone is kept and 404 after (who may delete: test_lifecycle_access.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import urllib.request
import zipfile
from typing import Any

from tests.conftest import ServerFactory
from tests.support.lifecycle import EventStream, Follower, call, resource_files
from tests.support.server import LivefileProcess
from tests.support.wire import (
    STATUS_WAIT,
    open_ws,
    receive_json,
    start_upload,
    status_where,
    upload,
    wait_closed,
)

ZIP = {"filename": "project.zip", "mimeType": "application/zip"}
TEXT = {"filename": "build.log", "mimeType": "text/plain", "supportsLineAccess": True}


def call_bytes(url: str) -> tuple[int, int]:
    """Status and body length of a GET."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, len(response.read())


async def wait_in_thread(event: Any) -> None:
    assert await asyncio.to_thread(event.wait, STATUS_WAIT)


async def test_deleting_a_running_upload_fails_its_watchers_stops_the_uploader_and_removes_it(
    server: LivefileProcess,
) -> None:
    data_dir = server.data_dir
    assert data_dir is not None
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as uploader:
        resource_id = await start_upload(uploader, TEXT)
        await uploader.send(b"line one\nline two\n")
        download = f"{server.ws_url}/ws/streaming/download/{resource_id}"
        async with open_ws(download) as watcher:
            await status_where(watcher, currentSize=18)
            events = EventStream(f"{server.http_url}/resources/{resource_id}/events")
            follower = Follower(f"{server.http_url}/resources/{resource_id}/content?follow=true")
            await wait_in_thread(events.opened)
            await wait_in_thread(follower.started)
            assert len(resource_files(data_dir, resource_id)) == 3  # bytes, line index, record

            status, _ = await asyncio.to_thread(
                call, f"{server.http_url}/resources/{resource_id}", "DELETE"
            )
            assert status == 204

            last = await status_where(watcher, transferStatus="FAILED")
            assert last["error"]["code"] == "deleted"
            assert last["currentSize"] == 18
            assert await wait_closed(watcher) == (
                1008,
                "Resource deleted: deleted through DELETE /resources/{id}",
            )
        code, reason = await wait_closed(uploader)
    assert code == 1008
    assert str(reason).startswith("Resource deleted: ")
    await wait_in_thread(events.ended)
    assert events.statuses[-1]["transferStatus"] == "FAILED"
    assert events.statuses[-1]["error"]["code"] == "deleted"
    await wait_in_thread(follower.ended)
    assert follower.cut  # dropped before its end: no client takes it for the whole file
    assert resource_files(data_dir, resource_id) == []
    for path in ("", "/content", "/lines", "/events"):
        assert call(f"{server.http_url}/resources/{resource_id}{path}")[0] == 410
    assert call(f"{server.http_url}/resources/{resource_id}/repack", "POST")[0] == 410


async def test_a_deleted_resource_is_gone_while_its_tombstone_is_kept_then_unknown(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    data_dir = server.data_dir
    assert data_dir is not None
    resource_id = await upload(server.ws_url, os.urandom(5000))
    assert len(resource_files(data_dir, resource_id)) == 2  # bytes and record
    content = f"{server.http_url}/resources/{resource_id}/content"
    for _ in range(2):  # the second from the fast path's cache of finished files
        assert call_bytes(content) == (200, 5000)
    download = f"{server.ws_url}/ws/streaming/download/{resource_id}"
    async with open_ws(download) as watcher:  # a finished resource, watched
        await status_where(watcher, transferStatus="COMPLETED")
        assert call(f"{server.http_url}/resources/{resource_id}", "DELETE")[0] == 204
        last = await status_where(watcher, transferStatus="FAILED")
        assert last["error"]["code"] == "deleted"
        assert (await wait_closed(watcher))[0] == 1008
    assert resource_files(data_dir, resource_id) == []

    gone = (410, {"detail": "Resource deleted"})
    assert call(f"{server.http_url}/resources/{resource_id}") == gone
    assert call(content) == gone  # the cache forgot it
    assert call(f"{server.http_url}/resources/{resource_id}", "DELETE")[0] == 410
    async with open_ws(download) as late:
        error = await asyncio.wait_for(receive_json(late), STATUS_WAIT)
        assert (error["@"], error["code"]) == ("Error", "GONE")
        assert await wait_closed(late) == (1008, "Resource deleted")

    server.stop()  # the same data, with tombstones kept no longer
    again = start_server("--tombstone-seconds", "0", data_dir=data_dir)
    assert call(f"{again.http_url}/resources/{resource_id}")[0] == 404
    assert call(f"{again.http_url}/resources/{resource_id}/content")[0] == 404


async def test_resources_derived_from_a_deleted_one_stay_and_still_name_it(
    server: LivefileProcess,
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello\n")
    source_id = await upload(server.ws_url, buffer.getvalue())
    status, started = call(f"{server.http_url}/resources/{source_id}/repack", "POST")
    assert status == 202
    derived = f"{server.ws_url}/ws/streaming/download/{started['id']}"
    async with open_ws(derived) as watcher:
        await status_where(watcher, transferStatus="COMPLETED")
    assert call(f"{server.http_url}/resources/{source_id}", "DELETE")[0] == 204

    status, info = call(f"{server.http_url}/resources/{started['id']}")
    assert status == 200
    assert info["sources"] == [source_id]
    assert info["status"]["transferStatus"] == "COMPLETED"


async def test_a_repack_whose_source_is_deleted_while_it_arrives_fails(
    server: LivefileProcess,
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as uploader:
        await uploader.send(json.dumps({"@": "StartUpload", "metadata": ZIP, "repack": True}))
        ready = await asyncio.wait_for(receive_json(uploader), STATUS_WAIT)
        (derived,) = ready["derived"]
        await uploader.send(b"PK\x03\x04" + b"\0" * 100)
        async with open_ws(f"{server.ws_url}/ws/streaming/download/{derived['id']}") as watcher:
            await status_where(watcher, transferStatus="IN_PROGRESS")
            url = f"{server.http_url}/resources/{ready['resourceId']}"
            assert (await asyncio.to_thread(call, url, "DELETE"))[0] == 204
            failed = await status_where(watcher, transferStatus="FAILED")
    assert failed["error"]["code"] == "source_failed"
