"""Remote transfer of a 1 GiB file (64 MiB with --quick) from a local nginx: livefile fetching
it into a resource (``POST /transfers`` until a watcher sees it COMPLETED) against ``curl -o``
of the same URL into the same tmpfs, in the same run, runs interleaved.

livefile's transfer stores every byte, checksums it (CRC-32C) and publishes statuses while it
arrives; curl only writes the file. nginx is Debian's, on loopback (``bench.peers``); the
livefile server allows 127.0.0.1/32 through ``--transfer-allowed-networks``.

Run: uv run python -m bench --only transfer [--runs 3] [--quick]
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

from bench.peers import nginx_server
from bench.support import SCRATCH, MiB, Result, free_port, livefile_server, random_file, stop
from livefile.api.model import TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient

WAIT = 3600.0


def curl_seconds(url: str, output: str) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-fsS", "-o", output, url], check=True)
    return time.perf_counter() - started


async def transfer_seconds(server: str, url: str, size: int) -> float:
    """From the request to the COMPLETED status, as a watcher of the resource sees it."""
    async with AsyncUploadClient(server, timeout=WAIT) as client:
        started = time.perf_counter()
        transfer = await client.fetch(url)
    async with AsyncDownloadClient(transfer.reference.uri, timeout=WAIT) as watcher:
        status = await watcher.wait_for_end(WAIT)
    seconds = time.perf_counter() - started
    if status.transfer_status is not TransferStatus.COMPLETED or status.current_size != size:
        raise RuntimeError(f"the transfer ended {status}")
    return seconds


async def measure(runs: int, quick: bool) -> list[Result]:
    size_mib = 64 if quick else 1024
    size = size_mib * MiB
    # A directory of its own: nginx serves it, and other benchmarks remove their sources.
    workdir = SCRATCH / "transfer"
    source = random_file(workdir / "www" / f"source-{size_mib}MiB.bin", size)
    data_dir = workdir / "livefile-data"
    output = workdir / "curl-output.bin"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir, "--transfer-allowed-networks", "127.0.0.1/32")
    ours: list[float] = []
    theirs: list[float] = []
    try:
        with nginx_server(source.parent) as nginx:
            url = f"{nginx.base_url}/{source.name}"
            for _ in range(runs):  # interleaved, so that machine noise hits both alike
                seconds = await asyncio.to_thread(curl_seconds, url, str(output))
                theirs.append(size_mib / seconds)
                output.unlink()
                ours.append(size_mib / await transfer_seconds(f"ws://127.0.0.1:{port}", url, size))
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
        output.unlink(missing_ok=True)
    size_text = "1 GiB" if size_mib == 1024 else f"{size_mib} MiB"
    return [
        Result(
            benchmark=f"remote transfer of {size_text} from a local nginx",
            subject="livefile (POST /transfers to COMPLETED)",
            unit="MiB/s",
            runs=ours,
            baseline="curl -o, same URL, same tmpfs",
            baseline_runs=theirs,
            target=0.8,
            target_text=">= 0.8",
        )
    ]
