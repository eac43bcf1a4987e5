"""Upload of one large file: livefile through its SDK against tus-node-server with tus PATCH.

Both servers run on loopback with their data on tmpfs (/dev/shm), a fresh server and data
directory for every run, runs interleaved so that machine noise hits both alike. A run is the
whole upload as a client sees it: livefile's WebSocket start, data and acknowledged finish
(CRC-32C checked at both ends, the SDK's default); tus's creation POST and one PATCH of the whole
file. The tus client is the fastest one found for this machine: raw HTTP/1.1 on asyncio streams
sending the body with sendfile (bench/tus_client.py), about twice as fast as ``curl -T`` here,
so the peer is not held back by its client.

Run: uv run python -m bench --only tus [--runs 3] [--quick]
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import crc32c

from bench.peers import (
    CpuMeter,
    cpu_series,
    cpu_summary,
    explain,
    livefile,
    peer_source,
    tus_node_server,
)
from bench.support import SCRATCH, MiB, Result
from bench.tus_client import TusConnection
from livefile.client_upload import AsyncUploadClient

TARGET = 1.2
MIN_RUNS = 5
# What profiling the server (py-spy) and counting CPU seconds found on the 2-core dev machine.
MISSED = (
    "both servers are bounded by the copy into tmpfs, whose fresh pages are slow to come by on"
    " this virtual machine (the same dd to /dev/shm measured 0.4 to 3 GB/s). Per GiB, livefile"
    " spends about 1.3 to 2.2 s in its server (most of it the kernel's receive and that copy)"
    " and 0.8 to 1.0 s in its SDK (read, CRC-32C, masking, the loopback send), against about"
    " 2.6 to 3.5 s for tus-node-server and 0.2 s for its sendfile client. With both cores free"
    " livefile's work runs in parallel and it wins; a miss means other processes took CPU"
    " during its runs."
)


def crc32_of(path: Path) -> str:
    value = 0
    with path.open("rb") as source:
        while piece := source.read(16 * MiB):
            value = crc32c.crc32c(piece, value)
    return f"{value:08x}"


async def livefile_run(source: Path, expected_crc: str) -> CpuMeter:
    """One SDK upload to a fresh ``livefile serve``; checks size, checksum and stored size."""
    size = source.stat().st_size
    with livefile(SCRATCH / "tus-bench-livefile") as server:
        async with AsyncUploadClient(server.ws_url) as client:
            with CpuMeter(server.pid) as meter:
                result = await client.upload_file(source)
        if result.size != size or result.checksum.rpartition(":")[2] != expected_crc:
            raise RuntimeError(f"livefile acknowledged {result.size} bytes, {result.checksum}")
        stored = next(server.data_dir.rglob(f"{result.resource_id}.bin"))
        if stored.stat().st_size != size:
            raise RuntimeError(f"livefile stored {stored.stat().st_size} bytes, not {size}")
    return meter


async def tus_run(source: Path) -> CpuMeter:
    """One tus upload (creation POST + one PATCH) to a fresh tus-node-server; checks sizes."""
    size = source.stat().st_size
    with tus_node_server(SCRATCH / "tus-bench-tus") as tus:
        async with TusConnection(tus.endpoint) as connection:
            with CpuMeter(tus.pid) as meter:
                upload_path, offset = await connection.upload(source, with_creation=False)
            head_offset = await connection.offset(upload_path)
        stored = tus.data_dir / upload_path.rsplit("/", 1)[1]
        if offset != size or head_offset != size or stored.stat().st_size != size:
            raise RuntimeError(
                f"tus acknowledged {offset}, HEAD {head_offset}, stored {stored.stat().st_size}"
            )
    return meter


async def measure(runs: int, quick: bool) -> list[Result]:
    size_mib = 32 if quick else 1024
    source = peer_source(size_mib)
    expected_crc = await asyncio.to_thread(crc32_of, source)
    load = os.getloadavg()[0]
    ours: list[CpuMeter] = []
    theirs: list[CpuMeter] = []
    # This machine's speed swings by 2x within minutes and both sides spend about the same CPU
    # per GiB: a median of at least five interleaved pairs keeps one slow spell from deciding.
    for _ in range(max(runs, MIN_RUNS)):  # interleaved, so that machine noise hits both alike
        theirs.append(await tus_run(source))
        ours.append(await livefile_run(source, expected_crc))
    label = "1 GiB" if size_mib == 1024 else f"{size_mib} MiB"
    gib = size_mib / 1024
    result = Result(
        benchmark=f"upload {label} vs tus",
        subject="livefile SDK (AsyncUploadClient.upload_file, CRC-32C)",
        unit="MiB/s",
        runs=[size_mib / meter.wall for meter in ours],
        baseline="tus-node-server (@tus/server + FileStore), creation POST + one PATCH",
        baseline_runs=[size_mib / meter.wall for meter in theirs],
        target=TARGET,
        target_text=f">= {TARGET}",
        series=cpu_series({"livefile": ours, "tus": theirs}, per=gib),
        notes=(
            "tus client: raw HTTP/1.1 on asyncio streams, body sent with sendfile (the fastest"
            " client measured; curl -T reached about half its rate). Data on tmpfs, sizes"
            " (and livefile's CRC-32C) verified after each run. CPU seconds per GiB (median):"
            f" {cpu_summary({'livefile': ours, 'tus': theirs}, per=gib)}."
        ),
    )
    return [explain(result, MISSED, load)]
