"""ZIP bundles of finished resources: a bundle of 1,000 resources of 1 MiB downloaded with curl
from livefile (composed from the members' files on every read) against nginx serving the very
same ZIP as one prebuilt file (sendfile), in the same run on the same tmpfs; and the time to the
first byte of a range at the end of a bundle, for 100 against 1,000 members (flat in the
bundle's size: a range is found by bisection, nothing before it is produced).

Also noted: how long the bundle took from ``POST /bundles`` to COMPLETED (each member's CRC-32
read once; the checksum combined from the members' CRC-32Cs).

Run: uv run python -m bench --only bundle [--runs 3] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request

from bench.peers import nginx_server
from bench.support import SCRATCH, MiB, Result, free_port, livefile_server, median, stop
from livefile.api.model import TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient

UPLOADS_AT_ONCE = 8
RANGE_BYTES = 64 * 1024
TTFB_SAMPLES = 30


def curl_seconds(url: str) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - started


def first_byte_seconds(url: str, size: int) -> float:
    """curl's time to the first byte of the last ``RANGE_BYTES`` of the bundle."""
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_starttransfer}",
         "-r", f"{size - RANGE_BYTES}-{size - 1}", url],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return float(done.stdout)


async def upload_members(ws_url: str, count: int, size: int) -> list[str]:
    ids: list[str] = []
    slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
    async with AsyncUploadClient(ws_url) as client:

        async def one(number: int) -> None:
            async with slots:
                result = await client.upload_bytes(os.urandom(size), filename=f"m{number}.bin")
                ids.append(result.resource_id)

        await asyncio.gather(*(one(n) for n in range(count)))
    return sorted(ids)


def post_bundle(http_url: str, ids: list[str]) -> dict[str, object]:
    body = {
        "filename": "bench.zip",
        "members": [
            {"resource": rid, "path": f"d{n // 100}/m{n}.bin"} for n, rid in enumerate(ids)
        ],
    }
    request = urllib.request.Request(
        f"{http_url}/bundles",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        created: dict[str, object] = json.loads(response.read())
    return created


async def make_bundle(port: int, ids: list[str]) -> tuple[str, int, float]:
    """The bundle's id, size, and seconds from the request to COMPLETED."""
    started = time.perf_counter()
    created = await asyncio.to_thread(post_bundle, f"http://127.0.0.1:{port}", ids)
    reference = created["reference"]
    assert isinstance(reference, dict)
    async with AsyncDownloadClient(reference["uri"], timeout=3600) as watcher:
        final = await watcher.wait_for_end(3600)
    if final.transfer_status is not TransferStatus.COMPLETED:
        raise RuntimeError(f"the bundle ended {final}")
    return str(created["id"]), final.current_size, time.perf_counter() - started


async def measure(runs: int, quick: bool) -> list[Result]:
    member_size = 64 * 1024 if quick else MiB
    many, few = (100, 10) if quick else (1000, 100)
    data_dir = SCRATCH / "bundle-bench-data"
    served = SCRATCH / "bundle-bench-nginx"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(served, ignore_errors=True)
    served.mkdir(parents=True)
    port = free_port()
    server = livefile_server(port, data_dir, "--no-durable")
    try:
        ids = await upload_members(f"ws://127.0.0.1:{port}", many, member_size)
        big_id, big_size, created_seconds = await make_bundle(port, ids)
        small_id, small_size, _ = await make_bundle(port, ids[:few])
        ours_url = f"http://127.0.0.1:{port}/resources/{big_id}/content"
        # The prebuilt ZIP nginx serves: the bundle's own bytes, so both send the same file.
        await asyncio.to_thread(
            subprocess.run,
            ["curl", "-sS", "--fail", "-o", str(served / "bench.zip"), ours_url],
            check=True,
        )
        if (served / "bench.zip").stat().st_size != big_size:
            raise RuntimeError("the downloaded bundle is not its announced size")
        size_mib = big_size / MiB
        ours: list[float] = []
        theirs: list[float] = []
        with nginx_server(served) as nginx:
            nginx_url = f"{nginx.base_url}/bench.zip"
            for _ in range(runs):  # interleaved, so that machine noise hits both alike
                theirs.append(size_mib / await asyncio.to_thread(curl_seconds, nginx_url))
                ours.append(size_mib / await asyncio.to_thread(curl_seconds, ours_url))
        small_url = f"http://127.0.0.1:{port}/resources/{small_id}/content"
        many_ttfb: list[float] = []
        few_ttfb: list[float] = []
        for _ in range(max(runs, 1) * TTFB_SAMPLES):
            few_ttfb.append(
                1000 * await asyncio.to_thread(first_byte_seconds, small_url, small_size)
            )
            many_ttfb.append(1000 * await asyncio.to_thread(first_byte_seconds, ours_url, big_size))
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(served, ignore_errors=True)
    member_text = "64 KiB" if quick else "1 MiB"
    return [
        Result(
            benchmark=f"HTTP download of a bundle of {many:,} finished {member_text} resources"
            " (curl)",
            subject="livefile (composed from the members' files)",
            unit="MiB/s",
            runs=ours,
            baseline="nginx (sendfile), the same ZIP prebuilt as one file, same tmpfs",
            baseline_runs=theirs,
            target=0.8,
            target_text=">= 0.8",
            notes=f"POST /bundles to COMPLETED: {created_seconds:.2f} s (CRC-32 of every member"
            f" read once); bundle {big_size / MiB:.1f} MiB",
        ),
        Result(
            benchmark=f"Time to first byte of the last 64 KiB of a bundle (curl -r), {many:,}"
            f" members",
            subject=f"{many:,} members",
            unit="ms",
            runs=many_ttfb,
            baseline=f"{few:,} members, same server",
            baseline_runs=few_ttfb,
            higher_is_better=False,
            target=0.8,
            target_text=">= 0.8 (flat in the bundle's size)",
            notes=f"medians of {len(many_ttfb)} requests each:"
            f" {median(many_ttfb):.2f} ms against {median(few_ttfb):.2f} ms",
        ),
    ]
