"""Uploads and followers that survive interruptions, against real servers: connections cut by
a proxy mid-upload and mid-follow, servers killed (-9) or stopped and started again. Nothing
may be lost or repeated: every check compares the whole content and the end-to-end checksum.
A client that did not ask for resume (step-streaming's dialect included) still FAILS at once;
one that never comes back FAILS ``client_lost`` after the grace period."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUpload, AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.tcp_proxy import CuttingProxy
from tests.support.wire import LIVEFILE as LIVEFILE_DIALECT
from tests.support.wire import (
    STATUS_WAIT,
    crc32c_hex,
    download,
    get_json,
    open_ws,
    receive_json,
    wait_closed,
)

WAIT = 60.0
LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]
PIECE = 64 * 1024
META = {"filename": "build.log", "mimeType": "text/plain", "supportsLineAccess": True}


def text(lines: int, tag: str) -> bytes:
    return b"".join(b"%s line %06d\n" % (tag.encode(), n) for n in range(lines))


async def status_with(ws: ClientConnection, **expected: object) -> dict[str, Any]:
    """Statuses from a raw download connection until one has the expected fields."""
    while True:
        message = await asyncio.wait_for(receive_json(ws), STATUS_WAIT)
        status: dict[str, Any] = message["resourceStatus"]
        if all(status.get(key) == value for key, value in expected.items()):
            return status


async def follow(download: AsyncDownloadClient) -> bytes:
    async with download:
        return b"".join([piece async for piece in download.iter_bytes()])


async def write_in_pieces(upload: AsyncUpload, data: bytes) -> None:
    for offset in range(0, len(data), PIECE):
        await upload.write(data[offset : offset + PIECE])


async def start_raw(ws: ClientConnection, resumable: bool | None) -> dict[str, Any]:
    start: dict[str, Any] = {"@": "StartUpload", "metadata": META, "checksumAlgorithm": "crc32c"}
    if resumable is not None:
        start["resumable"] = resumable
    await ws.send(json.dumps(start))
    ready = await receive_json(ws)
    assert ready["@"] == "ReadyForUpload", ready
    return ready


def resume_message(ready: dict[str, Any]) -> dict[str, Any]:
    return {
        "@": "ResumeUpload",
        "resourceId": ready["resourceId"],
        "resumeToken": ready["resumeToken"],
    }


async def finish_raw(ws: ClientConnection, data: bytes) -> dict[str, Any]:
    """FinishUpload with the CRC-32C of ``data``; the acknowledgement."""
    await ws.send(json.dumps({"@": "FinishUpload", "checksum": crc32c_hex(data)}))
    while (message := await receive_json(ws))["@"] != "UploadAcknowledged":
        pass
    return message


async def send_then_lose(up: ClientConnection, watcher: ClientConnection, data: bytes) -> None:
    """Send ``data``, wait until it is published, then lose the connection (no close frame)."""
    await up.send(data)
    await status_with(watcher, currentSize=len(data))
    up.transport.abort()


@asynccontextmanager
async def watching(ws_url: str, resource_id: str) -> AsyncIterator[ClientConnection]:
    async with open_ws(f"{ws_url}/ws/streaming/download/{resource_id}") as ws:
        yield ws


@contextmanager
def restartable(data_dir: Path, *args: str) -> Iterator[list[LivefileProcess]]:
    """A server started (and, by the test, restarted on the same port); all killed at the end."""
    servers = [LivefileProcess(data_dir, *args).start()]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


def restart(servers: list[LivefileProcess], data_dir: Path, *args: str) -> LivefileProcess:
    server = LivefileProcess(data_dir, *args, port=servers[0].port).start()
    servers.append(server)
    return server


async def test_an_upload_and_its_follower_cut_twice_lose_and_repeat_nothing(
    server: LivefileProcess,
) -> None:
    data = text(30_000, "cut")  # ~0.5 MB
    thirds = [data[: len(data) // 3], data[len(data) // 3 : 2 * len(data) // 3]]
    thirds.append(data[2 * len(data) // 3 :])
    async with (
        CuttingProxy(server.port) as proxy,
        AsyncUploadClient(proxy.ws_url, timeout=WAIT) as client,
    ):
        upload = await client.start(
            filename="cut.log", mime_type="text/plain", supports_line_access=True
        )
        follower = AsyncDownloadClient(upload.reference.replace(server.ws_url, proxy.ws_url))
        following = asyncio.create_task(follow(await follower.connect()))
        async with watching(server.ws_url, upload.resource_id) as watcher:
            for cut, part in enumerate(thirds):
                await write_in_pieces(upload, part)
                if cut < 2:
                    proxy.cut()
                    # The server noticed: the upload waits for its client, still IN_PROGRESS.
                    await status_with(
                        watcher, transferStatus="IN_PROGRESS", stage="waiting_for_client"
                    )
            result = await upload.finish()
        followed = await asyncio.wait_for(following, WAIT)
    assert upload.resumes == 2
    assert follower.reconnects >= 1
    assert result.checksum == crc32c_hex(data)
    assert result.size == len(data)
    assert result.status.number_of_lines == 30_000
    assert followed == data
    assert await download(server.ws_url, upload.resource_id) == data


@pytest.mark.parametrize(
    ("subprotocols", "resumable"),
    [(None, None), (LIVEFILE_DIALECT, None), (LIVEFILE_DIALECT, False)],
    ids=["step-streaming", "livefile-not-asked", "livefile-refused"],
)
async def test_an_upload_that_did_not_ask_to_resume_fails_at_once_when_its_connection_drops(
    server: LivefileProcess, subprotocols: Any, resumable: bool | None
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload", subprotocols) as up:
        ready = await start_raw(up, resumable)
        assert "resumeToken" not in ready
        resource_id = ready["reference"]["uri"].rsplit("/", 1)[1]
        async with watching(server.ws_url, resource_id) as watcher:
            await send_then_lose(up, watcher, b"partial\n")
            failed = await status_with(watcher, transferStatus="FAILED")
    assert failed["currentSize"] == 8
    assert failed["error"]["code"] == "disconnected"


async def test_an_upload_whose_client_never_comes_back_fails_client_lost_after_the_grace(
    start_server: ServerFactory,
) -> None:
    server = start_server("--upload-resume-grace", "1")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        resource_id = ready["resourceId"]
        async with watching(server.ws_url, resource_id) as watcher:
            await send_then_lose(up, watcher, b"partial\n")
            waiting = await status_with(watcher, stage="waiting_for_client")
            failed = await status_with(watcher, transferStatus="FAILED")
    assert waiting["transferStatus"] == "IN_PROGRESS"
    assert failed["currentSize"] == 8
    assert failed["error"]["code"] == "client_lost"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as late:
        await late.send(json.dumps(resume_message(ready)))
        assert await wait_closed(late) == (
            1008,
            f"Cannot resume upload {resource_id}: it FAILED (client_lost)",
        )


async def test_only_the_resume_token_resumes_an_upload(server: LivefileProcess) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        resource_id = ready["resourceId"]
        async with watching(server.ws_url, resource_id) as watcher:
            await send_then_lose(up, watcher, b"first\n")
            await status_with(watcher, stage="waiting_for_client")
            async with open_ws(f"{server.ws_url}/ws/streaming/upload") as thief:
                resume = {"@": "ResumeUpload", "resourceId": resource_id, "resumeToken": "guess"}
                await thief.send(json.dumps(resume))
                assert await wait_closed(thief) == (
                    1008,
                    f"Forbidden: wrong resume token for upload {resource_id}",
                )
            async with open_ws(f"{server.ws_url}/ws/streaming/upload") as again:
                await again.send(json.dumps(resume_message(ready)))
                resumed = await receive_json(again)
                assert resumed == {"@": "UploadResumed", "resourceId": resource_id, "offset": 6}
                await again.send(b"second\n")
                ack = await finish_raw(again, b"first\nsecond\n")
                assert ack["size"] == 13
            await status_with(watcher, transferStatus="COMPLETED", currentSize=13)


async def test_a_resume_supersedes_a_half_open_connection(server: LivefileProcess) -> None:
    async with (
        CuttingProxy(server.port) as proxy,
        open_ws(f"{proxy.ws_url}/ws/streaming/upload") as up,
    ):
        ready = await start_raw(up, True)
        resource_id = ready["resourceId"]
        async with watching(server.ws_url, resource_id) as watcher:
            await up.send(b"first\n")
            await status_with(watcher, currentSize=6)
            proxy.freeze()  # the old connection still looks alive to the server
            async with open_ws(f"{server.ws_url}/ws/streaming/upload") as again:
                await again.send(json.dumps(resume_message(ready)))
                resumed = await receive_json(again)
                await again.send(b"second\n")
                ack = await finish_raw(again, b"first\nsecond\n")
        proxy.cut()
    assert resumed == {"@": "UploadResumed", "resourceId": resource_id, "offset": 6}
    assert ack["size"] == 13


async def test_a_completed_upload_is_acknowledged_again_to_its_token(
    server: LivefileProcess,
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        await up.send(b"whole\n")
        first = await finish_raw(up, b"whole\n")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as again:
        await again.send(json.dumps(resume_message(ready)))
        assert await receive_json(again) == first
        assert await wait_closed(again) == (1000, "Upload completed")


async def test_a_resume_while_the_lost_connection_still_finishes_gets_the_acknowledgement(
    server: LivefileProcess,
) -> None:
    # The reporter's recipe (issue 17): FinishUpload, the connection lost at once, and a
    # ResumeUpload at once, while the old connection is still storing the end. The resume
    # waits for it to let go, and the upload it let go of had COMPLETED.
    data = text(56_250, "end")  # 900,000 bytes
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        async with watching(server.ws_url, ready["resourceId"]) as watcher:
            for offset in range(0, len(data), PIECE):
                await up.send(data[offset : offset + PIECE])
            # Every data message was read: the old connection reads FinishUpload next, long
            # before the new one has been accepted and reads its ResumeUpload.
            await status_with(watcher, currentSize=len(data))
        await up.send(json.dumps({"@": "FinishUpload", "checksum": crc32c_hex(data)}))
        up.transport.write_eof()
        async with open_ws(f"{server.ws_url}/ws/streaming/upload") as again:
            await again.send(json.dumps(resume_message(ready)))
            try:
                reply = await receive_json(again)
            except ConnectionClosed:
                reply = {"closed": (again.close_code, again.close_reason)}
            closed = await wait_closed(again)
        up.transport.abort()
    assert reply == {
        "@": "UploadAcknowledged",
        "size": len(data),
        "checksum": crc32c_hex(data),
        "checksumAlgorithm": "crc32c",
        "numberOfLines": 56_250,
    }
    assert closed == (1000, "Upload completed")


async def test_a_resume_must_name_the_upload_context(server: LivefileProcess) -> None:
    _, context = get_json(f"{server.http_url}/contexts", "POST")
    query = f"?streamingUploadContextId={context['contextId']}"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload{query}") as up:
        ready = await start_raw(up, True)
        up.transport.abort()
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as elsewhere:
        await elsewhere.send(json.dumps(resume_message(ready)))
        assert await wait_closed(elsewhere) == (
            1008,
            f"Forbidden: upload {ready['resourceId']} is in another upload context",
        )


async def test_a_resume_goes_on_in_a_context_closed_meanwhile_where_nothing_new_starts(
    server: LivefileProcess,
) -> None:
    _, context = get_json(f"{server.http_url}/contexts", "POST")
    context_id = context["contextId"]
    in_context = f"{server.ws_url}/ws/streaming/upload?streamingUploadContextId={context_id}"
    async with open_ws(in_context) as up:
        ready = await start_raw(up, True)
        async with watching(server.ws_url, ready["resourceId"]) as watcher:
            await send_then_lose(up, watcher, b"first\n")
            await status_with(watcher, stage="waiting_for_client")
    assert get_json(f"{server.http_url}/contexts/{context_id}", "DELETE")[0] == 204
    async with open_ws(in_context) as refused:
        await refused.send(json.dumps({"@": "StartUpload", "metadata": META}))
        assert await wait_closed(refused) == (1008, f"Upload context {context_id} is closed")
    async with open_ws(in_context) as again:
        await again.send(json.dumps(resume_message(ready)))
        resumed = await receive_json(again)
        await again.send(b"second\n")
        ack = await finish_raw(again, b"first\nsecond\n")
    assert resumed == {"@": "UploadResumed", "resourceId": ready["resourceId"], "offset": 6}
    assert ack["size"] == 13
    _, page = get_json(f"{server.http_url}/contexts/{context_id}/resources")
    assert [resource["id"] for resource in page["resources"]] == [ready["resourceId"]]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_an_upload_and_its_followers_go_on_across_a_server_restart(
    tmp_path: Path, stop: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    before, after = text(8_000, "before"), text(8_000, "after")
    with restartable(data_dir) as servers:
        first = servers[0]
        async with AsyncUploadClient(first.ws_url, timeout=WAIT) as client:
            upload = await client.start(
                filename="restart.log", mime_type="text/plain", supports_line_access=True
            )
            follower = AsyncDownloadClient(upload.reference)
            following = asyncio.create_task(follow(await follower.connect()))
            getter = await asyncio.create_subprocess_exec(
                *LIVEFILE, "get", upload.reference, "-o", "-", "--quiet", stdout=PIPE
            )
            tailer = await asyncio.create_subprocess_exec(  # lines, from the first one
                *LIVEFILE, "tail", "-n", "1000000", upload.reference, stdout=PIPE
            )
            await write_in_pieces(upload, before)
            assert getter.stdout is not None
            assert tailer.stdout is not None
            # Both follow it now (a first line came), before the server goes.
            got = await asyncio.wait_for(getter.stdout.readline(), WAIT)
            tailed = await asyncio.wait_for(tailer.stdout.readline(), WAIT)
            first.stop(stop)
            restarting = asyncio.create_task(asyncio.to_thread(restart, servers, data_dir))
            await write_in_pieces(upload, after)  # reconnects (with backoff) meanwhile
            result = await upload.finish()
            second = await restarting
        followed = await asyncio.wait_for(following, WAIT)
        got += await asyncio.wait_for(getter.stdout.read(), WAIT)
        tailed += await asyncio.wait_for(tailer.stdout.read(), WAIT)
        assert await asyncio.wait_for(getter.wait(), WAIT) == 0
        assert await asyncio.wait_for(tailer.wait(), WAIT) == 0
        content = await download(second.ws_url, upload.resource_id)
    whole = before + after
    assert upload.resumes == 1
    assert follower.reconnects >= 1
    assert result.checksum == crc32c_hex(whole)
    assert result.status.number_of_lines == 16_000
    assert content == followed == whole
    assert got == tailed == whole  # what `livefile get` and `livefile tail -n` wrote


async def test_livefile_upload_live_survives_a_killed_server(tmp_path: Path) -> None:
    data_dir, path = tmp_path / "data", tmp_path / "app.log"
    path.write_bytes(b"started\n")
    with restartable(data_dir) as servers:
        process = subprocess.Popen(
            [*LIVEFILE, "upload", str(path), "--server", servers[0].ws_url, "--live", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            resource_id = process.stdout.readline().strip().rsplit("/", 1)[1]
            async with watching(servers[0].ws_url, resource_id) as watcher:
                await status_with(watcher, currentSize=8)
            servers[0].kill()
            server = await asyncio.to_thread(restart, servers, data_dir)
            with path.open("ab") as log:
                log.write(b"finished\n")
            async with watching(server.ws_url, resource_id) as watcher:
                await status_with(watcher, currentSize=17)
            process.send_signal(signal.SIGTERM)  # the end of the log: finish the upload
            stdout, stderr = process.communicate(timeout=WAIT)
        finally:
            process.kill()
        assert process.returncode == 0, stderr
        assert json.loads(stdout.splitlines()[-1])["status"]["transferStatus"] == "COMPLETED"
        assert await download(server.ws_url, resource_id) == b"started\nfinished\n"
