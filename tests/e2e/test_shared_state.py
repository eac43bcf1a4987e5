"""Several processes as one service through a real redis-server: statuses, reads, lines and
HTTP follow-downloads across processes, a killed uploader, and a Redis restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from livefile.api import (
    PolicyViolationError,
    QuotaExceededError,
    ServerError,
    TransferStatus,
)
from livefile.api.model import ResourceStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess, free_port
from tests.support.wire import (
    crc32c_hex,
    get_json,
    open_ws,
    read_context_events,
    start_upload,
    wait_closed,
)

WAIT = 60.0
LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]


def cluster(
    start_server: ServerFactory, redis: RedisProcess, data_dir: Path, *extra: str
) -> list[LivefileProcess]:
    """Two single-process nodes and one with two workers, sharing Redis and a data directory."""
    common = ("--redis-url", redis.url, "--lease-seconds", "3", *extra)
    return [
        start_server(*common, data_dir=data_dir),
        start_server(*common, data_dir=data_dir),
        start_server(*common, "--workers", "2", data_dir=data_dir),
    ]


async def follow_bytes(reference: str) -> bytes:
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        return b"".join([piece async for piece in download.iter_bytes()])


async def follow_lines(reference: str) -> str:
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        return "".join([line async for line in download.iter_lines()])


def on(server: LivefileProcess, reference: str) -> str:
    """The same resource reached through another process."""
    return f"{server.ws_url}/ws/streaming/download/{reference.rsplit('/', 1)[1]}"


async def test_upload_on_one_process_is_followed_on_the_others(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    nodes = cluster(start_server, redis_server, tmp_path / "shared")
    text = b"".join(f"{n:05d} {'x' * (n % 70)}\n".encode() for n in range(20_000))
    async with AsyncUploadClient(nodes[0].ws_url, timeout=WAIT) as client:
        upload = await client.start(
            filename="shared.log", mime_type="text/plain", supports_line_access=True
        )
        resource_id = upload.resource_id
        bytes_on_b = asyncio.create_task(follow_bytes(on(nodes[1], upload.reference)))
        lines_on_c = asyncio.create_task(follow_lines(on(nodes[2], upload.reference)))
        bytes_on_c = asyncio.create_task(follow_bytes(on(nodes[2], upload.reference)))
        curl = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "-N",
            f"{nodes[1].http_url}/resources/{resource_id}/content",
            stdout=asyncio.subprocess.PIPE,
        )
        for offset in range(0, len(text), 50_000):
            await upload.write(text[offset : offset + 50_000])
            await asyncio.sleep(0.01)  # pacing the producer
        result = await upload.finish()
        by_bytes_b, by_lines_c, by_bytes_c = await bytes_on_b, await lines_on_c, await bytes_on_c
        curl_output, _ = await asyncio.wait_for(curl.communicate(), WAIT)
    assert curl.returncode == 0
    assert by_bytes_b == by_bytes_c == curl_output == text
    assert by_lines_c.encode() == text
    for node in nodes:
        _, info = get_json(f"{node.http_url}/resources/{resource_id}")
        assert ResourceStatus.model_validate(info["status"]).same_state(result.status)
        assert info["checksum"] == crc32c_hex(text)


async def test_killed_uploader_fails_for_watchers_on_other_processes(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    uploader, watcher_node, _ = cluster(start_server, redis_server, tmp_path / "shared")
    async with open_ws(f"{uploader.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up)
        reference = f"{watcher_node.ws_url}/ws/streaming/download/{resource_id}"
        async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
            await up.send(b"k" * 123_456)
            await watcher.wait_for_status(lambda status: status.current_size == 123_456)
            uploader.kill()
            killed_at = time.monotonic()
            final = await watcher.wait_for_end(timeout=WAIT)
            noticed_after = time.monotonic() - killed_at
            assert final.transfer_status is TransferStatus.FAILED
            assert final.current_size == 123_456
            assert await watcher.read(0, 123_456) == b"k" * 123_456
    # Lease 3 s, checked every second: noticed well within a minute on any machine.
    assert noticed_after < WAIT


async def test_follower_survives_a_redis_restart_without_losing_bytes(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    nodes = cluster(start_server, redis_server, tmp_path / "shared", "--lease-seconds", "30")
    data = os.urandom(2_000_000)
    async with AsyncUploadClient(nodes[0].ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="r.bin", mime_type="application/octet-stream")
        async with AsyncDownloadClient(on(nodes[1], upload.reference), timeout=WAIT) as watcher:

            async def follow() -> bytes:
                return b"".join([piece async for piece in watcher.iter_bytes()])

            follower = asyncio.create_task(follow())
            await upload.write(data[:1_000_000])
            await watcher.wait_for_status(lambda status: status.current_size == 1_000_000)
            redis_server.stop()
            await upload.write(data[1_000_000:1_500_000])  # bytes keep flowing to disk
            redis_server.start_on_same_port()
            await upload.write(data[1_500_000:])
            result = await upload.finish()
            # The watcher on another process missed what was published while Redis was away,
            # and catches up from the stored status once its pub/sub connection is back.
            assert await asyncio.wait_for(follower, WAIT) == data
            assert watcher.status.same_state(result.status)
    assert result.status.transfer_status is TransferStatus.COMPLETED


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [*LIVEFILE, "serve", "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers greater than 1 needs --redis-url" in result.stderr


def test_unreachable_redis_at_start_exits_with_a_clear_message(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [*LIVEFILE, "serve", "--redis-url", url, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"Redis at {url} is unreachable" in result.stderr


async def test_new_uploads_are_refused_while_redis_is_away_and_accepted_after(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    node = start_server("--redis-url", redis_server.url, data_dir=tmp_path / "shared")
    redis_server.stop()
    async with open_ws(f"{node.ws_url}/ws/streaming/upload") as up:
        await up.send('{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"}}')
        code, reason = await wait_closed(up)
    assert code == 1011
    assert reason is not None
    assert reason.startswith("Service unavailable: the catalog is unreachable")
    status, body = get_json(f"{node.http_url}/resources/{'a' * 32}")
    assert status == 503
    assert body["detail"].startswith("Service unavailable: Redis is unreachable")
    redis_server.start_on_same_port()
    # The service recovers without a restart: the first uploads may still meet a stale pooled
    # connection (refused as above), a later one goes through.
    async with AsyncUploadClient(node.ws_url, timeout=WAIT) as client:
        for _attempt in range(20):
            try:
                result = await client.upload_bytes(b"back", filename="b")
                break
            except ServerError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("uploads were still refused after Redis came back")
    assert result.status.transfer_status is TransferStatus.COMPLETED


async def test_upload_contexts_work_across_processes(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    nodes = cluster(start_server, redis_server, tmp_path / "shared",
                    "--max-resources-per-context", "1")  # fmt: skip
    _, context = get_json(f"{nodes[0].http_url}/contexts", method="POST")
    context_id = context["contextId"]
    subscribed = threading.Event()
    reader = asyncio.ensure_future(asyncio.to_thread(
        read_context_events, f"{nodes[1].http_url}/contexts/{context_id}/events", subscribed
    ))  # fmt: skip
    assert await asyncio.to_thread(subscribed.wait, WAIT)
    async with AsyncUploadClient(nodes[2].ws_url, context_id=context_id, timeout=WAIT) as client:
        result = await client.upload_bytes(b"in context", filename="c.txt")
    async with AsyncUploadClient(nodes[1].ws_url, context_id=context_id, timeout=WAIT) as client:
        with pytest.raises(QuotaExceededError, match="already holds 1 resources"):
            await client.upload_bytes(b"one too many", filename="d.txt")
    assert get_json(f"{nodes[0].http_url}/contexts/{context_id}")[1]["resourceCount"] == 1
    assert get_json(f"{nodes[2].http_url}/contexts/{context_id}", method="DELETE")[0] == 204
    events = await asyncio.wait_for(reader, WAIT)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "resourceCreated"
    assert events[0][1]["resourceId"] == result.resource_id
    assert any(
        kind == "statusChanged"
        and data["resourceId"] == result.resource_id
        and ResourceStatus.model_validate(data["resourceStatus"]).same_state(result.status)
        for kind, data in events
    )
    assert kinds[-2:] == ["creationRefused", "contextClosed"]
    async with AsyncUploadClient(nodes[0].ws_url, context_id=context_id, timeout=WAIT) as client:
        with pytest.raises(PolicyViolationError, match=f"Upload context {context_id} is closed"):
            await client.upload_bytes(b"closed", filename="e.txt")


def test_workers_end_when_their_supervisor_is_killed(
    start_server: ServerFactory, redis_server: RedisProcess
) -> None:
    server = start_server("--redis-url", redis_server.url, "--workers", "2")
    assert server.process is not None
    supervisor = psutil.Process(server.process.pid)
    workers = supervisor.children()
    assert len(workers) >= 2
    server.kill()  # SIGKILL: the supervisor cannot stop its workers itself
    _, alive = psutil.wait_procs(workers, timeout=WAIT)
    assert alive == []
