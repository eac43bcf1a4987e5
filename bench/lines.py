"""Line access on a 10-million-line log: the time to fetch 1,000 lines near the start and near
the end (it should not grow with the line number), and the index's disk overhead per line.

Run: uv run python -m bench --only lines
"""

from __future__ import annotations

import json
import shutil
import statistics
import time

from websockets.asyncio.client import ClientConnection, connect

from bench.support import LIVEFILE, SCRATCH, MiB, Result, free_port, livefile_server, stop
from livefile.client_upload import AsyncUploadClient


def make_log(lines: int) -> bytes:
    return b"".join(
        b"2026-11-21T17:00:00.%06d INFO step %9d finished in %4d ms\n" % (n % 1_000_000, n, n % 997)
        for n in range(lines)
    )


async def fetch(ws: ClientConnection, start: int, count: int) -> float:
    started = time.perf_counter()
    await ws.send(
        json.dumps({"@": "RequestLines", "startingLineIndex": start, "linesCount": count})
    )
    while True:
        reply = json.loads(await ws.recv())
        if reply["@"] == "Lines":
            assert len(reply["lines"]) == count
            return time.perf_counter() - started
        assert reply["@"] == "StatusChanged", reply


async def measure(runs: int, quick: bool) -> list[Result]:
    lines = 100_000 if quick else 10_000_000
    repeats = 5 if quick else 20
    data = make_log(lines)
    data_dir = SCRATCH / "lines-bench-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    early: list[float] = []
    late: list[float] = []
    near_end = lines - lines // 10
    try:
        started = time.perf_counter()
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            result = await client.upload_bytes(
                data, filename="big.log", mime_type="text/plain", supports_line_access=True
            )
        upload_seconds = time.perf_counter() - started
        assert result.status.number_of_lines == lines
        index_size = next(data_dir.rglob(f"{result.resource_id}.idx")).stat().st_size
        async with connect(
            result.reference, compression=None, max_size=None, subprotocols=LIVEFILE
        ) as ws:
            await ws.recv()  # the current status
            for _ in range(runs):  # each run: the median of ``repeats`` fetches of each
                early.append(
                    statistics.median([await fetch(ws, 1_000, 1_000) for _ in range(repeats)])
                    * 1000
                )
                late.append(
                    statistics.median([await fetch(ws, near_end, 1_000) for _ in range(repeats)])
                    * 1000
                )
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    size_mib = len(data) / MiB
    return [
        Result(
            benchmark=f"fetch 1,000 lines at line {near_end:,} of {lines:,}",
            subject="livefile RequestLines",
            unit="ms",
            runs=late,
            baseline="same at line 1,000",
            baseline_runs=early,
            higher_is_better=False,
            target=0.8,
            target_text=">= 0.8 (no growth with the line number)",
            notes=f"median of {repeats} fetches per run; the log ({size_mib:.0f} MiB) was"
            f" uploaded with line access at {size_mib / upload_seconds:.0f} MiB/s",
        ),
        Result(
            benchmark="line index size",
            subject="livefile line index",
            unit="bytes/line",
            runs=[index_size / lines],
            higher_is_better=False,
            notes=f"{index_size / len(data) * 100:.1f} % of the data",
        ),
    ]
