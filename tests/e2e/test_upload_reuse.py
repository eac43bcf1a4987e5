"""Kept-open upload connections (``StartUpload.keepOpen``) on the raw protocol, against a real
server: several complete, independent uploads on one WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.client_upload.watch import WAIT, wait_for_end
from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import (
    META,
    download,
    finish_upload,
    get_json,
    open_ws,
    plain_status,
    receive_json,
    wait_closed,
)


async def start(ws: ClientConnection, keep_open: bool | None = True, name: str = "a.bin") -> str:
    """StartUpload (with ``keepOpen`` unless None); the resource id of ReadyForUpload."""
    message: dict[str, Any] = {"@": "StartUpload", "metadata": {**META, "filename": name}}
    if keep_open is not None:
        message["keepOpen"] = keep_open
    await ws.send(json.dumps(message))
    ready = await receive_json(ws)
    assert ready["@"] == "ReadyForUpload", ready
    return str(ready["resourceId"])


async def until_published(ws: ClientConnection, size: int) -> None:
    """Read the upload's statuses until one says ``size`` bytes are stored and published."""
    while True:
        message = await receive_json(ws)
        assert message["@"] == "StatusChanged", message
        if message["resourceStatus"]["currentSize"] == size:
            return


def resource(server: LivefileProcess, resource_id: str) -> dict[str, Any]:
    status, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert status == 200, info
    return dict(info)


async def test_keep_open_carries_uploads_one_after_another_each_completed(
    server: LivefileProcess,
) -> None:
    files = [os.urandom(10_000), b"", os.urandom(70_000)]
    ids = []
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        for index, data in enumerate(files):
            ids.append(await start(ws, name=f"file-{index}.bin"))
            if data:
                await ws.send(data)
            ack = await finish_upload(ws, data)
            assert ack["size"] == len(data), ack
        # Still open after the last acknowledgement, awaiting the next StartUpload: the
        # client ends it, and nothing becomes FAILED.
        await ws.close(1000, "Client Session closed")
    assert len(set(ids)) == len(files)
    for index, (resource_id, data) in enumerate(zip(ids, files, strict=True)):
        info = resource(server, resource_id)
        assert info["metadata"]["filename"] == f"file-{index}.bin"
        assert plain_status(info["status"]) == {
            "transferStatus": "COMPLETED", "currentSize": len(data), "numberOfLines": None,
        }  # fmt: skip
        assert await download(server.ws_url, resource_id) == data


async def test_without_keep_open_the_server_closes_after_the_acknowledgement(
    server: LivefileProcess,
) -> None:
    for keep_open in (None, False):
        async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
            await start(ws, keep_open=keep_open)
            await ws.send(b"once")
            assert (await finish_upload(ws, b"once"))["size"] == 4
            assert await asyncio.wait_for(wait_closed(ws), WAIT) == (1000, "Upload completed")


async def test_keep_open_must_be_a_boolean(server: LivefileProcess) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        await ws.send(json.dumps({"@": "StartUpload", "metadata": META, "keepOpen": "yes"}))
        code, reason = await asyncio.wait_for(wait_closed(ws), WAIT)
    assert code == 1002
    assert reason is not None
    assert reason.startswith("Invalid StartUpload: keepOpen")


async def test_an_idle_kept_open_connection_is_closed_after_the_start_timeout(
    start_server: ServerFactory,
) -> None:
    server = start_server("--start-timeout", "0.5")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start(ws)
        await ws.send(b"kept")
        await finish_upload(ws, b"kept")
        assert await asyncio.wait_for(wait_closed(ws), WAIT) == (
            1008, "Idle for 0.5 s after the last upload: connection closed",
        )  # fmt: skip
    assert resource(server, resource_id)["status"]["transferStatus"] == "COMPLETED"


async def test_a_drop_during_the_second_upload_fails_only_the_second(
    server: LivefileProcess,
) -> None:
    first, second = os.urandom(20_000), os.urandom(30_000)
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        first_id = await start(ws)
        await ws.send(first)
        await finish_upload(ws, first)
        second_id = await start(ws)
        await ws.send(second)
        await until_published(ws, len(second))
        ws.transport.abort()  # a crashed uploader: no close frame, no FinishUpload
    ended = await wait_for_end(server.ws_url, second_id)
    assert (ended["transferStatus"], ended["currentSize"]) == ("FAILED", len(second))
    assert await download(server.ws_url, second_id) == second
    assert resource(server, first_id)["status"]["transferStatus"] == "COMPLETED"
    assert await download(server.ws_url, first_id) == first


async def test_a_protocol_violation_between_uploads_still_closes_the_connection(
    server: LivefileProcess,
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start(ws)
        await finish_upload(ws, b"")
        await ws.send(b"data before StartUpload")
        assert await asyncio.wait_for(wait_closed(ws), WAIT) == (
            1002, "Unexpected binary data while awaiting StartUpload",
        )  # fmt: skip
    assert resource(server, resource_id)["status"]["transferStatus"] == "COMPLETED"


async def test_every_upload_on_a_kept_open_connection_meets_the_quotas(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-resources-per-context", "1")
    status, context = get_json(f"{server.http_url}/contexts", method="POST")
    assert status == 201
    uri = f"{server.ws_url}/ws/streaming/upload?streamingUploadContextId={context['contextId']}"
    async with open_ws(uri) as ws:
        await start(ws)
        await finish_upload(ws, b"")
        await ws.send(json.dumps({"@": "StartUpload", "metadata": META, "keepOpen": True}))
        code, reason = await asyncio.wait_for(wait_closed(ws), WAIT)
    assert code == 1008
    assert reason is not None
    assert reason.startswith("QuotaExceededException: ")
    status, info = get_json(f"{server.http_url}/contexts/{context['contextId']}")
    assert (status, info["resourceCount"]) == (200, 1)
