"""Shared pieces of the benchmarks: servers in child processes, test files, RSS sampling."""

from __future__ import annotations

import asyncio
import multiprocessing.process
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.typing import Subprotocol

from livefile.api.messages import SUBPROTOCOL

MiB = 1024 * 1024
SCRATCH = Path(os.environ.get("LIVEFILE_BENCH_DIR", "/dev/shm/livefile-bench"))

# What raw connections send to speak livefile's dialect (docs/protocol.md, "Two dialects").
LIVEFILE = [Subprotocol(SUBPROTOCOL)]


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


def end_child(child: multiprocessing.process.BaseProcess | None) -> None:
    """Wait for a benchmark's helper process (its work is done or failed), killing it after
    30 s so that a stuck one cannot hang the run."""
    if child is None:
        return
    child.join(30)
    if child.is_alive():
        child.kill()


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


@dataclass
class Result:
    """One figure of the benchmark report: a subject measured against a baseline in the same run.

    ``value`` and ``baseline_value`` are medians of ``runs`` and ``baseline_runs``. ``ratio`` is
    always "how much better than the baseline" (above 1 is better), whichever way the unit goes.
    ``series`` holds data for plots (e.g. ``{"sizes_mib": [...], "livefile": [...], ...}`` or
    latency samples); ``notes`` says anything a reader must know (e.g. why a target is missed).
    """

    benchmark: str  # e.g. "upload 1 GiB"
    subject: str  # e.g. "livefile SDK"
    unit: str  # e.g. "MiB/s", "requests/s", "ms", "MiB"
    runs: list[float]
    baseline: str | None = None  # e.g. "minimal FastAPI/uvicorn WebSocket endpoint"
    baseline_runs: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    target: float | None = None  # the ratio to reach (or, without a baseline, the value)
    target_text: str = ""  # e.g. ">= 0.8", "p95 <= 260 ms"
    series: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def value(self) -> float:
        return median(self.runs)

    @property
    def baseline_value(self) -> float | None:
        return median(self.baseline_runs) if self.baseline_runs else None

    @property
    def ratio(self) -> float | None:
        base = self.baseline_value
        if base is None or base == 0 or self.value == 0:
            return None
        return self.value / base if self.higher_is_better else base / self.value

    @property
    def met(self) -> bool | None:
        """Whether the target is reached (None when there is no target)."""
        if self.target is None:
            return None
        if self.baseline_runs:
            ratio = self.ratio
            return ratio is not None and ratio >= self.target
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "value": self.value,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "met": self.met,
        }
