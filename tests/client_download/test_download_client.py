"""The download SDK against a real server: statuses, ranges, pipelining, following bytes and
lines to the end, failures that raise, and the sync facade."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from livefile.api import (
    RequestError,
    ResourceFailedError,
    ResourceNotFoundError,
    ResourceStatus,
    TransferStatus,
)
from livefile.client_download import AsyncDownloadClient, DownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.support.server import LivefileProcess

WAIT = 30.0


async def completed(server: LivefileProcess, data: bytes, lines: bool = False) -> str:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(
            data, filename="d.txt", mime_type="text/plain", supports_line_access=lines
        )
    return result.reference


async def test_current_status_is_known_on_connect(server: LivefileProcess) -> None:
    reference = await completed(server, b"abc")
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert download.status == ResourceStatus(
            transfer_status=TransferStatus.COMPLETED, current_size=3
        )


async def test_pipelined_reads_each_get_their_own_bytes(server: LivefileProcess) -> None:
    data = os.urandom(5_000_000)
    reference = await completed(server, data)
    ranges = [(0, 10), (10, 10), (4_000_000, 5_000_000), (123, 2_500_000), (4_999_999, 5_000_000)]
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        replies = await asyncio.gather(*(download.read(start, end) for start, end in ranges))
    assert replies == [data[start:end] for start, end in ranges]


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (3, 1), (0, 4)])
async def test_bad_range_raises_and_the_client_stays_usable(
    server: LivefileProcess, start: int, end: int
) -> None:
    reference = await completed(server, b"abc")
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        with pytest.raises(RequestError, match=r"BAD_RANGE.*\[0, 3\]") as caught:
            await download.read(start, end)
        assert caught.value.code == "BAD_RANGE"
        assert await download.read(1, 3) == b"bc"


async def test_following_a_growing_resource_yields_every_byte_then_ends(
    server: LivefileProcess,
) -> None:
    data = os.urandom(3_000_000)
    seen: list[ResourceStatus] = []
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="g.bin", mime_type="application/octet-stream")
        async with AsyncDownloadClient(upload.reference, timeout=WAIT) as download:
            download.add_status_listener(seen.append)

            async def follow() -> bytes:
                return b"".join([piece async for piece in download.iter_bytes()])

            follower = asyncio.create_task(follow())
            for offset in range(0, len(data), 150_000):
                await upload.write(data[offset : offset + 150_000])
                await asyncio.sleep(0.01)  # pacing the producer
            await upload.finish()
            assert await follower == data
    sizes = [status.current_size for status in seen]
    assert sizes == sorted(sizes)
    assert seen[-1].transfer_status is TransferStatus.COMPLETED


async def test_following_a_failed_resource_raises_after_its_bytes(
    server: LivefileProcess,
) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="f.bin", mime_type="application/octet-stream")
        await upload.write(b"0123456789")
        async with AsyncDownloadClient(upload.reference, timeout=WAIT) as download:
            await download.wait_for_status(lambda status: status.current_size == 10)
            await upload.abort()
            received = bytearray()
            with pytest.raises(ResourceFailedError, match="FAILED at 10 bytes") as caught:
                async for piece in download.iter_bytes():
                    received += piece
    assert bytes(received) == b"0123456789"
    assert caught.value.size == 10


async def test_lines_page_through_bounded_replies(server: LivefileProcess) -> None:
    lines = [f"{n:06d} {'z' * 300}\n" for n in range(6000)]  # ~1.8 MB: several replies
    reference = await completed(server, "".join(lines).encode(), lines=True)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await download.lines(0, 6000) == lines
        assert await download.lines(5998, 2) == lines[5998:]


async def test_line_iterator_follows_a_growing_text(server: LivefileProcess) -> None:
    text = [f"step {n} done\n" for n in range(300)]
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(
            filename="run.log", mime_type="text/plain", supports_line_access=True
        )
        async with AsyncDownloadClient(upload.reference, timeout=WAIT) as download:

            async def follow() -> list[str]:
                return [line async for line in download.iter_lines()]

            follower = asyncio.create_task(follow())
            for n, line in enumerate(text):
                # Split lines across messages so that partial lines are in flight.
                await upload.write(line[:3].encode())
                await upload.write(line[3:].encode())
                if n % 30 == 0:
                    await asyncio.sleep(0.02)
            await upload.write(b"no newline at the end")
            await upload.finish()
            assert await follower == [*text, "no newline at the end"]


async def test_unknown_resource_raises_not_found(server: LivefileProcess) -> None:
    with pytest.raises(ResourceNotFoundError):
        async with AsyncDownloadClient(f"{server.ws_url}/ws/streaming/download/{'e' * 32}"):
            pass


def test_malformed_reference_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="Not a livefile"):
        AsyncDownloadClient("ws://127.0.0.1:1/ws/streaming/download/../../etc/passwd")


async def test_save_writes_the_whole_resource(server: LivefileProcess, tmp_path: Path) -> None:
    data = os.urandom(1_234_567)
    reference = await completed(server, data)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        final = await download.save(tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert final.transfer_status is TransferStatus.COMPLETED


def test_sync_facade_reads_follows_and_saves(server: LivefileProcess, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    reference = asyncio.run(completed(server, data))
    with DownloadClient(reference, timeout=WAIT) as download:
        assert download.read(10, 20) == data[10:20]
        assert b"".join(download.iter_bytes()) == data
        download.save(tmp_path / "s.bin")
        assert download.wait_for_end().current_size == 100_000
    assert (tmp_path / "s.bin").read_bytes() == data
