"""Upload throughput: livefile through its SDK against a minimal FastAPI/uvicorn WebSocket
endpoint that only appends messages to a file, same bytes, same machine, same run, at several
sizes (the report plots throughput against size).

At the largest size it also uploads with 10 followers downloading the resource while it grows
(in a child process, as followers would be elsewhere): the upload's throughput may fall by less
than 20 % against the upload alone, and the server's peak RSS is recorded.
Data directories live in SCRATCH (tmpfs) so that the disk is not what is measured.

Run: uv run python -m bench --only upload_throughput
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import crc32c
import psutil
from websockets.asyncio.client import connect

from bench.peers import CpuMeter
from bench.support import (
    SCRATCH,
    MiB,
    PeakRss,
    Result,
    end_child,
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
FOLLOWERS = 10
BASELINE = "minimal FastAPI/uvicorn WebSocket endpoint (plain client)"


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


def _follow_many(reference: str, count: int, pipe: Connection) -> None:
    """In a child process: ``count`` followers read the resource to its end; sends "ready" once
    all are connected, then each one's (size, CRC-32C)."""

    async def follow(client: AsyncDownloadClient) -> tuple[int, int]:
        crc, size = 0, 0
        async with client:
            async for piece in client.iter_bytes():
                crc = crc32c.crc32c(piece, crc)
                size += len(piece)
        return size, crc

    async def main() -> list[tuple[int, int]]:
        clients = [AsyncDownloadClient(reference) for _ in range(count)]
        for client in clients:
            await client.connect()
        pipe.send("ready")
        return await asyncio.gather(*(follow(client) for client in clients))

    pipe.send(asyncio.run(main()))


@dataclass
class UploadRun:
    """One SDK upload: its seconds, the server's peak RSS, and the CPU seconds the server, the
    uploader and the followers' process spent while it ran."""

    seconds: float
    peak_rss: int
    server_cpu: float
    uploader_cpu: float
    followers_cpu: float


async def livefile_upload(source: Path, followers: int = 0) -> UploadRun:
    """Upload ``source`` through the SDK, with ``followers`` reading it meanwhile."""
    port = free_port()
    data_dir = SCRATCH / "livefile-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    server = livefile_server(port, data_dir)
    worker: multiprocessing.process.BaseProcess | None = None
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            with PeakRss(server.pid) as rss:
                upload = await client.start(
                    filename=source.name, mime_type="application/octet-stream"
                )
                parent: Connection | None = None
                if followers:
                    ctx = multiprocessing.get_context("spawn")
                    parent, child = ctx.Pipe()
                    worker = ctx.Process(
                        target=_follow_many, args=(upload.reference, followers, child)
                    )
                    worker.start()
                    if not await asyncio.to_thread(parent.poll, 60):
                        raise RuntimeError("the followers did not connect")
                    assert parent.recv() == "ready"
                follower_process = psutil.Process(worker.pid) if worker is not None else None
                followers_before = _cpu_seconds(follower_process)
                with CpuMeter(server.pid) as meter:
                    with source.open("rb", buffering=0) as data:
                        while piece := data.read(MESSAGE):
                            await upload.write(piece)
                    result = await upload.finish()
                followers_cpu = _cpu_seconds(follower_process) - followers_before
                if parent is not None:
                    if not await asyncio.to_thread(parent.poll, 300):
                        raise RuntimeError("the followers did not finish")
                    seen: list[tuple[int, int]] = parent.recv()
                    expected = (result.size, int(result.checksum.rpartition(":")[2], 16))
                    assert seen == [expected] * followers, "a follower got other bytes"
        assert result.size == source.stat().st_size
        return UploadRun(meter.wall, rss.peak, meter.server, meter.client, followers_cpu)
    finally:
        end_child(worker)
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)


def _cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def _cpu_note(runs: list[UploadRun]) -> str:
    """Median CPU seconds of server, uploader and followers during the upload, and the wall."""
    server = median([run.server_cpu for run in runs])
    uploader = median([run.uploader_cpu for run in runs])
    followers = median([run.followers_cpu for run in runs])
    wall = median([run.seconds for run in runs])
    text = f"server {server:.2f} s + uploader {uploader:.2f} s"
    if followers:
        text += f" + followers {followers:.2f} s"
    return f"{text} of CPU in {wall:.2f} s wall"


async def measure(runs: int, quick: bool) -> list[Result]:
    sizes_mib = [2, 8] if quick else [16, 128, 1024]
    results: list[Result] = []
    largest = sizes_mib[-1]
    alone: list[float] = []
    followed: list[float] = []
    peaks: list[float] = []
    alone_runs: list[UploadRun] = []
    followed_runs: list[UploadRun] = []
    for size_mib in sizes_mib:
        size = size_mib * MiB
        source = random_file(SCRATCH / f"source-{size_mib}MiB.bin", size)
        baseline: list[float] = []
        ours: list[float] = []
        for _ in range(runs):  # interleaved, so that machine noise hits both alike
            baseline.append(size_mib / await baseline_upload(source))
            run = await livefile_upload(source)
            ours.append(size_mib / run.seconds)
            if size_mib == largest:
                alone_runs.append(run)
                run = await livefile_upload(source, followers=FOLLOWERS)
                followed_runs.append(run)
                followed.append(size_mib / run.seconds)
                peaks.append(run.peak_rss / MiB)
        if size_mib == largest:
            alone = ours
        results.append(
            Result(
                benchmark=f"upload {_size_text(size_mib)}",
                subject="livefile SDK -> livefile serve",
                unit="MiB/s",
                runs=ours,
                baseline=BASELINE,
                baseline_runs=baseline,
                target=0.8 if size_mib == largest else None,
                target_text=">= 0.8" if size_mib == largest else "",
                series={"throughput_vs_size": {"group": "upload", "size_mib": size_mib}},
            )
        )
    results.append(
        Result(
            benchmark=f"upload {_size_text(largest)} with {FOLLOWERS} followers downloading",
            subject=f"upload with {FOLLOWERS} followers",
            unit="MiB/s",
            runs=followed,
            baseline="upload alone",
            baseline_runs=alone,
            target=0.8,
            target_text=">= 0.8 (falls by < 20 %)",
            notes="followers run in one child process and read the whole resource with"
            " AsyncDownloadClient.iter_bytes while it grows. CPU during the upload (median):"
            f" alone {_cpu_note(alone_runs)}; with {FOLLOWERS} followers"
            f" {_cpu_note(followed_runs)}. The followers receive ten times the bytes the"
            " uploader sends, on the same cores as uploader and server.",
            series={
                "alone_server_cpu": [run.server_cpu for run in alone_runs],
                "alone_uploader_cpu": [run.uploader_cpu for run in alone_runs],
                "followed_server_cpu": [run.server_cpu for run in followed_runs],
                "followed_uploader_cpu": [run.uploader_cpu for run in followed_runs],
                "followed_followers_cpu": [run.followers_cpu for run in followed_runs],
            },
        )
    )
    results.append(
        Result(
            benchmark=f"server peak RSS, upload {_size_text(largest)} with {FOLLOWERS} followers",
            subject="livefile serve",
            unit="MiB",
            runs=peaks,
            higher_is_better=False,
            target=150,
            target_text="< 150 MiB",
        )
    )
    return results


def _size_text(size_mib: int) -> str:
    return (
        f"{size_mib // 1024} GiB"
        if size_mib >= 1024 and size_mib % 1024 == 0
        else (f"{size_mib} MiB")
    )
