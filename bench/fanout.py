"""Status fan-out: one upload at a steady rate watched by many followers, on one process
without Redis and on two worker processes sharing Redis, in the same run.

Latency is measured from the checkpoint to each follower's receipt of it: the uploader hears
each checkpoint on its own connection from the process that makes it, so the time it receives
a status is the checkpoint's time (give or take a loopback hop), and followers in other
processes stamp the same status on arrival with the same system-wide monotonic clock.

Run: uv run python -m bench --only fanout
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import shutil
import time
from typing import Any

import psutil
from websockets.asyncio.client import connect

from bench.samples import percentile, thin
from bench.support import (
    LIVEFILE,
    SCRATCH,
    MiB,
    Result,
    free_port,
    livefile_server,
    start_process,
    stop,
)

PIECE = 64 * 1024
INTERVAL = 0.25


def follow_many(uri: str, count: int, results: Any) -> None:
    """In a child process: ``count`` watchers; returns each one's (time, size, status) list."""

    async def watch() -> list[tuple[float, int, str]]:
        seen: list[tuple[float, int, str]] = []
        async with connect(
            uri, compression=None, max_size=None, open_timeout=60, subprotocols=LIVEFILE
        ) as ws:
            async for message in ws:
                status = json.loads(message)["resourceStatus"]
                seen.append((time.monotonic(), status["currentSize"], status["transferStatus"]))
                if status["transferStatus"] in ("COMPLETED", "FAILED"):
                    return seen
        return seen

    async def main() -> list[list[tuple[float, int, str]]]:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(watch()))
            await asyncio.sleep(0.002)  # pace the connection storm
        return await asyncio.gather(*tasks)

    results.put(asyncio.run(main()))


Record = list[tuple[float, int, str]]


