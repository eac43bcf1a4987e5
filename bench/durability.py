"""What "acknowledged means durable" costs: uploads with the flush on (``--durable``, the
default: bytes, line index, record and catalog entry fsync'd before ``UploadAcknowledged``) and
off (``--no-durable``), on the real disk and on tmpfs.

Workloads: one upload of 1 GiB (``upload_file`` from a random file on tmpfs), and 1,000 uploads
of 10 KiB one after the other (``upload_bytes`` over the SDK's kept-open connection). A fresh
``livefile serve`` with an empty data directory for every run; on and off interleaved, so that
the machine's swings hit both alike; the median of the runs is shown.

Run: python3 -m uv run python -m bench.durability [--runs 3] [--quick]
     [--disk /var/tmp/livefile-durability] [--tmpfs /dev/shm/livefile-durability]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.peers import livefile
from bench.support import MiB, random_file
from livefile.client_upload import AsyncUploadClient

BIG = 1024 * MiB
SMALL = 10 * 1024
SMALL_COUNT = 1000


async def one_big(data_dir: Path, source: Path, durable: bool) -> float:
    """Seconds from the first byte sent to the acknowledgement of one large upload."""
    flag = "--durable" if durable else "--no-durable"
    with livefile(data_dir, flag) as server:
        async with AsyncUploadClient(server.ws_url, timeout=600) as client:
            started = time.perf_counter()
            result = await client.upload_file(source, mime_type="application/octet-stream")
            elapsed = time.perf_counter() - started
    if result.size != source.stat().st_size:
        raise RuntimeError(f"acknowledged {result.size} bytes")
    return elapsed


async def many_small(data_dir: Path, files: list[bytes], durable: bool) -> float:
    """Seconds for ``len(files)`` uploads one after the other."""
    flag = "--durable" if durable else "--no-durable"
    with livefile(data_dir, flag) as server:
        async with AsyncUploadClient(server.ws_url, timeout=600) as client:
            started = time.perf_counter()
            for index, data in enumerate(files):
                result = await client.upload_bytes(data, filename=f"f{index}.bin")
                if result.size != len(data):
                    raise RuntimeError(f"acknowledged {result.size} bytes")
            return time.perf_counter() - started


def row(workload: str, place: str, on: list[float], off: list[float], unit: str) -> str:
    """A table row: medians, with the range of the runs (this machine's noise) beside them."""
    on_v, off_v = statistics.median(on), statistics.median(off)
    cost = (off_v - on_v) / off_v * 100 if off_v else 0.0

    def cell(runs: list[float], median: float) -> str:
        return f"{median:,.0f} {unit} ({min(runs):,.0f} to {max(runs):,.0f})"

    return f"| {workload} | {place} | {cell(off, off_v)} | {cell(on, on_v)} | {cost:+.0f} % |"


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MiB and 100 small uploads")
    parser.add_argument("--disk", type=Path, default=Path("/var/tmp/livefile-durability"))
    parser.add_argument("--tmpfs", type=Path, default=Path("/dev/shm/livefile-durability"))
    args = parser.parse_args(argv)
    big = 64 * MiB if args.quick else BIG
    count = 100 if args.quick else SMALL_COUNT
    source = random_file(args.tmpfs / "source" / f"big-{big}.bin", big)
    files = [os.urandom(SMALL) for _ in range(count)]
    size_text = f"{big // MiB:,} MiB" if big < 1024 * MiB else f"{big // (1024 * MiB)} GiB"
    rows = []
    try:
        for place, root in (("disk", args.disk), ("tmpfs", args.tmpfs)):
            data_dir = root / "data"
            big_runs: dict[bool, list[float]] = {True: [], False: []}
            small_runs: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.runs):
                for durable in (False, True):
                    seconds = await one_big(data_dir, source, durable)
                    big_runs[durable].append(big / MiB / seconds)
                    seconds = await many_small(data_dir, files, durable)
                    small_runs[durable].append(count / seconds)
                    print(
                        f"  {place} durable={durable}: {big_runs[durable][-1]:,.0f} MiB/s,"
                        f" {small_runs[durable][-1]:,.0f} uploads/s",
                        file=sys.stderr,
                    )
            rows.append(row(f"1 upload of {size_text}", place, big_runs[True], big_runs[False],
                            "MiB/s"))  # fmt: skip
            rows.append(row(f"{count:,} uploads of 10 KiB, sequential", place, small_runs[True],
                            small_runs[False], "uploads/s"))  # fmt: skip
    finally:
        shutil.rmtree(args.tmpfs / "source", ignore_errors=True)
    print(
        f"median (min to max) of {args.runs} run(s); cost = how much slower with the flush on"
        " (negative: faster, i.e. within the noise)"
    )
    print("| workload | data dir on | --no-durable | --durable (default) | cost |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
