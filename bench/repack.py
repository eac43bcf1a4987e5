"""Archive repack: a tar.gz of mixed text and already-compressed data (1 GiB unpacked; 16 MiB
with ``--quick``) repacked into a ZIP by livefile's engine, against Open Workshop Storage's way:
``7z x`` (the gzip, then the tar) and ``7z a -tzip -mx=3 -mmt=on``.

livefile: ``repack_file`` writing the ZIP to a file, default limits and level (Deflate 6 for
entries that shrink, stored otherwise), deflate threads as many as the CPUs. Runs interleaved;
the figure is unpacked MiB per wall-clock second. Both outputs are checked with ``zipfile``.

Run: uv run python -m bench --only repack [--runs 3] [--quick]
     uv run python -m bench.repack [--quick]      # standalone, prints the figures
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from statistics import median

from bench.support import SCRATCH, Result
from livefile.impl_server.repack import RepackLimits, repack_file

FILE_SIZE = 8 << 20
WORDS = b"INFO WARN DEBUG request user id latency ms GET /api/v1/items 200 404 cache miss".split()


def _text(size: int, rng: random.Random) -> bytes:
    lines = []
    total = 0
    while total < size:
        line = b"2026-11-30T09:%02d:%02d.%03d %s %d\n" % (
            rng.randrange(60),
            rng.randrange(60),
            rng.randrange(1000),
            b" ".join(rng.choice(WORDS) for _ in range(8)),
            rng.randrange(10**6),
        )
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


def make_input(size: int) -> Path:
    """A tar.gz (gzip level 6) of ``size`` bytes of files, alternately log text and random
    bytes; kept in the scratch directory between runs."""
    path = SCRATCH / f"repack-mixed-{size >> 20}MiB.tar.gz"
    if path.exists():
        return path
    SCRATCH.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    block = _text(4 << 20, rng)  # one 4 MiB block of log lines, cut differently per file
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        for index in range(max(2, size // FILE_SIZE)):
            length = min(FILE_SIZE, size)
            if index % 2:
                data = os.urandom(length)
            else:
                start = rng.randrange(len(block))
                data = ((block[start:] + block) * (length // len(block) + 2))[:length]
            info = tarfile.TarInfo(
                f"dir{index % 4}/file{index:03d}.{'bin' if index % 2 else 'log'}"
            )
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    partial.rename(path)
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_livefile(archive: Path, out: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (all threads), unpacked bytes."""
    out.unlink(missing_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with out.open("wb") as sink:
        summary = repack_file(archive, sink.write, RepackLimits(), source_name=archive.name)
    return time.perf_counter() - wall, time.process_time() - cpu, summary.unpacked_bytes


def run_7z(archive: Path, work: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of OWS's pipeline: extract the gzip, the tar, then zip the tree."""
    shutil.rmtree(work, ignore_errors=True)
    out.unlink(missing_ok=True)
    quiet = ["-y", "-bd", "-bso0", "-bsp0"]
    wall, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(
        ["7z", "x", *quiet, f"-o{work / 'tar'}", str(archive)], check=True, stdin=subprocess.DEVNULL
    )
    (tar,) = (work / "tar").iterdir()  # named from the gzip header
    subprocess.run(
        ["7z", "x", *quiet, f"-o{work / 'tree'}", str(tar)], check=True, stdin=subprocess.DEVNULL
    )
    subprocess.run(
        ["7z", "a", "-tzip", "-mx=3", "-mmt=on", *quiet, str(out), "."],
        cwd=work / "tree",
        check=True,
        stdin=subprocess.DEVNULL,
    )
    result = time.perf_counter() - wall, _children_cpu() - cpu
    shutil.rmtree(work, ignore_errors=True)
    return result


def _check(out: Path, unpacked: int) -> int:
    with zipfile.ZipFile(out) as archive:
        assert sum(info.file_size for info in archive.infolist()) == unpacked
    return out.stat().st_size


def measure_sync(runs: int, quick: bool) -> list[Result]:
    if shutil.which("7z") is None:
        raise RuntimeError("7z is not installed (Debian: p7zip-full)")
    size = (16 << 20) if quick else (1 << 30)
    archive = make_input(size)
    ours_out, theirs_out, work = (
        SCRATCH / "repack-ours.zip",
        SCRATCH / "repack-7z.zip",
        SCRATCH / "repack-7z",
    )
    load = os.getloadavg()[0]
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    unpacked = 0
    for _ in range(runs):  # interleaved, so that machine noise hits both alike
        wall, cpu, unpacked = run_livefile(archive, ours_out)
        ours.append((wall, cpu))
        theirs.append(run_7z(archive, work, theirs_out))
    ours_size, theirs_size = _check(ours_out, unpacked), _check(theirs_out, unpacked)
    mib = unpacked / 2**20
    notes = (
        f"input {archive.stat().st_size / 2**20:.0f} MiB tar.gz, {mib:.0f} MiB unpacked; "
        f"ZIP {ours_size / 2**20:.0f} MiB (livefile) vs {theirs_size / 2**20:.0f} MiB (7z); "
        f"CPU s median livefile {median(c for _, c in ours):.1f}, "
        f"7z {median(c for _, c in theirs):.1f}; load {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after on {os.cpu_count()} CPUs"
    )
    for path in (ours_out, theirs_out):
        path.unlink(missing_ok=True)
    return [
        Result(
            benchmark=f"repack a {mib:.0f} MiB mixed tar.gz to ZIP",
            subject="livefile repack_file (libarchive-c, zlib-ng Deflate 6, streamed)",
            unit="MiB/s",
            runs=[mib / wall for wall, _ in ours],
            baseline="7z x (gzip, then tar) + 7z a -tzip -mx=3 -mmt=on",
            baseline_runs=[mib / wall for wall, _ in theirs],
            target=1.0,
            target_text=">= 1",
            series={"livefile_wall": [w for w, _ in ours], "7z_wall": [w for w, _ in theirs]},
            notes=notes,
        )
    ]


async def measure(runs: int, quick: bool) -> list[Result]:
    return await asyncio.to_thread(measure_sync, runs, quick)


if __name__ == "__main__":
    for result in measure_sync(runs=3, quick="--quick" in sys.argv):
        print(result.benchmark)
        print(f"  livefile {[round(r, 1) for r in result.runs]} MiB/s")
        print(f"  7z       {[round(r, 1) for r in result.baseline_runs]} MiB/s")
        print(f"  {result.notes}")
