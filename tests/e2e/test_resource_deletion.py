"""DELETE /resources/{id} against a real server: watchers over WebSocket, SSE and HTTP follow
get FAILED ``deleted`` and are closed, the uploader is stopped, the files go, later requests get
410 while the tombstone is kept and 404 after; only admins and the uploader's own token (while
its upload runs) may delete."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import jwt

from tests.conftest import ServerFactory
from tests.support.lifecycle import EventStream, Follower, call, resource_files
from tests.support.server import LivefileProcess
from tests.support.wire import (
    STATUS_WAIT,
    finish_upload,
    open_ws,
    receive_json,
    start_upload,
    status_where,
    upload,
    wait_closed,
)

TEXT = {"filename": "build.log", "mimeType": "text/plain", "supportsLineAccess": True}
SECRET = "livefile-test-secret-of-32-bytes!"


def mint(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"aud": "livefile", "iat": now, "exp": now + 86400, **claims}, SECRET, algorithm="HS256"
    )


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


async def test_a_deleted_resource_is_gone_while_its_tombstone_is_kept_then_unknown(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    data_dir = server.data_dir
    assert data_dir is not None
    resource_id = await upload(server.ws_url, os.urandom(5000))
    assert len(resource_files(data_dir, resource_id)) == 2  # bytes and record
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
    assert call(f"{server.http_url}/resources/{resource_id}", "DELETE")[0] == 410
    async with open_ws(download) as late:
        error = await asyncio.wait_for(receive_json(late), STATUS_WAIT)
        assert (error["@"], error["code"]) == ("Error", "GONE")
        assert await wait_closed(late) == (1008, "Resource deleted")

    server.stop()  # the same data, with tombstones kept no longer
    again = start_server("--tombstone-seconds", "0", data_dir=data_dir)
    assert call(f"{again.http_url}/resources/{resource_id}")[0] == 404
    assert call(f"{again.http_url}/resources/{resource_id}/content")[0] == 404


async def test_only_admins_and_the_running_uploads_own_token_may_delete(
    start_server: ServerFactory,
) -> None:
    server = start_server(env={"LIVEFILE_JWT_SECRET": SECRET})
    own, other = mint(scope="upload", sub="alice"), mint(scope="upload", sub="bob")
    admin = mint(scope="admin")
    resources = f"{server.http_url}/resources"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload?token={own}") as uploader:
        resource_id = await start_upload(uploader)
        reader = mint(scope="download", resource=resource_id)
        for token in (other, reader):
            status, body = call(f"{resources}/{resource_id}", "DELETE", token)
            assert status == 403
            assert body["detail"].startswith("Forbidden: deleting a resource needs admin scope")
        assert call(f"{resources}/{resource_id}", "DELETE", own)[0] == 204
        code, reason = await wait_closed(uploader)
        assert code == 1008
        assert str(reason).startswith("Resource deleted")

    data = b"finished\n"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload?token={own}") as uploader:
        finished_id = await start_upload(uploader)
        await uploader.send(data)
        assert (await finish_upload(uploader, data))["size"] == len(data)
    assert call(f"{resources}/{finished_id}", "DELETE", own)[0] == 403  # no longer running
    assert call(f"{resources}/{finished_id}", "DELETE", admin)[0] == 204
    assert call(f"{resources}/{'0' * 32}", "DELETE", other)[0] == 403  # the same refusal
    assert call(f"{resources}/{'0' * 32}", "DELETE", admin)[0] == 404
