"""Truthful under Redis faults, with real processes: two ``livefile serve`` nodes sharing a data
directory and a real redis-server that the tests kill with SIGKILL and start again.

- an owner alive through an outage longer than its lease is never declared dead: one terminal
  status, the same for the uploader, every watcher, HTTP and the catalog;
- an end Redis cannot record in time is a failure the uploader hears, and FAILED everywhere;
- an owner whose resource another process ended hears a failure, never an acknowledgement;
- Redis restarted empty loses nothing acknowledged, and no watcher waits without a status;
- established watchers keep being served during an outage.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from livefile.api import ServerError, TransferStatus
from livefile.api.model import ResourceStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0
LEASE = 3.0
PIECE = 64 * 1024


def nodes(
    start_server: ServerFactory, redis: RedisProcess, data_dir: Path, *extra: str
) -> tuple[LivefileProcess, LivefileProcess]:
    common = ("--redis-url", redis.url, "--lease-seconds", f"{LEASE:g}", *extra)
    return (
        start_server(*common, data_dir=data_dir),
        start_server(*common, data_dir=data_dir),
    )


def watch_url(node: LivefileProcess, resource_id: str) -> str:
    return f"{node.ws_url}/ws/streaming/download/{resource_id}"


async def final_status(node: LivefileProcess, resource_id: str) -> ResourceStatus:
    """The status ``GET /resources/{id}`` gives once it answers with a terminal one."""
    deadline = time.monotonic() + WAIT
    while True:
        code, body = await asyncio.to_thread(get_json, f"{node.http_url}/resources/{resource_id}")
        if code == 200:
            status = ResourceStatus.model_validate(body["status"])
            if status.is_terminal:
                return status
        assert time.monotonic() < deadline, f"no terminal status over HTTP: {code} {body}"
        await asyncio.sleep(0.2)


async def info(node: LivefileProcess, resource_id: str) -> dict[str, Any]:
    code, body = await asyncio.to_thread(get_json, f"{node.http_url}/resources/{resource_id}")
    assert code == 200, body
    return dict(body)


async def paced(upload: Any, data: bytes, rate: float) -> None:
    """Write ``data`` at about ``rate`` bytes per second."""
    started = time.monotonic()
    for offset in range(0, len(data), PIECE):
        await upload.write(data[offset : offset + PIECE])
        ahead = (offset + PIECE) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def outage(redis: RedisProcess, after: float, length: float) -> None:
    await asyncio.sleep(after)
    redis.kill()
    await asyncio.sleep(length)
    await asyncio.to_thread(redis.start_on_same_port)


async def test_an_owner_alive_through_an_outage_longer_than_its_lease_completes_everywhere(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    owner, other = nodes(start_server, redis_server, tmp_path / "shared")
    data = os.urandom(40 * 1024 * 1024)
    async with AsyncUploadClient(owner.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="big.bin", mime_type="application/octet-stream")
        resource_id = upload.resource_id
        async with (
            AsyncDownloadClient(watch_url(owner, resource_id), timeout=WAIT) as here,
            AsyncDownloadClient(watch_url(other, resource_id), timeout=WAIT) as there,
            AsyncDownloadClient(watch_url(other, resource_id), timeout=WAIT) as there_too,
        ):
            # Redis dies (SIGKILL) 2 s into a 10 s upload and is back 8 s later: the outage
            # is longer than two leases, and the upload ends about when Redis returns.
            killing = asyncio.create_task(outage(redis_server, after=2, length=8))
            await paced(upload, data, rate=4 * 1024 * 1024)
            result = await upload.finish()
            await killing
            ends = [await w.wait_for_end(timeout=WAIT) for w in (here, there, there_too)]
    assert result.status.transfer_status is TransferStatus.COMPLETED
    assert result.size == len(data)
    for end in ends:
        assert end.transfer_status is TransferStatus.COMPLETED, end
        assert end.current_size == len(data)
    for node in (owner, other):
        status = await final_status(node, resource_id)
        assert status.transfer_status is TransferStatus.COMPLETED
        assert (await info(node, resource_id))["checksum"] == result.checksum
    await asyncio.sleep(2 * LEASE)  # long enough for any reaper to have struck
    for node in (owner, other):
        assert (await final_status(node, resource_id)).transfer_status is TransferStatus.COMPLETED
        assert "was left unfinished" not in node.log()
    async with AsyncDownloadClient(watch_url(other, resource_id), timeout=WAIT) as reader:
        assert await reader.read(0, len(data)) == data


async def test_an_end_redis_cannot_record_in_time_is_a_failure_everywhere(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    owner, other = nodes(
        start_server, redis_server, tmp_path / "shared", "--terminal-write-patience", "2"
    )
    async with AsyncUploadClient(owner.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="late.bin", mime_type="application/octet-stream")
        resource_id = upload.resource_id
        async with (
            AsyncDownloadClient(watch_url(owner, resource_id), timeout=WAIT) as here,
            AsyncDownloadClient(watch_url(other, resource_id), timeout=WAIT) as there,
        ):
            await upload.write(b"a" * 1_000_000)
            await there.wait_for_status(lambda status: status.current_size == 1_000_000)
            redis_server.kill()
            await upload.write(b"b" * 1_000_000)
            with pytest.raises(ServerError) as refused:
                await upload.finish()
            assert "1011" in str(refused.value)
            assert "could not record the end in time" in str(refused.value)
            local_end = await here.wait_for_end(timeout=WAIT)
            await asyncio.to_thread(redis_server.start_on_same_port)
            remote_end = await there.wait_for_end(timeout=WAIT)
    for end in (local_end, remote_end):
        assert end.transfer_status is TransferStatus.FAILED, end
        assert end.error is not None
        assert end.error.code == "unrecorded"
        assert end.current_size == 2_000_000
    await asyncio.sleep(2 * LEASE)  # neither a late COMPLETED nor a reaper's FAILED follows
    for node in (owner, other):
        status = await final_status(node, resource_id)
        assert status.transfer_status is TransferStatus.FAILED
        assert status.error is not None
        assert status.error.code == "unrecorded"
    assert "recorded FAILED of" in owner.log()


async def test_an_owner_whose_resource_was_ended_elsewhere_is_not_acknowledged(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    owner, other = nodes(start_server, redis_server, tmp_path / "shared")
    # Not resumable: a resumable orphan waits for its client (test_resume_across_workers.py).
    async with AsyncUploadClient(owner.ws_url, timeout=WAIT, resume_for=0) as client:
        upload = await client.start(filename="frozen.bin", mime_type="application/octet-stream")
        resource_id = upload.resource_id
        async with AsyncDownloadClient(watch_url(other, resource_id), timeout=WAIT) as there:
            await upload.write(b"f" * 100_000)
            await there.wait_for_status(lambda status: status.current_size == 100_000)
            assert owner.process is not None
            # The owner stops renewing its lease while Redis answers everybody: after a whole
            # lease period of missing leases, the other process rightly declares it dead.
            owner.process.send_signal(signal.SIGSTOP)
            try:
                end = await there.wait_for_end(timeout=WAIT)
            finally:
                owner.process.send_signal(signal.SIGCONT)
            with pytest.raises(ServerError) as refused:
                await upload.finish()
    assert end.transfer_status is TransferStatus.FAILED
    assert end.error is not None
    assert end.error.code == "interrupted"
    assert "ended elsewhere" in str(refused.value)
    for node in (owner, other):
        status = await final_status(node, resource_id)
        assert status.transfer_status is TransferStatus.FAILED
        assert status.error is not None
        assert status.error.code == "interrupted"


async def test_redis_restarted_empty_loses_nothing_acknowledged(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "redis", persistent=False).start()
    try:
        owner, other = nodes(start_server, redis, tmp_path / "shared")
        done = os.urandom(2_000_000)
        text = b"".join(b"line %d\n" % n for n in range(50_000))
        async with AsyncUploadClient(owner.ws_url, timeout=WAIT) as client:
            finished = await client.upload_bytes(done, filename="done.bin")
            running = await client.start(
                filename="running.log", mime_type="text/plain", supports_line_access=True
            )
            async with AsyncDownloadClient(
                watch_url(other, running.resource_id), timeout=WAIT
            ) as follower:
                await running.write(text[:200_000])
                await follower.wait_for_status(lambda status: status.current_size == 200_000)
                redis.kill()
                await asyncio.to_thread(redis.start_on_same_port)  # empty
                # What was acknowledged is still there, through any process, with its checksum.
                for node in (other, owner):
                    status = await final_status(node, finished.resource_id)
                    assert status.transfer_status is TransferStatus.COMPLETED
                    assert status.current_size == len(done)
                    assert (await info(node, finished.resource_id))["checksum"] == (
                        finished.checksum
                    )
                async with AsyncDownloadClient(
                    watch_url(other, finished.resource_id), timeout=WAIT
                ) as late:
                    end = await late.wait_for_end(timeout=10)
                    assert end.transfer_status is TransferStatus.COMPLETED
                    assert await late.read(0, len(done)) == done
                # The upload that was running goes on; its watcher hears its end.
                await running.write(text[200_000:])
                result = await running.finish()
                followed = await follower.wait_for_end(timeout=WAIT)
        assert result.status.transfer_status is TransferStatus.COMPLETED
        assert followed.transfer_status is TransferStatus.COMPLETED
        assert followed.current_size == len(text)
        for node in (owner, other):
            status = await final_status(node, running.resource_id)
            assert status.transfer_status is TransferStatus.COMPLETED
            assert status.number_of_lines == 50_000
    finally:
        redis.stop()


async def test_a_watcher_arriving_while_pub_sub_reconnects_is_served_once_redis_is_back(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """A new watcher never reconnects its process's pub/sub connection itself (two coroutines
    reconnecting it at once broke it for good): one that comes while that connection is down
    waits for the process to re-establish it, and is served then."""
    owner, other = nodes(start_server, redis_server, tmp_path / "shared")
    data = os.urandom(100_000)
    async with AsyncUploadClient(owner.ws_url, timeout=WAIT) as client:
        finished = await client.upload_bytes(data, filename="done.bin")
        running = await client.start(filename="running.bin", mime_type="a/b")
        # The other process knows the finished resource (a terminal entry is kept) and uses
        # its pub/sub connection (a watcher of the running upload).
        assert (await final_status(other, finished.resource_id)).current_size == len(data)
        async with AsyncDownloadClient(
            watch_url(other, running.resource_id), timeout=WAIT
        ) as follower:
            await running.write(b"r" * 1_000)
            await follower.wait_for_status(lambda status: status.current_size == 1_000)
            redis_server.kill()
            assert await asyncio.to_thread(
                other.wait_for_log, "Redis pub/sub connection lost", WAIT
            )
            opened = other.log().count("connection open")
            late = AsyncDownloadClient(watch_url(other, finished.resource_id), timeout=WAIT)
            connecting = asyncio.create_task(late.connect())  # done at its first status
            try:
                # Accepted, it waits for the subscription the process cannot make yet.
                assert await asyncio.to_thread(
                    other.wait_for_log, "connection open", WAIT, opened + 1
                )
                assert not connecting.done()
                await asyncio.to_thread(redis_server.start_on_same_port)
                await connecting
                end = await late.wait_for_end(timeout=WAIT)
                assert end.transfer_status is TransferStatus.COMPLETED
                assert await late.read(0, len(data)) == data
            finally:
                await late.close()
            await running.write(b"s" * 1_000)
            result = await running.finish()
            followed = await follower.wait_for_end(timeout=WAIT)
    assert result.status.transfer_status is TransferStatus.COMPLETED
    assert followed.transfer_status is TransferStatus.COMPLETED
    assert followed.current_size == 2_000
    assert "cannot watch" not in other.log()


async def test_established_watchers_are_served_through_an_outage(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    owner, other = nodes(start_server, redis_server, tmp_path / "shared")
    data = os.urandom(3_000_000)
    async with AsyncUploadClient(owner.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="live.bin", mime_type="application/octet-stream")
        resource_id = upload.resource_id
        watchers = [
            AsyncDownloadClient(watch_url(node, resource_id), timeout=WAIT)
            for node in (owner, owner, other, other, other, other)
        ]
        for watcher in watchers:
            await watcher.__aenter__()
        try:
            await upload.write(data[:1_000_000])
            for watcher in watchers:
                await watcher.wait_for_status(lambda status: status.current_size == 1_000_000)
            redis_server.kill()
            # Every watcher, on either process, reads what it was told is there.
            for watcher in watchers:
                assert await watcher.read(0, 1_000_000) == data[:1_000_000]
            await upload.write(data[1_000_000:2_000_000])
            for watcher in watchers[:2]:  # the owner's watchers hear the owner at once
                await watcher.wait_for_status(lambda status: status.current_size == 2_000_000)
                assert await watcher.read(1_000_000, 2_000_000) == data[1_000_000:2_000_000]
            for watcher in watchers[2:]:  # the others are still served what they know
                assert await watcher.read(500_000, 1_000_000) == data[500_000:1_000_000]
            await asyncio.to_thread(redis_server.start_on_same_port)
            await upload.write(data[2_000_000:])
            result = await upload.finish()
            for watcher in watchers:
                end = await watcher.wait_for_end(timeout=WAIT)
                assert end.transfer_status is TransferStatus.COMPLETED
                assert await watcher.read(0, len(data)) == data
        finally:
            for watcher in watchers:
                await watcher.__aexit__(None, None, None)
    assert result.status.transfer_status is TransferStatus.COMPLETED
    assert "Internal server error" not in other.log()


async def test_a_watcher_of_an_orphan_hears_its_end_after_redis_restarted_empty(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "redis", persistent=False).start()
    try:
        owner, other = nodes(start_server, redis, tmp_path / "shared")
        # Not resumable: a resumable orphan waits for its client (test_resume_across_workers.py).
        async with AsyncUploadClient(owner.ws_url, timeout=WAIT, resume_for=0) as client:
            upload = await client.start(filename="orphan.bin", mime_type="a/b")
            resource_id = upload.resource_id
            async with AsyncDownloadClient(watch_url(other, resource_id), timeout=WAIT) as there:
                await upload.write(b"o" * 300_000)
                await there.wait_for_status(lambda status: status.current_size == 300_000)
                owner.kill()  # the owner dies, and Redis forgets everything
                redis.kill()
                await asyncio.to_thread(redis.start_on_same_port)
                # Not a silent wait: the entry comes back from its record, and the orphan is
                # failed like any other, with the bytes on disk.
                end = await there.wait_for_end(timeout=WAIT)
                assert end.transfer_status is TransferStatus.FAILED
                assert end.error is not None
                assert end.error.code == "interrupted"
                assert end.current_size == 300_000
                assert await there.read(0, 300_000) == b"o" * 300_000
        status = await final_status(other, resource_id)
        assert status.transfer_status is TransferStatus.FAILED
    finally:
        redis.stop()
