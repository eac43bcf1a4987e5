"""Resumable WebSocket uploads served by two ``livefile serve`` processes sharing Redis and one
data directory: a connection lost on one worker resumes on the other (a proxy in front of the
workers is switched between them), with nothing lost or repeated, watchers on either worker
following; a worker killed while it holds an upload; the grace period ending it FAILED
``client_lost`` when nobody resumes, even once the worker that parked it is dead; a half-open
connection on one worker superseded by a resume on the other; a wrong token refused there."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUpload, AsyncUploadClient
from tests.conftest import ServerFactory
from tests.e2e.test_resumable_uploads import (
    finish_raw,
    follow,
    resume_message,
    send_then_lose,
    start_raw,
    status_with,
    text,
    watching,
    write_in_pieces,
)
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.tcp_proxy import CuttingProxy
from tests.support.wire import crc32c_hex, download, open_ws, receive_json, wait_closed

WAIT = 60.0
LEASE = "1.5"  # seconds: a dead worker's upload is found within a few of them


def two_workers(
    start: ServerFactory, redis: RedisProcess, data_dir: Path, *extra: str
) -> list[LivefileProcess]:
    common = ("--redis-url", redis.url, "--lease-seconds", LEASE, *extra)
    return [start(*common, data_dir=data_dir) for _ in range(2)]


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LivefileProcess]]:
    """Two workers for the tests that kill none of them."""
    root = tmp_path_factory.mktemp("workers")
    redis = RedisProcess(root / "redis").start()
    started: list[LivefileProcess] = []

    def start(*args: str, data_dir: Path) -> LivefileProcess:
        started.append(LivefileProcess(data_dir, *args).start())
        return started[-1]

    try:
        yield two_workers(start, redis, root / "shared")
    finally:
        for worker in started:
            worker.kill()
        redis.stop()


async def resume_and_finish(
    ws_url: str, ready: dict[str, Any], sent: bytes, rest: bytes
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resume the upload ``ready`` announced on a new connection to ``ws_url``, send ``rest``
    and finish it; its ``UploadResumed`` and ``UploadAcknowledged``."""
    async with open_ws(f"{ws_url}/ws/streaming/upload") as again:
        await again.send(json.dumps(resume_message(ready)))
        resumed = await receive_json(again)
        await again.send(rest)
        ack = await finish_raw(again, sent + rest)
    return resumed, ack


@asynccontextmanager
async def uploading_through(
    worker: LivefileProcess,
) -> AsyncIterator[tuple[CuttingProxy, AsyncUpload]]:
    """An SDK upload of a text file through a proxy in front of ``worker`` (the test may point
    the proxy at another worker)."""
    async with (
        CuttingProxy(worker.port) as proxy,
        AsyncUploadClient(proxy.ws_url, timeout=WAIT) as client,
    ):
        yield (
            proxy,
            await client.start(
                filename="moving.log", mime_type="text/plain", supports_line_access=True
            ),
        )


