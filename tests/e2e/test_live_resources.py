"""Live resources end to end through both SDKs and a real server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from livefile.api import ResourceFailedError, ResourceStatus, TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.support.server import LivefileProcess
from tests.support.wire import crc32c_hex

WAIT = 60.0


def write_paced(
    path: Path, data: bytes, seconds: float, pieces: int, done: threading.Event
) -> None:
    """Append ``data`` to ``path`` in ``pieces`` writes spread over ``seconds`` (another
    process writing a log, as far as the uploader can tell), then set ``done``."""
    step = len(data) // pieces + 1
    started = time.monotonic()
    with path.open("ab", buffering=0) as target:
        for index, offset in enumerate(range(0, len(data), step)):
            target.write(data[offset : offset + step])
            delay = started + seconds * (index + 1) / pieces - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the producer, not synchronisation
    done.set()


async def follow_md5(reference: str) -> tuple[str, ResourceStatus]:
    md5 = hashlib.md5()
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        async for piece in download.iter_bytes():
            md5.update(piece)
        return md5.hexdigest(), download.status


@pytest.mark.slow
async def test_live_file_of_200_mb_is_followed_to_an_identical_copy(
    server: LivefileProcess, tmp_path: Path
) -> None:
    data = os.urandom(200_000_000)
    source = tmp_path / "live.bin"
    source.touch()
    written = threading.Event()
    writer = threading.Thread(target=write_paced, args=(source, data, 5.0, 100, written))
    reference: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        writer.start()
        upload = asyncio.create_task(
            client.upload_live_file(
                source,
                until=written.is_set,
                mime_type="application/octet-stream",
                on_reference=reference.set_result,
            )
        )
        follower = asyncio.create_task(follow_md5(await reference))
        result = await upload
        followed_md5, followed_status = await follower
    writer.join()
    expected = hashlib.md5(data).hexdigest()
    assert result.checksum == crc32c_hex(data)
    assert result.status.transfer_status is TransferStatus.COMPLETED
    assert result.status.current_size == 200_000_000
    assert followed_md5 == expected
    assert followed_status.same_state(result.status)
    again_md5, _ = await follow_md5(result.reference)
    assert again_md5 == expected


async def test_trickled_text_ends_the_same_for_early_and_late_watchers(
    server: LivefileProcess,
) -> None:
    lines = [f"line {n}: {'x' * (n % 50)}\n".encode() for n in range(300)]
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="run.log", mime_type="text/plain")
        early = asyncio.create_task(follow_md5(upload.reference))
        late: asyncio.Task[tuple[str, ResourceStatus]] | None = None
        for index, line in enumerate(lines):
            await upload.write(line)
            if index == 150:
                late = asyncio.create_task(follow_md5(upload.reference))
            if index % 10 == 0:
                await asyncio.sleep(0.07)  # pacing the producer over ~2 s
        result = await upload.finish()
    assert late is not None
    (early_md5, early_status), (late_md5, late_status) = await asyncio.gather(early, late)
    expected = hashlib.md5(b"".join(lines)).hexdigest()
    assert early_md5 == late_md5 == expected
    assert early_status.same_state(result.status)
    assert late_status.same_state(result.status)
    assert result.status.transfer_status is TransferStatus.COMPLETED


async def test_zero_byte_upload_completes_with_size_zero(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(b"", filename="empty", mime_type="text/plain")
    assert result.status == ResourceStatus(transfer_status=TransferStatus.COMPLETED, current_size=0)
    async with AsyncDownloadClient(result.reference, timeout=WAIT) as download:
        assert download.status.same_state(result.status)
        assert await download.read(0, 0) == b""


async def test_aborted_upload_is_failed_for_watchers_with_its_bytes(
    server: LivefileProcess,
) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="half.bin", mime_type="application/octet-stream")
        async with AsyncDownloadClient(upload.reference, timeout=WAIT) as watcher:
            await upload.write(b"a" * 1000)
            await watcher.wait_for_status(lambda status: status.current_size == 1000)
            await upload.abort("the producer crashed")
            final = await watcher.wait_for_end()
            assert final.step_streaming() == ResourceStatus(
                transfer_status=TransferStatus.FAILED, current_size=1000
            )
            assert await watcher.read(0, 1000) == b"a" * 1000
            with pytest.raises(ResourceFailedError):
                async for _ in watcher.iter_bytes():
                    pass
