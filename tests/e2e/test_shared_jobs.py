"""Jobs shared by workers through Redis, with real processes: a front node that runs no jobs
(``--job-concurrency 0``) and two job workers, all ``livefile serve`` sharing a data directory
and a real redis-server.

- every job runs exactly once, on whichever worker claimed it, and leaves the stream empty;
- a job whose worker is killed (SIGKILL) is taken over by the other: its derived resource is
  COMPLETED and byte-exact, the bytes published before the kill unchanged, its revision going on
  and its statuses never going backwards.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
import redis

from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download import AsyncDownloadClient
from tests.conftest import ServerFactory
from tests.e2e.test_repack import post_repack, tar_gz
from tests.support.raw_upload import RawUpload, upload
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0
LEASE = 1.5  # a lost worker's job is taken over after two leases without a touch


def cluster(
    start_server: ServerFactory, redis_server: RedisProcess, data_dir: Path
) -> tuple[LivefileProcess, list[LivefileProcess]]:
    common = ("--redis-url", redis_server.url, "--lease-seconds", f"{LEASE:g}")
    front = start_server(*common, "--job-concurrency", "0", data_dir=data_dir)
    workers = [start_server(*common, "--job-concurrency", "1", data_dir=data_dir) for _ in "ab"]
    return front, workers


def runs_of(workers: list[LivefileProcess], resource_id: str) -> list[str]:
    """The log lines in which a worker started running the job of ``resource_id``."""
    pattern = re.compile(rf"running the \w+ job of {resource_id} here.*")
    return [line for worker in workers for line in pattern.findall(worker.log())]


def files(seed: int) -> dict[str, bytes]:
    return {
        f"job-{seed}/notes.txt": f"job {seed}\n".encode() * 5000,
        f"job-{seed}/noise.bin": os.urandom(100_000),
    }


async def test_every_job_runs_exactly_once_on_the_worker_that_claimed_it(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    front, workers = cluster(start_server, redis_server, tmp_path / "data")
    contents = {seed: files(seed) for seed in range(4)}
    started: dict[str, dict[str, bytes]] = {}
    references: dict[str, str] = {}
    for seed, content in contents.items():
        reference = await upload(front.ws_url, tar_gz(content), filename=f"{seed}.tar.gz")
        code, body = post_repack(front, reference.rsplit("/", 1)[1])
        assert code == 202, body
        started[body["id"]] = content
        references[body["id"]] = body["reference"]["uri"]
    for derived_id, content in started.items():
        async with AsyncDownloadClient(references[derived_id], timeout=WAIT) as watcher:
            data = b"".join([piece async for piece in watcher.iter_bytes()])
            assert watcher.status.transfer_status is TransferStatus.COMPLETED, watcher.status
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert {name: archive.read(name) for name in archive.namelist()} == content
        assert len(runs_of(workers, derived_id)) == 1, runs_of(workers, derived_id)
        assert runs_of([front], derived_id) == []  # the front node runs none
    assert all("taken over" not in worker.log() for worker in workers)
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen("livefile:jobs") == 0  # every job acknowledged and removed
    client.close()


async def test_the_job_of_a_killed_worker_is_taken_over_and_ends_byte_exact(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    front, workers = cluster(start_server, redis_server, tmp_path / "data")
    content = {
        "build/log.txt": b"".join(f"line {i}\n".encode() for i in range(100_000)),
        "build/blob.bin": os.urandom(3_000_000),
    }
    archive = tar_gz(content)
    seen: list[ResourceStatus] = []
    async with RawUpload(front.ws_url, filename="build.tar.gz") as raw:
        await raw.write(archive[: len(archive) // 2])
        code, body = post_repack(front, raw.resource_id)
        assert code == 202, body
        derived_id = body["id"]
        reference = body["reference"]["uri"]
        async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
            seen.append(watcher.status)
            watcher.add_status_listener(seen.append)
            await watcher.wait_for_status(lambda s: s.current_size > 0, WAIT)
            published = watcher.status
            before = await watcher.read(0, published.current_size)
            (running,) = [w for w in workers if runs_of([w], derived_id)]
            (survivor,) = [w for w in workers if w is not running]
            running.kill()
            # The source is still uploading: the survivor takes the job over meanwhile.
            deadline = time.monotonic() + WAIT
            while "taken over" not in "".join(runs_of([survivor], derived_id)):
                assert time.monotonic() < deadline, survivor.log()
                await asyncio.sleep(0.1)
            await raw.write(archive[len(archive) // 2 :])
            await raw.finish()
            data = b"".join([piece async for piece in watcher.iter_bytes()])
            final = watcher.status
    assert final.transfer_status is TransferStatus.COMPLETED, final
    assert data[: len(before)] == before  # what readers had stays what it was
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        assert zipped.testzip() is None
        assert {name: zipped.read(name) for name in zipped.namelist()} == content
    assert (final.revision or 0) > (published.revision or 0)
    sizes = [status.current_size for status in seen]
    assert sizes == sorted(sizes)
    revisions = [status.revision or 0 for status in seen]
    assert revisions == sorted(revisions)
    info = get_json(f"{front.http_url}/resources/{derived_id}")[1]
    assert info["status"]["transferStatus"] == "COMPLETED"
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen("livefile:jobs") == 0
    client.close()


async def test_a_front_node_without_redis_is_refused_with_one_line(
    start_server: ServerFactory,
) -> None:
    with pytest.raises(RuntimeError, match="job concurrency"):
        start_server("--job-concurrency", "0")
