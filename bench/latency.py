"""Live-tail latency: from an uploader's write to a follower's receipt of those bytes.

A writer sends small timestamped records through the upload SDK at random moments (gaps drawn
uniformly, so that writes land anywhere within a checkpoint interval); a follower in another
process reads the resource with ``AsyncDownloadClient.iter_bytes`` and stamps each record on
arrival. Both use CLOCK_MONOTONIC, which is system-wide on Linux. Measured at the default
checkpoint interval (250 ms: a quiet uploader's bytes are published within one interval) and
at 0 (every write published at once). Target: p95 <= interval + 10 ms.

Run: uv run python -m bench --only latency
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import shutil
import struct
import time
from multiprocessing.connection import Connection

from bench.samples import percentile, thin
from bench.support import SCRATCH, Result, end_child, free_port, livefile_server, stop
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient

RECORD = struct.Struct("<Qd48x")  # sequence number, monotonic send time; 64 bytes in all
INTERVALS = (0.25, 0.0)


def _follow(reference: str, pipe: Connection) -> None:
    """In a child process: follow the resource to its end; sends "ready" once connected, then
    the latency (ms) of every record in order."""

    async def main() -> list[float]:
        latencies: list[float] = []
        pending = b""
        async with AsyncDownloadClient(reference) as download:
            pipe.send("ready")
            async for piece in download.iter_bytes():
                now = time.monotonic()
                pending += piece
                whole = len(pending) - len(pending) % RECORD.size
                for offset in range(0, whole, RECORD.size):
                    number, sent = RECORD.unpack_from(pending, offset)
                    assert number == len(latencies), "records out of order"
                    latencies.append((now - sent) * 1000)
                pending = pending[whole:]
        return latencies

    pipe.send(asyncio.run(main()))


async def one_run(interval: float, messages: int, mean_gap: float) -> list[float]:
    """Latencies (ms) of ``messages`` records written at random moments."""
    data_dir = SCRATCH / "latency-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir, "--checkpoint-interval", str(interval))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    follower: multiprocessing.process.BaseProcess | None = None
    rng = random.Random(interval * 1000 + messages)
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            upload = await client.start(filename="tail.bin", mime_type="application/octet-stream")
            follower = ctx.Process(target=_follow, args=(upload.reference, child))
            follower.start()
            if not await asyncio.to_thread(parent.poll, 60):
                raise RuntimeError("the follower did not connect")
            assert parent.recv() == "ready"
            for number in range(messages):
                await asyncio.sleep(rng.uniform(0, 2 * mean_gap))
                await upload.write(RECORD.pack(number, time.monotonic()))
            await upload.finish()
            if not await asyncio.to_thread(parent.poll, 60):
                raise RuntimeError("the follower did not finish")
            latencies: list[float] = parent.recv()
        assert len(latencies) == messages, f"{len(latencies)} of {messages} records arrived"
        return latencies
    finally:
        end_child(follower)
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)


async def measure(runs: int, quick: bool) -> list[Result]:
    messages = 40 if quick else 500
    mean_gap = 0.02 if quick else 0.03
    samples: dict[float, list[list[float]]] = {interval: [] for interval in INTERVALS}
    for _ in range(runs):  # interleaved, so that machine noise hits both alike
        for interval in INTERVALS:
            samples[interval].append(await one_run(interval, messages, mean_gap))
    results: list[Result] = []
    for interval in INTERVALS:
        per_run = samples[interval]
        pooled = [value for run in per_run for value in run]
        target = interval * 1000 + 10
        label = (
            "live-tail latency, write -> follower receipt,"
            f" checkpoint interval {interval * 1000:.0f} ms"
        )
        results.append(
            Result(
                benchmark=f"{label}, p95",
                subject="livefile SDK upload -> iter_bytes",
                unit="ms",
                runs=[percentile(run, 95) for run in per_run],
                higher_is_better=False,
                target=target,
                target_text=f"p95 <= {target:.0f} ms",
                series={"latency_samples_ms": thin(pooled)},
                notes=f"{messages} records of {RECORD.size} bytes per run, written at random"
                f" gaps of 0-{2 * mean_gap * 1000:.0f} ms",
            )
        )
        for p in (50, 99):
            results.append(
                Result(
                    benchmark=f"{label}, p{p}",
                    subject="livefile SDK upload -> iter_bytes",
                    unit="ms",
                    runs=[percentile(run, p) for run in per_run],
                    higher_is_better=False,
                )
            )
    return results
