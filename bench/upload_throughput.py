"""Upload throughput: livefile through its SDK against a minimal FastAPI/uvicorn WebSocket
endpoint that only appends messages to a file, same bytes, same machine, same run.

Also measures the server's peak RSS while it takes the upload with 10 concurrent followers.
Data directories live on tmpfs (/dev/shm) so that the disk is not what is measured.

Run: uv run python -m bench.upload_throughput [--size-mib 1024] [--runs 3] [--followers 10]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

from bench.support import (
    SCRATCH,
    MiB,
    PeakRss,
    free_port,
    livefile_server,
    median,
    random_file,
    start_process,
    stop,
)
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient

MESSAGE = 1 * MiB


async def baseline_upload(source: Path) -> float:
    """Seconds to send ``source`` to the minimal append-only endpoint (plain websockets client)."""
    port = free_port()
    target = SCRATCH / "baseline.bin"
    server = start_process(
        [sys.executable, "-m", "bench.baseline_ws", str(port), str(target)], port
    )
    try:
        started = time.perf_counter()
        async with connect(f"ws://127.0.0.1:{port}/append", compression=None, max_size=None) as ws:
            with source.open("rb", buffering=0) as data:
                while piece := data.read(MESSAGE):
                    await ws.send(piece)
            await ws.send("done")
            assert await ws.recv() == "done"
        elapsed = time.perf_counter() - started
        assert target.stat().st_size == source.stat().st_size
        return elapsed
    finally:
        stop(server)
        target.unlink(missing_ok=True)


async def livefile_upload(source: Path, followers: int = 0) -> tuple[float, int]:
    """Seconds to upload ``source`` through the SDK, and the server's peak RSS meanwhile."""
    port = free_port()
    data_dir = SCRATCH / "livefile-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    server = livefile_server(port, data_dir)
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            with PeakRss(server.pid) as rss:
                upload = await client.start(
                    filename=source.name, mime_type="application/octet-stream"
                )
                follow = [
                    asyncio.create_task(follow_to_end(upload.reference)) for _ in range(followers)
                ]
                started = time.perf_counter()
                with source.open("rb", buffering=0) as data:
                    while piece := data.read(MESSAGE):
                        await upload.write(piece)
                result = await upload.finish()
                elapsed = time.perf_counter() - started
                digests = await asyncio.gather(*follow)
        assert result.size == source.stat().st_size
        assert all(digest == result.checksum for digest in digests)
        return elapsed, rss.peak
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)


async def follow_to_end(reference: str) -> str:
    md5 = hashlib.md5()
    async with AsyncDownloadClient(reference) as download:
        async for piece in download.iter_bytes():
            md5.update(piece)
    return md5.hexdigest()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--followers", type=int, default=10)
    args = parser.parse_args()
    size = args.size_mib * MiB
    source = random_file(SCRATCH / f"source-{args.size_mib}MiB.bin", size)

    baseline, ours = [], []
    for _ in range(args.runs):  # interleaved, so that machine noise hits both alike
        baseline.append(size / MiB / await baseline_upload(source))
        elapsed, _ = await livefile_upload(source)
        ours.append(size / MiB / elapsed)
    elapsed, peak = await livefile_upload(source, followers=args.followers)

    print(f"upload of {args.size_mib} MiB, median of {args.runs} runs (MiB/s):")
    print(
        f"  baseline (minimal FastAPI/uvicorn append endpoint): {median(baseline):8.1f}"
        f"   runs: {', '.join(f'{v:.0f}' for v in baseline)}"
    )
    print(
        f"  livefile SDK -> livefile serve:                     {median(ours):8.1f}"
        f"   runs: {', '.join(f'{v:.0f}' for v in ours)}"
    )
    print(f"  ratio livefile / baseline: {median(ours) / median(baseline):.2f}  (target >= 0.7)")
    print(
        f"with {args.followers} concurrent followers: {size / MiB / elapsed:.1f} MiB/s,"
        f" server peak RSS {peak / MiB:.1f} MiB (target < 150 MiB)"
    )


if __name__ == "__main__":
    asyncio.run(main())
