"""The upload SDK's resume paths against a real server (issue 17): an acknowledgement lost with
its connection (async and sync clients, ``livefile upload``), ``upload_bytes`` and
``upload_file`` cut more than once, a cut while the writer waits for room in its replay buffer,
a server killed (-9) under the sync client, and a resume the server refuses for good.

Each upload goes into an upload context of its own, so that "nothing duplicated" is checked as
the server sees it: the context holds exactly one resource, COMPLETED, with exactly the bytes
sent — and the SDK's result agrees (size, end-to-end checksum, lines)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from livefile.api.errors import ConnectionLostError, PolicyViolationError
from livefile.client_upload import AsyncUploadClient, UploadClient, UploadResult
from livefile.client_upload.upload import DEFAULT_RESUME_BUFFER
from tests.conftest import ServerFactory
from tests.support.cutting_proxy import CuttingProxy
from tests.support.server import LivefileProcess
from tests.support.wire import crc32c_hex, get_json, open_ws, status_where

WAIT = 60.0
LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]
MESSAGE = 16 * 1024  # the SDK's message size here: a small upload is many messages
FILENAME = "sdk.log"
ACKNOWLEDGEMENT = b'{"@":"UploadAcknowledged"'
READY = b'{"@":"ReadyForUpload"'


def log_lines(count: int, tag: str) -> bytes:
    return b"".join(b"%s %06d\n" % (tag.encode(), n) for n in range(count))


def new_context(server: LivefileProcess) -> str:
    _, context = get_json(f"{server.http_url}/contexts", "POST")
    return str(context["contextId"])


def assert_uploaded_once(
    server: LivefileProcess, context_id: str | None, result: UploadResult, data: bytes
) -> None:
    """The context (if any) holds one resource, COMPLETED; the resource holds exactly
    ``data``; the result agrees."""
    if context_id is not None:
        _, page = get_json(f"{server.http_url}/contexts/{context_id}/resources")
        assert [resource["id"] for resource in page["resources"]] == [result.resource_id]
        status = page["resources"][0]["status"]
        assert (status["transferStatus"], status["currentSize"]) == ("COMPLETED", len(data))
    assert result.size == len(data)
    assert result.checksum == crc32c_hex(data)
    assert result.status.number_of_lines == data.count(b"\n")
    url = f"{server.http_url}/resources/{result.resource_id}/content"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.read() == data


async def upload_async(
    call: str, url: str, options: dict[str, Any], data: bytes, path: Path
) -> UploadResult:
    async with AsyncUploadClient(url, **options) as client:
        if call == "upload_bytes":
            return await client.upload_bytes(data, filename=FILENAME, supports_line_access=True)
        if call == "upload_file":
            return await client.upload_file(path, supports_line_access=True)
        upload = await client.start(
            filename=FILENAME, mime_type="text/plain", supports_line_access=True
        )
        await upload.write(data)
        return await upload.finish()


def upload_sync(
    call: str, url: str, options: dict[str, Any], data: bytes, path: Path
) -> UploadResult:
    with UploadClient(url, **options) as client:
        if call == "upload_bytes":
            return client.upload_bytes(data, filename=FILENAME, supports_line_access=True)
        if call == "upload_file":
            return client.upload_file(path, supports_line_access=True)
        with client.start(
            filename=FILENAME, mime_type="text/plain", supports_line_access=True
        ) as upload:
            upload.write(data)
            return upload.finish()


def upload_with(
    side: str,
    call: str,
    url: str,
    context_id: str,
    data: bytes,
    tmp_path: Path,
    resume_buffer: int = DEFAULT_RESUME_BUFFER,
) -> UploadResult:
    """Upload ``data`` (also written to a file, for ``upload_file``) with the ``async`` or
    ``sync`` client's ``call`` (``start``: start, write, finish)."""
    path = tmp_path / FILENAME
    path.write_bytes(data)
    options: dict[str, Any] = {
        "context_id": context_id,
        "timeout": WAIT,
        "message_size": MESSAGE,
        "resume_buffer": resume_buffer,
    }
    if side == "sync":
        return upload_sync(call, url, options, data, path)
    return asyncio.run(upload_async(call, url, options, data, path))


@pytest.mark.parametrize("side", ["async", "sync"])
@pytest.mark.parametrize("call", ["start", "upload_bytes", "upload_file"])
def test_a_lost_acknowledgement_is_asked_for_again_not_uploaded_again(
    server: LivefileProcess, tmp_path: Path, side: str, call: str
) -> None:
    data = log_lines(8_000, "ack")
    context_id = new_context(server)
    # FinishUpload reaches the server; its UploadAcknowledged is lost with the connection.
    with CuttingProxy(server.port, cut_at_reply=ACKNOWLEDGEMENT) as proxy:
        result = upload_with(side, call, proxy.ws_url, context_id, data, tmp_path)
    assert proxy.cuts == 1
    assert proxy.connections == 2  # one resume, answered by the acknowledgement again
    assert_uploaded_once(server, context_id, result, data)


