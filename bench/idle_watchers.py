"""Idle watchers: 10,000 download connections on one server process, each only listening to
the statuses of one upload, must each receive every status while the server stays below
1 GiB of resident memory.

The watchers are plain ``websockets`` connections (no SDK: its per-connection machinery is not
what is measured, and one process could not hold 10,000 of them cheaply) spread over several
client processes. The open-file limit is raised to the hard limit for the server and the
clients; the server's --max-downloads is raised above the count.

Run: uv run python -m bench --only idle_watchers
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import shutil
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from websockets.asyncio.client import connect

from bench.samples import raise_fd_limit
from bench.support import (
    LIVEFILE,
    SCRATCH,
    MiB,
    PeakRss,
    Result,
    end_child,
    free_port,
    livefile_server,
    stop,
)
from livefile.client_upload import AsyncUploadClient

PIECE = 1024
STEPS = 3  # writes after every watcher is connected, each published as its own checkpoint
HANDSHAKES = 64  # concurrent opening handshakes per client process

# (sizes seen with their transfer status, monotonic time the terminal status arrived)
Seen = tuple[list[tuple[int, str]], float | None]


def _watch_many(uri: str, count: int, pipe: Connection) -> None:
    """In a child process: ``count`` watchers; sends the number connected, then waits for the
    terminal status (or "stop") and sends what each one saw."""
    raise_fd_limit()

    async def watch(opened: asyncio.Semaphore, connected: list[int]) -> Seen:
        seen: list[tuple[int, str]] = []
        ended: float | None = None
        try:
            async with opened:
                ws = await connect(
                    uri,
                    compression=None,
                    open_timeout=120,
                    ping_interval=None,
                    max_queue=4,
                    subprotocols=LIVEFILE,
                )
            connected.append(1)
            async with ws:
                async for message in ws:
                    parsed = json.loads(message)
                    if parsed.get("@") != "StatusChanged":
                        continue
                    status = parsed["resourceStatus"]
                    seen.append((status["currentSize"], status["transferStatus"]))
                    if status["transferStatus"] in ("COMPLETED", "FAILED"):
                        ended = time.monotonic()
                        break
        except (Exception, asyncio.CancelledError):
            pass  # a watcher that fails or is stopped reports what it saw
        return seen, ended

    async def main() -> list[Seen]:
        opened = asyncio.Semaphore(HANDSHAKES)
        connected: list[int] = []
        tasks = [asyncio.create_task(watch(opened, connected)) for _ in range(count)]
        # Until every watcher is connected or has given up (a failed one is done).
        while len(connected) + sum(1 for task in tasks if task.done()) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        pipe.send(len(connected))
        loop = asyncio.get_running_loop()
        stop_asked: asyncio.Future[None] = loop.create_future()

        def wait_for_stop() -> None:  # a daemon thread: it must not keep the process alive
            with contextlib.suppress(EOFError, OSError):
                pipe.recv()
            loop.call_soon_threadsafe(_settle, stop_asked)

        threading.Thread(target=wait_for_stop, daemon=True).start()
        done: asyncio.Future[list[Seen]] = asyncio.gather(*tasks)
        waits: list[asyncio.Future[Any]] = [done, stop_asked]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        return await asyncio.gather(*tasks)

    pipe.send(asyncio.run(main()))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Run:
    def __init__(self) -> None:
        self.connected = 0
        self.got_all = 0
        self.peak_rss = 0.0
        self.rss_connected = 0.0
        self.final_fanout_ms = 0.0


async def one_run(watchers: int, processes: int, gap: float) -> Run:
    data_dir = SCRATCH / "idle-watchers-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir, "--max-downloads", str(watchers + 500))
    ctx = multiprocessing.get_context("spawn")
    workers: list[tuple[BaseProcess, Connection]] = []
    run = Run()
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            with PeakRss(server.pid, interval=0.1) as rss:
                upload = await client.start(
                    filename="idle.bin", mime_type="application/octet-stream"
                )
                await upload.write(bytes(PIECE))  # the first bytes are published at once
                share = [
                    watchers // processes + (i < watchers % processes) for i in range(processes)
                ]
                for count in share:
                    parent, child = ctx.Pipe()
                    process = ctx.Process(target=_watch_many, args=(upload.reference, count, child))
                    process.start()
                    workers.append((process, parent))
                for _, parent in workers:
                    if not await asyncio.to_thread(parent.poll, 300):
                        raise RuntimeError("the watchers did not connect")
                    run.connected += parent.recv()
                run.rss_connected = rss.peak / MiB
                expected = {(PIECE * (step + 2), "IN_PROGRESS") for step in range(STEPS)}
                for _ in range(STEPS):
                    await upload.write(bytes(PIECE))
                    await asyncio.sleep(gap)
                finishing = time.monotonic()
                result = await upload.finish()
                expected.add((result.size, "COMPLETED"))
                seen: list[Seen] = []
                for _, parent in workers:
                    if not await asyncio.to_thread(parent.poll, gap * 10 + 60):
                        parent.send("stop")
                    seen.extend(parent.recv())
                run.peak_rss = rss.peak / MiB
        run.got_all = sum(1 for sizes, _ in seen if expected <= set(sizes))
        ends = [ended for _, ended in seen if ended is not None]
        run.final_fanout_ms = (max(ends) - finishing) * 1000 if ends else float("nan")
        return run
    finally:
        for worker, _ in workers:
            end_child(worker)
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)


async def measure(runs: int, quick: bool) -> list[Result]:
    raise_fd_limit()
    watchers = 200 if quick else 10_000
    processes = 2 if quick else 4
    gap = 0.6 if quick else 2.0
    done = [await one_run(watchers, processes, gap) for _ in range(runs)]
    what = f"{watchers:,} idle watchers on one process"
    return [
        Result(
            benchmark=f"{what}: connected",
            subject="livefile serve",
            unit="connections",
            runs=[float(run.connected) for run in done],
            target=watchers,
            target_text=f">= {watchers:,}",
        ),
        Result(
            benchmark=f"{what}: watchers that received every status",
            subject="livefile serve",
            unit="watchers",
            runs=[float(run.got_all) for run in done],
            target=watchers,
            target_text=f"all {watchers:,}",
            notes=f"{STEPS} checkpoints {gap:.1f} s apart and COMPLETED, after all connected",
        ),
        Result(
            benchmark=f"{what}: server peak RSS",
            subject="livefile serve",
            unit="MiB",
            runs=[run.peak_rss for run in done],
            higher_is_better=False,
            target=1024,
            target_text="< 1 GiB",
            notes="RSS once all were connected: "
            + ", ".join(f"{run.rss_connected:.0f}" for run in done)
            + " MiB",
        ),
        Result(
            benchmark=f"{what}: final status delivered to all",
            subject="livefile serve",
            unit="ms",
            runs=[run.final_fanout_ms for run in done],
            higher_is_better=False,
            notes="from the uploader's FinishUpload to the last watcher's receipt of COMPLETED",
        ),
    ]
