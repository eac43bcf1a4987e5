"""tus uploads served by several processes sharing Redis and one data directory: consecutive
PATCHes of one upload land on different processes, each taking the upload over in turn (its
lease is the lock between them), and watchers on any process follow it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import crc32c
import requests

from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download import AsyncDownloadClient
from tests.conftest import ServerFactory
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess

TUS = {"Tus-Resumable": "1.0.0"}
DATA = os.urandom(500_000)
PIECE = 100_000
WAIT = 30.0


def grown_past(offset: int) -> Callable[[ResourceStatus], bool]:
    return lambda status: status.current_size > offset


def patch(server: LivefileProcess, path: str, offset: int, body: bytes) -> requests.Response:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    return requests.patch(f"{server.http_url}{path}", data=body, headers=headers)


async def test_patches_alternating_between_two_processes(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    common = ("--redis-url", redis_server.url, "--lease-seconds", "3")
    nodes = [start_server(*common, data_dir=tmp_path / "shared") for _ in range(2)]
    created = await asyncio.to_thread(
        requests.post,
        f"{nodes[0].http_url}/files/",
        headers={**TUS, "Upload-Length": str(len(DATA))},
    )
    assert created.status_code == 201
    path = "/files/" + created.headers["X-Livefile-Resource-Id"]
    reference = created.headers["X-Livefile-Reference"].replace(
        str(nodes[0].port), str(nodes[1].port)
    )
    async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:  # on the other node
        for number, offset in enumerate(range(0, len(DATA), PIECE)):
            node = nodes[number % 2]
            head = await asyncio.to_thread(requests.head, f"{node.http_url}{path}", headers=TUS)
            assert head.headers["Upload-Offset"] == str(offset)
            answer = await asyncio.to_thread(
                patch, node, path, offset, DATA[offset : offset + PIECE]
            )
            assert answer.status_code == 204, answer.text
            status = await watcher.wait_for_status(grown_past(offset), WAIT)
            assert status.current_size == offset + PIECE
        end = await watcher.wait_for_end(WAIT)
        assert end.transfer_status is TransferStatus.COMPLETED
        assert await watcher.read(0, len(DATA)) == DATA
    info_url = f"{nodes[0].http_url}/resources/{path.rsplit('/', 1)[1]}"
    info = (await asyncio.to_thread(requests.get, info_url)).json()
    assert info["checksum"] == f"{crc32c.crc32c(DATA):08x}"


def test_a_whole_upload_created_on_one_process_is_complete_on_the_other(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """A small creation-with-upload is stored and recorded COMPLETED in one go: the other
    process finds it complete in the shared catalog, with its bytes and checksum."""
    common = ("--redis-url", redis_server.url)
    nodes = [start_server(*common, data_dir=tmp_path / "shared") for _ in range(2)]
    body = DATA[:10_000]
    created = requests.post(
        f"{nodes[0].http_url}/files/",
        data=body,
        headers={
            **TUS,
            "Upload-Length": "10000",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert created.status_code == 201, created.text
    resource_id = created.headers["X-Livefile-Resource-Id"]
    info = requests.get(f"{nodes[1].http_url}/resources/{resource_id}").json()
    assert info["status"]["transferStatus"] == "COMPLETED"
    assert info["checksum"] == f"{crc32c.crc32c(body):08x}"
    assert requests.get(f"{nodes[1].http_url}/resources/{resource_id}/content").content == body
    head = requests.head(f"{nodes[1].http_url}/files/{resource_id}", headers=TUS)
    assert head.headers["Upload-Offset"] == "10000"


def test_a_process_writing_an_upload_holds_it_against_the_others(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    common = ("--redis-url", redis_server.url, "--lease-seconds", "3")
    first, second = (start_server(*common, data_dir=tmp_path / "shared") for _ in range(2))
    created = requests.post(
        f"{first.http_url}/files/", headers={**TUS, "Upload-Length": str(len(DATA))}
    )
    path = "/files/" + created.headers["X-Livefile-Resource-Id"]
    info_url = f"{first.http_url}/resources/{path.rsplit('/', 1)[1]}"

    def published_size() -> int:
        size: int = requests.get(info_url).json()["status"]["currentSize"]
        return size

    def slow_body() -> Iterator[bytes]:
        yield DATA[:PIECE]
        # Once the first process has taken the first piece it holds the upload (the client
        # sends the next request at once: the first process may not have read this one yet).
        deadline = time.monotonic() + WAIT
        while published_size() < PIECE:
            assert time.monotonic() < deadline, "the first piece was never published"
            time.sleep(0.02)
        # While this PATCH is still open on the first process, the second refuses to write.
        answer = patch(second, path, PIECE, DATA[PIECE : 2 * PIECE])
        assert answer.status_code == 423
        yield DATA[PIECE : 2 * PIECE]

    answer = requests.patch(
        f"{first.http_url}{path}",
        data=slow_body(),
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert answer.status_code == 204
    assert answer.headers["Upload-Offset"] == str(2 * PIECE)
    assert patch(second, path, 2 * PIECE, DATA[2 * PIECE :]).status_code == 204
    content = requests.get(f"{first.http_url}/resources/{path.rsplit('/', 1)[1]}/content").content
    assert content == DATA
