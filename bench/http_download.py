"""HTTP download of a COMPLETED resource with curl: livefile against nginx serving the same
file from the same tmpfs, in the same run (Debian's nginx, started here on loopback).

Run: uv run python -m bench --only http_download
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

from bench.peers import nginx_server
from bench.support import (
    SCRATCH,
    MiB,
    Result,
    free_port,
    livefile_server,
    random_file,
    stop,
)
from livefile.client_upload import AsyncUploadClient


def curl_seconds(url: str) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - started


async def measure(runs: int, quick: bool) -> list[Result]:
    size_mib = 16 if quick else 1024
    size = size_mib * MiB
    source = random_file(SCRATCH / f"source-{size_mib}MiB.bin", size)

    data_dir = SCRATCH / "http-bench-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    try:
        with nginx_server(source.parent) as nginx:
            async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
                result = await client.upload_file(source)
            ours_url = f"http://127.0.0.1:{port}/resources/{result.resource_id}/content"
            nginx_url = f"{nginx.base_url}/{source.name}"
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(runs):  # interleaved, so that machine noise hits both alike
                theirs.append(size_mib / await asyncio.to_thread(curl_seconds, nginx_url))
                ours.append(size_mib / await asyncio.to_thread(curl_seconds, ours_url))
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    size_text = "1 GiB" if size_mib == 1024 else f"{size_mib} MiB"
    return [
        Result(
            benchmark=f"HTTP download of a COMPLETED {size_text} resource (curl)",
            subject="livefile",
            unit="MiB/s",
            runs=ours,
            baseline="nginx (sendfile), same file, same tmpfs",
            baseline_runs=theirs,
            target=0.8,
            target_text=">= 0.8",
        )
    ]
