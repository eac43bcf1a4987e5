"""Repacking an archive into a ZIP: livefile while the archive uploads, against the way Open
Workshop Storage does it — receive the upload, then ``7z x`` to a directory and
``7z a -tzip -mx=3`` — in the same run.

The input is a tar.gz of mixed files (log-like text, and random bytes standing for data that is
already compressed), about 1 GiB (32 MiB with --quick), made once per machine in the scratch
directory. livefile: one SDK upload with ``repack=True``; a watcher of the derived ZIP records
when its first byte is readable and when it is COMPLETED. The baseline: the same upload without
repack to a fresh server, then 7z extracting it (``7z x -so`` piped to ``7z x -si -ttar``: 7z
unpacks one layer at a time) and zipping the directory. Both on tmpfs; runs interleaved.

Reported: total time from the first uploaded byte to a COMPLETED ZIP (target: at most 0.6 of the
7z pipeline), time to the first readable byte of the ZIP (target: within the upload's first
second plus one), the server's peak RSS (target < 200 MiB), and the ZIP's size against 7z's.

Run: uv run python -m bench --only repack [--runs 3] [--quick]
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from bench.support import SCRATCH, MiB, PeakRss, Result, free_port, livefile_server, stop
from livefile.api.model import TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient

TARGET_RATIO = 1 / 0.6  # baseline time over livefile's: livefile at most 0.6 of the baseline
FIRST_BYTE_TARGET = 2.0  # seconds after the upload's first byte
RSS_TARGET_MIB = 200.0
WAIT = 3600.0
TEXT_FILE = 8 * MiB
RANDOM_FILE = 4 * MiB


def log_text(size: int, seed: int) -> bytes:
    """Log-like lines: repetitive, as real logs are (deflate gets about 5-8:1)."""
    lines, total, index = [], 0, seed * 1_000_000
    while total < size:
        line = (
            f"2026-11-30T09:{index % 60:02d}:{index % 59:02d}.{index % 997:03d} INFO"
            f" worker-{index % 17} step {index} processed {index * 7 % 10007} items"
            f" in {index % 113} ms status=ok\n"
        ).encode()
        lines.append(line)
        total += len(line)
        index += 1
    return b"".join(lines)[:size]


def make_archive(path: Path, target: int) -> Path:
    """A tar.gz of about ``target`` bytes: text and random files alternating."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=1) as archive:
        index = 0
        while partial.stat().st_size < target:
            if index % 3 == 2:
                name, data = f"data/blob-{index}.bin", os.urandom(RANDOM_FILE)
            else:
                name, data = f"logs/part-{index}.log", log_text(TEXT_FILE, index)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000 + index
            archive.addfile(info, io.BytesIO(data))
            index += 1
    partial.rename(path)
    return path


async def livefile_run(archive: Path, work: Path) -> tuple[float, float, float, int]:
    """(seconds to a COMPLETED ZIP, seconds to its first readable byte, peak RSS MiB, ZIP
    bytes), all from the first byte of the upload."""
    data_dir = work / "livefile-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    url = f"ws://127.0.0.1:{port}"
    derived: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    first_byte = completed = 0.0
    size = 0

    async def watch(started: float) -> None:
        nonlocal first_byte, completed, size
        reference = await derived
        async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
            status = await watcher.wait_for_status(lambda s: s.current_size > 0 or s.is_terminal)
            first_byte = time.monotonic() - started
            status = await watcher.wait_for_end()
            completed = time.monotonic() - started
            assert status.transfer_status is TransferStatus.COMPLETED, status
            size = status.current_size

    try:
        with PeakRss(server.pid) as rss:
            async with AsyncUploadClient(url, timeout=WAIT) as client:
                started = time.monotonic()
                watcher = asyncio.create_task(watch(started))
                await client.upload_file(
                    archive,
                    repack=True,
                    on_derived=lambda d: derived.set_result(d.reference.uri),
                )
                await watcher
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    return completed, first_byte, rss.peak / MiB, size


async def baseline_run(archive: Path, work: Path) -> tuple[float, int]:
    """(seconds from the first uploaded byte to 7z's ZIP, ZIP bytes): the upload, then 7z."""
    data_dir, unpacked, zipped = work / "baseline-data", work / "unpacked", work / "7z.zip"
    for stale in (data_dir, unpacked):
        shutil.rmtree(stale, ignore_errors=True)
    zipped.unlink(missing_ok=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=WAIT) as client:
            started = time.monotonic()
            await client.upload_file(archive)
    finally:
        stop(server)
    stored = next(data_dir.glob("resources/*/*/*.bin"))
    unpacked.mkdir()
    await asyncio.to_thread(
        subprocess.run,
        f"7z x -so -tgzip {stored} | 7z x -si -ttar -bd -y -o{unpacked}",
        shell=True,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    await asyncio.to_thread(
        subprocess.run,
        ["7z", "a", "-tzip", "-mx=3", "-bd", "-y", str(zipped), "."],
        cwd=unpacked,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    size = zipped.stat().st_size
    for done in (data_dir, unpacked):
        shutil.rmtree(done, ignore_errors=True)
    zipped.unlink(missing_ok=True)
    return elapsed, size


async def measure(runs: int, quick: bool) -> list[Result]:
    if shutil.which("7z") is None:
        raise RuntimeError("7z is not installed (Debian: p7zip-full)")
    target = 32 * MiB if quick else 1024 * MiB
    work = SCRATCH / "repack"
    work.mkdir(parents=True, exist_ok=True)
    archive = await asyncio.to_thread(
        make_archive, work / f"mixed-{target // MiB}MiB.tar.gz", target
    )
    totals, firsts, peaks, sizes, base_totals, base_sizes = [], [], [], [], [], []
    for _ in range(runs):  # interleaved: a slow spell of the machine hits both
        total, first, peak, size = await livefile_run(archive, work)
        totals.append(total)
        firsts.append(first)
        peaks.append(peak)
        sizes.append(size / MiB)
        base_total, base_size = await baseline_run(archive, work)
        base_totals.append(base_total)
        base_sizes.append(base_size / MiB)
    label = f"repack a {archive.stat().st_size / MiB:,.0f} MiB tar.gz into a ZIP"
    return [
        Result(
            benchmark=label,
            subject="livefile: upload with repack, first byte to COMPLETED ZIP",
            unit="s",
            runs=totals,
            baseline="upload, then 7z x + 7z a -tzip -mx=3",
            baseline_runs=base_totals,
            higher_is_better=False,
            target=TARGET_RATIO,
            target_text="<= 0.6 of the 7z pipeline",
        ),
        Result(
            benchmark=label,
            subject="first readable byte of the ZIP after the upload's first byte",
            unit="s",
            runs=firsts,
            higher_is_better=False,
            target=FIRST_BYTE_TARGET,
            target_text=f"<= {FIRST_BYTE_TARGET:g} s",
        ),
        Result(
            benchmark=label,
            subject="server peak RSS during the upload and repack",
            unit="MiB",
            runs=peaks,
            higher_is_better=False,
            target=RSS_TARGET_MIB,
            target_text=f"< {RSS_TARGET_MIB:g} MiB",
        ),
        Result(
            benchmark=label,
            subject="size of livefile's ZIP",
            unit="MiB",
            runs=sizes,
            baseline="7z's ZIP (-mx=3)",
            baseline_runs=base_sizes,
            higher_is_better=False,
        ),
    ]