async def upload_steady(
    ws_url: str, seconds: float, rate: float, followers: int, settle: float = 3.0
) -> tuple[dict[int, float], list[Record]]:
    """Upload at ``rate`` bytes/s for ``seconds`` while ``followers`` watch; returns the
    checkpoints (size -> time the uploader heard of it) and each follower's statuses."""
    checkpoints: dict[int, float] = {}
    async with connect(
        f"{ws_url}/ws/streaming/upload", compression=None, subprotocols=LIVEFILE
    ) as ws:
        await ws.send(
            json.dumps({"@": "StartUpload", "metadata": {"filename": "f.bin", "mimeType": "a/b"}})
        )
        ready = json.loads(await ws.recv())
        uri = ready["reference"]["uri"]
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        workers = [
            ctx.Process(target=follow_many, args=(uri, followers // 2, results)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()

        async def receive() -> None:
            async for message in ws:
                parsed = json.loads(message)
                if parsed["@"] == "StatusChanged":
                    checkpoints.setdefault(
                        parsed["resourceStatus"]["currentSize"], time.monotonic()
                    )
                elif parsed["@"] == "UploadAcknowledged":
                    # COMPLETED is published just before the acknowledgement leaves.
                    checkpoints.setdefault(parsed["size"], time.monotonic())
                    return

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(settle)  # let the followers connect before the data starts
        md5, sent, started = hashlib.md5(), 0, time.monotonic()
        piece = bytes(PIECE)
        while (elapsed := time.monotonic() - started) < seconds:
            if sent < elapsed * rate:
                await ws.send(piece)
                md5.update(piece)
                sent += PIECE
            else:
                await asyncio.sleep(PIECE / rate)
        await ws.send(json.dumps({"@": "FinishUpload", "checksum": md5.hexdigest()}))
        await receiver
        per_follower: list[Record] = [
            record for _ in workers for record in results.get(timeout=120)
        ]
        for worker in workers:
            worker.join()
    return checkpoints, per_follower


def cpu_seconds(pid: int) -> float:
    process = psutil.Process(pid)
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        total += sum(child.cpu_times()[:2])
    return total


class Scenario:
    """One run of one scenario: the latencies (ms) of every status every follower received."""

    def __init__(self, latencies: list[float], end_lag: list[float], cpu: float, ok: int) -> None:
        self.latencies = latencies
        self.end_lag = end_lag
        self.cpu = cpu
        self.completed = ok


async def scenario(name: str, followers: int, seconds: float, rate: float, *extra: str) -> Scenario:
    data_dir = SCRATCH / f"fanout-{name}"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir, "--checkpoint-interval", str(INTERVAL), *extra)
    try:
        cpu_before = cpu_seconds(server.pid)
        checkpoints, records = await upload_steady(
            f"ws://127.0.0.1:{port}", seconds, rate, followers, 3.0 if followers > 50 else 1.0
        )
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    latencies = [
        (seen_at - checkpoints[size]) * 1000
        for record in records
        for seen_at, size, _ in record
        if size in checkpoints and size > 0
    ]
    final_size = max(checkpoints)
    end_lag = [
        (record[-1][0] - checkpoints[final_size]) * 1000
        for record in records
        if record and record[-1][1] == final_size
    ]
    complete = sum(1 for record in records if record and record[-1][2] == "COMPLETED")
    return Scenario(latencies, end_lag, cpu, complete)


async def measure(runs: int, quick: bool) -> list[Result]:
    followers = 20 if quick else 500
    seconds = 2.0 if quick else 10.0
    rate = (5.0 if quick else 20.0) * MiB
    redis_dir = SCRATCH / "fanout-redis"
    shutil.rmtree(redis_dir, ignore_errors=True)
    redis_dir.mkdir(parents=True)
    redis_port = free_port()
    redis = start_process(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
         "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
        redis_port,
    )  # fmt: skip
    alone: list[Scenario] = []
    shared: list[Scenario] = []
    try:
        for _ in range(runs):  # interleaved, so that machine noise hits both alike
            alone.append(await scenario("one-process", followers, seconds, rate))
            shared.append(
                await scenario(
                    "two-workers",
                    followers,
                    seconds,
                    rate,
                    "--workers",
                    "2",
                    "--redis-url",
                    f"redis://127.0.0.1:{redis_port}/0",
                )
            )
    finally:
        stop(redis)
        shutil.rmtree(redis_dir, ignore_errors=True)
    target = INTERVAL * 1000 + 50
    what = f"{followers} followers of a {rate / MiB:.0f} MiB/s upload, {seconds:.0f} s"
    results: list[Result] = []
    for name, scenarios in (("one process", alone), ("2 workers + Redis", shared)):
        samples = [value for one in scenarios for value in one.latencies]
        completed = min(one.completed for one in scenarios)
        results.append(
            Result(
                benchmark=f"status fan-out: {what}, status latency p95",
                subject=name,
                unit="ms",
                runs=[percentile(one.latencies, 95) for one in scenarios],
                higher_is_better=False,
                target=target,
                target_text=f"p95 <= {target:.0f} ms",
                series={"latency_samples_ms": thin(samples)},
                notes=f"p50 {percentile(samples, 50):.1f} / p99 {percentile(samples, 99):.1f} ms"
                " over all runs; final status lag max"
                f" {max(lag for one in scenarios for lag in one.end_lag):.1f} ms;"
                f" {completed} of {followers} followers saw COMPLETED in the worst run."
                " Latency is counted from when the uploader heard of the checkpoint; a"
                " negative one means a follower heard first (the uploader's loop is busy"
                " sending data)",
            )
        )
    results.append(
        Result(
            benchmark=f"status fan-out: {what}, server CPU",
            subject="2 workers + Redis",
            unit="s",
            runs=[one.cpu for one in shared],
            baseline="one process",
            baseline_runs=[one.cpu for one in alone],
            higher_is_better=False,
            notes="CPU seconds of the server (and its workers) over the run",
        )
    )
    return results
