"""Shared pieces of the benchmarks: servers in child processes, test files, RSS sampling."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

MiB = 1024 * 1024
SCRATCH = Path(os.environ.get("LIVEFILE_BENCH_DIR", "/dev/shm/livefile-bench"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_file(path: Path, size: int) -> Path:
    """A file of ``size`` random bytes (made once per run, never committed)."""
    if not path.exists() or path.stat().st_size != size:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as target:
            remaining = size
            while remaining:
                piece = min(remaining, 16 * MiB)
                target.write(os.urandom(piece))
                remaining -= piece
    return path


def start_process(args: list[str], ready_port: int) -> subprocess.Popen[bytes]:
    """Start a server and wait until its port accepts connections."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "died")
        try:
            socket.create_connection(("127.0.0.1", ready_port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{args} did not start")


def livefile_server(port: int, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return start_process(
        [sys.executable, "-m", "livefile.impl_common.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "warning", *extra],
        port,
    )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PeakRss:
    """Samples a process's resident memory every few milliseconds while active."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._process.memory_info().rss)
            await asyncio.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._process.memory_info().rss
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def median(values: list[float]) -> float:
    return statistics.median(values)
