"""Line access on a 10-million-line log: the time to fetch 1,000 lines near the start and near
the end (it should not grow with the line number), and the index's disk overhead per line.

Run: uv run python -m bench.lines [--lines 10000000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time

from websockets.asyncio.client import ClientConnection, connect

from bench.support import SCRATCH, MiB, free_port, livefile_server, stop
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    data = make_log(args.lines)
    data_dir = SCRATCH / "lines-bench-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    try:
        started = time.perf_counter()
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            result = await client.upload_bytes(
                data, filename="big.log", mime_type="text/plain", supports_line_access=True
            )
        upload_seconds = time.perf_counter() - started
        assert result.status.number_of_lines == args.lines
        index_size = next(data_dir.rglob(f"{result.resource_id}.idx")).stat().st_size
        near_end = args.lines - 1_000_000
        async with connect(result.reference, compression=None, max_size=None) as ws:
            await ws.recv()  # the current status
            early = [await fetch(ws, 1_000, 1_000) for _ in range(args.repeats)]
            late = [await fetch(ws, near_end, 1_000) for _ in range(args.repeats)]
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    early_ms, late_ms = statistics.median(early) * 1000, statistics.median(late) * 1000
    print(
        f"{args.lines:,} lines, {len(data) / MiB:.0f} MiB, uploaded with line access in"
        f" {upload_seconds:.1f} s ({len(data) / MiB / upload_seconds:.0f} MiB/s)"
    )
    print(f"  fetch lines 1,000-1,999:               {early_ms:6.2f} ms (median of {args.repeats})")
    print(f"  fetch lines {near_end:,}-{near_end + 999:,}: {late_ms:6.2f} ms")
    print(
        f"  ratio late / early: {late_ms / early_ms:.2f}  (should be ~1: no growth with the"
        " line number)"
    )
    print(
        f"  index: {index_size / args.lines:.1f} bytes per line"
        f" ({index_size / len(data) * 100:.1f} % of the data)"
    )


if __name__ == "__main__":
    asyncio.run(main())
