"""The blocking facade over the same async core, against a real server."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from livefile.api import (
    LivefileError,
    RequestError,
    ResourceFailedError,
    ResourceNotFoundError,
    ResourceStatus,
    TransferStatus,
)
from livefile.client_download import DownloadClient
from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess

WAIT = 30.0


def loop_threads() -> list[threading.Thread]:
    return [
        thread for thread in threading.enumerate() if thread.name.startswith("livefile-download-")
    ]


def test_sync_client_reads_follows_and_saves(server: LivefileProcess, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    reference = asyncio.run(upload(server.ws_url, data))
    with DownloadClient(reference, timeout=WAIT) as download:
        assert download.status.step_streaming() == ResourceStatus(
            transfer_status=TransferStatus.COMPLETED, current_size=100_000
        )
        assert download.read(10, 20) == data[10:20]
        with pytest.raises(RequestError, match="BAD_RANGE"):
            download.read(0, 100_001)
        assert b"".join(download.iter_bytes()) == data
        assert download.save(tmp_path / "copy.bin").current_size == 100_000
        assert download.wait_for_end().current_size == 100_000
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert loop_threads() == []


async def test_sync_iter_bytes_follows_a_growing_resource(server: LivefileProcess) -> None:
    data = os.urandom(600_000)
    seen: list[ResourceStatus] = []

    def follow(reference: str) -> bytes:
        with DownloadClient(reference, timeout=WAIT) as download:
            download.add_status_listener(seen.append)
            return b"".join(download.iter_bytes())

    async with RawUpload(server.ws_url) as raw:
        follower = asyncio.create_task(asyncio.to_thread(follow, raw.reference))
        await raw.trickle(data, seconds=0.5, pieces=10)
        await raw.finish()
        assert await follower == data
    assert seen[-1].transfer_status is TransferStatus.COMPLETED


async def test_sync_iter_bytes_raises_when_the_resource_failed(server: LivefileProcess) -> None:
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"half")
        await raw.drop()

    def follow() -> bytes:
        received = b""
        with (
            DownloadClient(raw.reference, timeout=WAIT) as download,
            pytest.raises(ResourceFailedError),
        ):
            for piece in download.iter_bytes():
                received += piece
        return received

    assert await asyncio.to_thread(follow) == b"half"


def test_stopping_a_sync_iteration_early_leaves_the_client_usable(
    server: LivefileProcess,
) -> None:
    data = os.urandom(9_000_000)
    reference = asyncio.run(upload(server.ws_url, data))
    with DownloadClient(reference, timeout=WAIT) as download:
        for piece in download.iter_bytes():
            assert piece == data[: len(piece)]
            break
        assert download.read(8_999_999, 9_000_000) == data[-1:]


def test_unknown_resource_raises_and_leaves_no_thread(server: LivefileProcess) -> None:
    with pytest.raises(ResourceNotFoundError):
        DownloadClient(f"{server.ws_url}/ws/streaming/download/{'d' * 32}").connect()
    assert loop_threads() == []


def test_unconnected_client_says_so_and_closing_twice_is_harmless(
    server: LivefileProcess,
) -> None:
    reference = asyncio.run(upload(server.ws_url, b"abc"))
    download = DownloadClient(reference, timeout=WAIT)
    with pytest.raises(LivefileError, match="not connected"):
        download.read(0, 1)
    download.connect()
    download.close()
    download.close()
    assert loop_threads() == []