def test_livefile_upload_whose_acknowledgement_is_lost_prints_the_one_completed_upload(
    server: LivefileProcess, tmp_path: Path
) -> None:
    data = log_lines(8_000, "cli")
    path = tmp_path / FILENAME
    path.write_bytes(data)
    context_id = new_context(server)
    with CuttingProxy(server.port, cut_at_reply=ACKNOWLEDGEMENT) as proxy:
        command = [*LIVEFILE, "upload", str(path), "--server", proxy.ws_url]
        done = subprocess.run(
            [*command, "--context", context_id, "--quiet"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    assert done.returncode == 0, done.stderr
    assert proxy.connections == 2
    printed = json.loads(done.stdout.splitlines()[-1])
    assert (printed["size"], printed["checksum"]) == (len(data), crc32c_hex(data))
    _, page = get_json(f"{server.http_url}/contexts/{context_id}/resources")
    assert [resource["id"] for resource in page["resources"]] == [printed["resourceId"]]


@pytest.mark.parametrize("side", ["async", "sync"])
@pytest.mark.parametrize("call", ["upload_bytes", "upload_file"])
def test_an_upload_cut_twice_mid_stream_stores_every_byte_once(
    server: LivefileProcess, tmp_path: Path, side: str, call: str
) -> None:
    data = log_lines(36_000, "cut")  # 396,000 bytes: each connection is cut after 150,000
    context_id = new_context(server)
    with CuttingProxy(server.port, cut_after=150_000, cuts=2, after_first_message=True) as proxy:
        result = upload_with(side, call, proxy.ws_url, context_id, data, tmp_path)
    assert proxy.cuts == 2
    assert proxy.connections == 3
    assert_uploaded_once(server, context_id, result, data)


@pytest.mark.parametrize("side", ["async", "sync"])
def test_upload_bytes_cut_while_its_data_still_goes_out_resumes_the_same_resource(
    server: LivefileProcess, tmp_path: Path, side: str
) -> None:
    # With a small replay buffer the pipelined writer is paced by checkpoints: the cut finds
    # it still sending, before FinishUpload has read the reference.
    data = log_lines(24_000, "paced")  # 288,000 bytes through a 64 KiB replay buffer
    context_id = new_context(server)
    with CuttingProxy(server.port, cut_after=100_000, after_first_message=True) as proxy:
        result = upload_with(
            side, "upload_bytes", proxy.ws_url, context_id, data, tmp_path, 4 * MESSAGE
        )
    assert proxy.connections == 2
    assert_uploaded_once(server, context_id, result, data)


async def test_upload_bytes_cut_before_its_reference_arrived_fails_at_once_unresumed(
    server: LivefileProcess,
) -> None:
    # Pipelined: the data goes out before ReadyForUpload, which brings the resume token.
    context_id = new_context(server)
    with CuttingProxy(server.port, cut_at_reply=READY) as proxy:
        async with AsyncUploadClient(proxy.ws_url, context_id=context_id, timeout=WAIT) as client:
            with pytest.raises(ConnectionLostError):
                await client.upload_bytes(log_lines(8_000, "early"), filename=FILENAME)
    assert proxy.connections == 1  # no token, no resume
    _, page = get_json(f"{server.http_url}/contexts/{context_id}/resources")
    assert len(page["resources"]) == 1  # and no second upload either


async def test_a_cut_while_the_writer_waits_for_room_in_its_replay_buffer_resumes_exactly(
    server: LivefileProcess,
) -> None:
    data = log_lines(24_000, "room")  # 288,000 bytes through a 64 KiB replay buffer
    room = 4 * MESSAGE
    context_id = new_context(server)
    loop = asyncio.get_running_loop()
    cut_at: list[tuple[int, int]] = []  # (sent, acknowledged) when the connection was cut
    ahead: list[int] = []  # sent but not yet acknowledged, at each report before the cut
    with CuttingProxy(server.port) as proxy:
        async with AsyncUploadClient(
            proxy.ws_url,
            context_id=context_id,
            timeout=WAIT,
            message_size=MESSAGE,
            resume_buffer=room,
        ) as client:

            def cut_while_waiting() -> None:
                # Runs once the writer awaits: with a full buffer, it waits for a checkpoint.
                unacknowledged = upload.sent - upload.acknowledged
                if not cut_at and unacknowledged >= room and upload.sent < len(data):
                    cut_at.append((upload.sent, upload.acknowledged))
                    proxy.cut_all()

            def progress(sent: int, acknowledged: int) -> None:
                if not cut_at:
                    ahead.append(sent - acknowledged)
                if sent - acknowledged >= room:
                    loop.call_soon(cut_while_waiting)

            upload = await client.start(
                filename=FILENAME,
                mime_type="text/plain",
                supports_line_access=True,
                progress=progress,
            )
            await upload.write(data)
            result = await upload.finish()
    assert len(cut_at) == 1
    assert max(ahead) == room  # the writer went up to its buffer's limit, never beyond
    assert upload.resumes == 1
    assert_uploaded_once(server, context_id, result, data)


@pytest.mark.parametrize("in_context", [False, True], ids=["no-context", "in-a-context"])
def test_a_sync_upload_goes_on_across_a_killed_and_restarted_server(
    tmp_path: Path, in_context: bool
) -> None:
    # In a context: the restarted server has forgotten it (embedded contexts live in memory),
    # and the resume goes on all the same — the upload's entry names its context.
    data_dir = tmp_path / "data"
    before, after = log_lines(6_000, "before"), log_lines(6_000, "after")
    servers = [LivefileProcess(data_dir).start()]
    published = threading.Event()  # the server reported a checkpoint of all of ``before``

    def progress(_sent: int, acknowledged: int) -> None:
        if acknowledged >= len(before):
            published.set()

    def restart() -> LivefileProcess:
        server = LivefileProcess(data_dir, port=servers[0].port).start()
        servers.append(server)
        return server

    try:
        context_id = new_context(servers[0]) if in_context else None
        with (
            UploadClient(
                servers[0].ws_url, context_id=context_id, timeout=WAIT, message_size=MESSAGE
            ) as client,
            client.start(
                filename=FILENAME,
                mime_type="text/plain",
                supports_line_access=True,
                progress=progress,
            ) as upload,
            ThreadPoolExecutor(1) as pool,
        ):
            upload.write(before)
            assert published.wait(WAIT)
            servers[0].kill()
            restarting = pool.submit(restart)
            upload.write(after)  # resumes (with backoff) once the server is back
            result = upload.finish()
            second = restarting.result()
        assert upload.resumes == 1
        assert_uploaded_once(second, context_id, result, before + after)
    finally:
        for server in servers:
            server.kill()


async def lose_and_refuse(
    server: LivefileProcess, end_it: Callable[[str, ClientConnection], Awaitable[None]]
) -> tuple[PolicyViolationError, str, int]:
    """Start an upload through a proxy, cut it and hold its reconnection at the proxy while
    ``end_it(resource_id, watcher)`` ends the waiting upload FAILED, then let the SDK resume;
    what it raised, the resource id, and how many connections it made in all."""
    with CuttingProxy(server.port) as proxy:
        async with AsyncUploadClient(proxy.ws_url, timeout=WAIT, resume_for=600) as client:
            upload = await client.start(filename=FILENAME, mime_type="text/plain")
            resource_id = upload.resource_id
            async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as watcher:
                await upload.write(b"first\n")
                await status_where(watcher, currentSize=6)
                proxy.hold()
                proxy.cut_all()
                await status_where(watcher, stage="waiting_for_client")
                writing = asyncio.create_task(upload.write(b"second\n"))
                assert await asyncio.to_thread(proxy.wait_for_connections, 2)
                await end_it(resource_id, watcher)
                proxy.release()
                with pytest.raises(PolicyViolationError) as refused:
                    # resume_for is 600 s: only a refusal taken as final ends it within WAIT.
                    await asyncio.wait_for(writing, WAIT)
            assert upload.ended
        return refused.value, resource_id, proxy.connections


async def delete_meanwhile(
    server: LivefileProcess,
) -> tuple[PolicyViolationError, str, int]:
    """``lose_and_refuse``, the upload deleted (``DELETE /resources/{id}``) meanwhile."""

    async def delete(resource_id: str, watcher: ClientConnection) -> None:
        url = f"{server.http_url}/resources/{resource_id}"
        code, _ = await asyncio.to_thread(get_json, url, "DELETE")
        assert code == 204
        await status_where(watcher, transferStatus="FAILED")

    return await lose_and_refuse(server, delete)


async def test_a_resume_refused_because_the_upload_was_deleted_meanwhile_fails_at_once(
    server: LivefileProcess,
) -> None:
    error, resource_id, connections = await delete_meanwhile(server)
    assert connections == 2  # one attempt to resume, refused: no more
    assert str(error).startswith("closed with 1008: Cannot resume")
    assert resource_id in str(error)


async def test_a_resume_refused_because_the_upload_was_deleted_says_so(
    server: LivefileProcess,
) -> None:
    error, resource_id, _ = await delete_meanwhile(server)
    assert str(error) == f"closed with 1008: Cannot resume upload {resource_id}: it was deleted"


async def test_a_resume_refused_because_the_grace_period_passed_fails_at_once(
    start_server: ServerFactory,
) -> None:
    server = start_server("--upload-resume-grace", "1")

    async def outlive_the_grace(_resource_id: str, watcher: ClientConnection) -> None:
        await status_where(watcher, transferStatus="FAILED")

    error, resource_id, connections = await lose_and_refuse(server, outlive_the_grace)
    assert connections == 2
    assert str(error) == (
        f"closed with 1008: Cannot resume upload {resource_id}: it FAILED (client_lost)"
    )