class Statuses:
    """Every status a raw download connection hears, in order, read in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.seen: list[dict[str, Any]] = []
        self._ws = ws
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await receive_json(self._ws)
            async with self._changed:
                self.seen.append(message["resourceStatus"])
                self._changed.notify_all()

    async def wait_for(self, **expected: object) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for status in self.seen:
                if all(status.get(key) == value for key, value in expected.items()):
                    return status
            return None

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), WAIT)
        status = found()
        assert status is not None
        return status

    def close(self) -> None:
        self._task.cancel()


async def test_an_upload_cut_on_one_worker_is_resumed_on_the_other_and_followed_on_the_first(
    workers: list[LivefileProcess],
) -> None:
    first, second = workers
    data = text(20_000, "moved")  # ~0.3 MB
    half = len(data) // 2
    async with uploading_through(first) as (proxy, upload):
        rid = upload.resource_id
        follower = AsyncDownloadClient(upload.reference.replace(proxy.ws_url, first.ws_url))
        following = asyncio.create_task(follow(await follower.connect()))
        async with watching(first.ws_url, rid) as ws:
            statuses = Statuses(ws)
            await write_in_pieces(upload, data[:half])
            await statuses.wait_for(currentSize=half)
            proxy.target_port = second.port  # the next connection reaches the other worker
            proxy.cut()
            await statuses.wait_for(stage="waiting_for_client", currentSize=half)
            await write_in_pieces(upload, data[half:])
            result = await upload.finish()
            await statuses.wait_for(transferStatus="COMPLETED")
            statuses.close()
        followed = await asyncio.wait_for(following, WAIT)
    assert upload.resumes == 1
    assert second.wait_for_log(f"upload {rid} resumed at {half} bytes")
    assert result.checksum == crc32c_hex(data)
    assert result.status.number_of_lines == 20_000
    assert followed == data
    revisions = [status["revision"] for status in statuses.seen]
    sizes = [status["currentSize"] for status in statuses.seen]
    assert revisions == sorted(set(revisions)), revisions  # never backwards, never repeated
    assert sizes == sorted(sizes), sizes
    assert await download(first.ws_url, rid) == data


async def test_a_resume_on_the_other_worker_supersedes_a_half_open_connection(
    workers: list[LivefileProcess],
) -> None:
    first, second = workers
    async with (
        CuttingProxy(first.port) as proxy,
        open_ws(f"{proxy.ws_url}/ws/streaming/upload") as up,
    ):
        ready = await start_raw(up, True)
        rid = ready["resourceId"]
        async with watching(second.ws_url, rid) as watcher:
            await up.send(b"first\n")
            await status_with(watcher, currentSize=6)
            proxy.freeze()  # the first worker still holds the upload on a live-looking socket
            resumed, ack = await resume_and_finish(second.ws_url, ready, b"first\n", b"second\n")
        proxy.cut()
    assert resumed == {"@": "UploadResumed", "resourceId": rid, "offset": 6}
    assert ack["size"] == 13
    assert await download(first.ws_url, rid) == b"first\nsecond\n"


async def test_a_wrong_token_is_refused_on_the_other_worker_and_the_right_one_resumes(
    workers: list[LivefileProcess],
) -> None:
    first, second = workers
    async with open_ws(f"{first.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        rid = ready["resourceId"]
        async with watching(second.ws_url, rid) as watcher:
            await send_then_lose(up, watcher, b"first\n")
            await status_with(watcher, stage="waiting_for_client")
            async with open_ws(f"{second.ws_url}/ws/streaming/upload") as thief:
                guess = {"@": "ResumeUpload", "resourceId": rid, "resumeToken": "guess"}
                await thief.send(json.dumps(guess))
                refused = await wait_closed(thief)
            resumed, ack = await resume_and_finish(second.ws_url, ready, b"first\n", b"second\n")
            completed = await status_with(watcher, transferStatus="COMPLETED")
    assert refused == (1008, f"Forbidden: wrong resume token for upload {rid}")
    assert resumed == {"@": "UploadResumed", "resourceId": rid, "offset": 6}
    assert ack["size"] == completed["currentSize"] == 13


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_the_sdk_resumes_on_the_other_worker_when_the_one_holding_the_upload_stops(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path, stop: signal.Signals
) -> None:
    first, second = two_workers(start_server, redis_server, tmp_path / "shared")
    data = text(20_000, "killed")
    half = len(data) // 2
    async with (
        uploading_through(first) as (proxy, upload),
        watching(second.ws_url, upload.resource_id) as watcher,
    ):
        await write_in_pieces(upload, data[:half])
        await status_with(watcher, currentSize=half)
        proxy.target_port = second.port
        first.stop(stop)
        await write_in_pieces(upload, data[half:])
        result = await upload.finish()
    assert upload.resumes >= 1
    assert result.checksum == crc32c_hex(data)
    assert result.size == len(data)
    assert await download(second.ws_url, upload.resource_id) == data


async def test_an_upload_whose_worker_was_killed_waits_for_its_client_on_the_other_worker(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    first, second = two_workers(start_server, redis_server, tmp_path / "shared")
    async with open_ws(f"{first.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        rid = ready["resourceId"]
        async with watching(second.ws_url, rid) as watcher:
            await up.send(b"first\n")
            await status_with(watcher, currentSize=6)
            first.kill()  # its lease runs out: the other worker finds the upload
            waiting = await status_with(watcher, stage="waiting_for_client")
            resumed, ack = await resume_and_finish(second.ws_url, ready, b"first\n", b"second\n")
    assert waiting["transferStatus"] == "IN_PROGRESS"
    assert waiting["currentSize"] == 6
    assert resumed == {"@": "UploadResumed", "resourceId": rid, "offset": 6}
    assert ack["size"] == 13


async def test_a_resume_goes_on_once_a_frozen_worker_holding_the_upload_lost_its_lease(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    first, second = two_workers(start_server, redis_server, tmp_path / "shared")
    assert first.process is not None
    async with open_ws(f"{first.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        async with watching(second.ws_url, ready["resourceId"]) as watcher:
            await up.send(b"first\n")
            await status_with(watcher, currentSize=6)
            first.process.send_signal(signal.SIGSTOP)  # alive, but deaf to the handover request
            try:
                resumed, ack = await resume_and_finish(
                    second.ws_url, ready, b"first\n", b"second\n"
                )
            finally:
                first.process.send_signal(signal.SIGCONT)
            await status_with(watcher, transferStatus="COMPLETED", currentSize=13)
    assert resumed["offset"] == 6
    assert ack["size"] == 13


@pytest.mark.parametrize("kill_parking_worker", [False, True], ids=["alive", "killed"])
async def test_an_upload_nobody_resumes_fails_client_lost_after_the_grace(
    start_server: ServerFactory,
    redis_server: RedisProcess,
    tmp_path: Path,
    kill_parking_worker: bool,
) -> None:
    first, second = two_workers(
        start_server, redis_server, tmp_path / "shared", "--upload-resume-grace", "1"
    )
    async with open_ws(f"{first.ws_url}/ws/streaming/upload") as up:
        ready = await start_raw(up, True)
        rid = ready["resourceId"]
        async with watching(second.ws_url, rid) as watcher:
            await send_then_lose(up, watcher, b"partial\n")
            waiting = await status_with(watcher, stage="waiting_for_client")
            if kill_parking_worker:
                first.kill()
            failed = await status_with(watcher, transferStatus="FAILED")
    assert waiting["transferStatus"] == "IN_PROGRESS"
    assert failed["currentSize"] == 8
    assert failed["error"]["code"] == "client_lost"
    async with open_ws(f"{second.ws_url}/ws/streaming/upload") as late:
        await late.send(json.dumps(resume_message(ready)))
        assert await wait_closed(late) == (
            1008,
            f"Cannot resume upload {rid}: it FAILED (client_lost)",
        )
