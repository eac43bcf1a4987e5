"""Upload of one large file: livefile through its SDK against tus-node-server with tus PATCH.

Both servers run on loopback with their data on tmpfs (/dev/shm), a fresh server and data
directory for every run, runs interleaved so that machine noise hits both alike. A run is the
whole upload as a client sees it: livefile's WebSocket start, data and acknowledged finish
(CRC-32C checked at both ends, the SDK's default); tus's creation POST and one PATCH of the whole
file. The tus client is the fastest one found for this machine: raw HTTP/1.1 on asyncio streams
sending the body with sendfile (bench/tus_client.py), about twice as fast as ``curl -T`` here,
so the peer is not held back by its client.

Two more figures put livefile's own tus endpoint (``/files/``) against tus-node-server with the
same client (bench/tus_client.py) on both sides: 1 GiB as one creation POST and one PATCH
(target >= 1.2), and 1,000 uploads of 10 KiB each as one creation-with-upload POST apiece on one
keep-alive connection (target >= 1.5); the small uploads also with ``livefile serve
--no-durable`` (nothing fsync'd, as tus-node-server keeps uploads), for comparison.

Run: uv run python -m bench --only tus [--runs 3] [--quick]
(``LIVEFILE_BENCH_TUS_MIB=256`` runs the large uploads with 256 MiB instead of 1 GiB.)
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
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
SMALL_TARGET = 1.5
SMALL_COUNT = 1000
SMALL_SIZE = 10 * 1024
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

# What profiling (py-spy) and interleaved A/B runs of the server found for 10 KiB uploads.
SMALL_MISSED = (
    "a 10 KiB upload is mostly fixed costs. livefile acknowledges a durable upload: the bytes,"
    " the record beside them and the catalog entry are fsync'd before the 201 (tus-node-server"
    " fsyncs nothing), and its file operations run on a worker thread so that a slow disk never"
    " stalls other connections: one trip per upload whose creation carries all of it (stored,"
    " made durable and recorded COMPLETED at once), which wakes a thread and then the event"
    " loop again: tens of microseconds of CPU, and more wall time when other processes hold"
    " the cores. The HTTP stack (uvicorn, Starlette, FastAPI's routing) costs about 0.5 ms per"
    " request here. See the --no-durable row for livefile without the durability promise."
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


@dataclass(frozen=True)
class TusEndpoint:
    """A tus server under test: its creation URL, its pid, and where an upload's bytes land."""

    endpoint: str
    pid: int
    stored: Callable[[str], Path]  # upload path -> the file holding its bytes


@contextmanager
def livefile_tus(*extra: str) -> Iterator[TusEndpoint]:
    """``livefile serve`` (fresh data directory, ``extra`` arguments): its tus endpoint."""
    with livefile(SCRATCH / "tus-bench-livefile-tus", *extra) as server:
        yield TusEndpoint(
            f"http://127.0.0.1:{server.port}/files/",
            server.pid,
            lambda path: next(server.data_dir.rglob(f"{path.rsplit('/', 1)[1]}.bin")),
        )


@contextmanager
def node_tus() -> Iterator[TusEndpoint]:
    """tus-node-server (fresh data directory)."""
    with tus_node_server(SCRATCH / "tus-bench-tus") as tus:
        yield TusEndpoint(tus.endpoint, tus.pid, lambda path: tus.data_dir / path.rsplit("/", 1)[1])


Server = Callable[[], AbstractContextManager[TusEndpoint]]


async def tus_endpoint_run(
    server: Server, source: Path | None, count: int, body: bytes
) -> tuple[CpuMeter | None, CpuMeter]:
    """On one fresh server: one creation POST + one PATCH of ``source`` (sizes checked; None:
    not this time), then ``count`` creation-with-upload POSTs of ``body`` on one keep-alive
    connection (the first and last stored bytes checked). The same raw client for every
    server."""
    large = None
    with server() as tus:
        if source is not None:
            size = source.stat().st_size
            async with TusConnection(tus.endpoint) as connection:
                with CpuMeter(tus.pid) as large:
                    upload_path, offset = await connection.upload(source, with_creation=False)
                head_offset = await connection.offset(upload_path)
            stored = tus.stored(upload_path).stat().st_size
            if offset != size or head_offset != size or stored != size:
                raise RuntimeError(
                    f"tus acknowledged {offset}, HEAD {head_offset}, stored {stored}"
                )
        async with TusConnection(tus.endpoint) as connection:
            with CpuMeter(tus.pid) as small:
                paths = [(await connection.upload(body))[0] for _ in range(count)]
        for path in (paths[0], paths[-1]):
            if tus.stored(path).read_bytes() != body:
                raise RuntimeError(f"{path} does not hold the bytes sent")
    return large, small


async def measure_tus_endpoint(runs: int, quick: bool, source: Path, label: str) -> list[Result]:
    """livefile's tus endpoint against tus-node-server, the same raw client for both."""
    size_mib = source.stat().st_size / MiB
    ours: list[CpuMeter] = []
    theirs: list[CpuMeter] = []
    small_ours: list[CpuMeter] = []
    small_theirs: list[CpuMeter] = []
    small_scratch: list[CpuMeter] = []  # livefile --no-durable: small uploads only
    count = 100 if quick else SMALL_COUNT
    body = os.urandom(SMALL_SIZE)
    scratch = functools.partial(livefile_tus, "--no-durable")
    for _ in range(max(runs, MIN_RUNS)):  # interleaved, so that machine noise hits all alike
        for server, large_runs, small_runs in (
            (node_tus, theirs, small_theirs),
            (livefile_tus, ours, small_ours),
            (scratch, None, small_scratch),
        ):
            large_source = source if large_runs is not None else None
            large_meter, small_meter = await tus_endpoint_run(server, large_source, count, body)
            if large_runs is not None and large_meter is not None:
                large_runs.append(large_meter)
            small_runs.append(small_meter)
    gib = size_mib / 1024
    large = Result(
        benchmark=f"tus upload {label}",
        subject="livefile's tus endpoint (/files/), creation POST + one PATCH",
        unit="MiB/s",
        runs=[size_mib / meter.wall for meter in ours],
        baseline="tus-node-server (@tus/server + FileStore), the same requests",
        baseline_runs=[size_mib / meter.wall for meter in theirs],
        target=TARGET,
        target_text=f">= {TARGET}",
        series=cpu_series({"livefile": ours, "tus": theirs}, per=gib),
        notes=(
            "The same raw HTTP/1.1 client (bench/tus_client.py, body sent with sendfile) for"
            " both; data on tmpfs; the stored size and HEAD's Upload-Offset checked after each"
            " run. CPU seconds per GiB (median):"
            f" {cpu_summary({'livefile': ours, 'tus': theirs}, per=gib)}."
        ),
    )
    small = Result(
        benchmark=f"tus {count} x 10 KiB uploads",
        subject="livefile's tus endpoint, creation-with-upload (one POST each)",
        unit="uploads/s",
        runs=[count / meter.wall for meter in small_ours],
        baseline="tus-node-server, the same POSTs",
        baseline_runs=[count / meter.wall for meter in small_theirs],
        target=SMALL_TARGET,
        target_text=f">= {SMALL_TARGET}",
        series=cpu_series({"livefile": small_ours, "tus": small_theirs}, per=count / 1000),
        notes=(
            "One keep-alive connection, uploads one after the other; the first and last"
            " upload's stored bytes checked. CPU seconds per 1,000 uploads (median):"
            f" {cpu_summary({'livefile': small_ours, 'tus': small_theirs}, per=count / 1000)}."
        ),
    )
    small_scratch_result = Result(
        benchmark=f"tus {count} x 10 KiB uploads, --no-durable",
        subject="livefile --no-durable (nothing fsync'd: tus-node-server's promise)",
        unit="uploads/s",
        runs=[count / meter.wall for meter in small_scratch],
        baseline="tus-node-server, the same POSTs",
        baseline_runs=[count / meter.wall for meter in small_theirs],
        series=cpu_series({"livefile": small_scratch}, per=count / 1000),
        notes=(
            "For comparison only (no target): livefile as tus-node-server keeps uploads,"
            " without fsync of the bytes, the record and the catalog before the answer."
            " CPU seconds per 1,000 uploads (median):"
            f" {cpu_summary({'livefile': small_scratch}, per=count / 1000)}."
        ),
    )
    return [large, small, small_scratch_result]


async def measure(runs: int, quick: bool) -> list[Result]:
    # LIVEFILE_BENCH_TUS_MIB: a smaller file than 1 GiB on a machine too busy for it.
    size_mib = int(os.environ.get("LIVEFILE_BENCH_TUS_MIB", 32 if quick else 1024))
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
    endpoint_results = await measure_tus_endpoint(runs, quick, source, label)
    large, small, scratch = endpoint_results
    return [
        explain(result, MISSED, load),
        explain(large, "", load),
        explain(small, SMALL_MISSED, load),
        explain(scratch, "", load),
    ]
