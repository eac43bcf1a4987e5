"""HTTP download of a COMPLETED resource with curl: livefile against nginx serving the same
file from the same tmpfs, in the same run (Debian's nginx, started here on loopback).

Run: uv run python -m bench --only http_download
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.support import (
    SCRATCH,
    MiB,
    Result,
    free_port,
    livefile_server,
    random_file,
    start_process,
    stop,
)
from livefile.client_upload import AsyncUploadClient

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def curl_seconds(url: str) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - started


def start_nginx(root: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="nginx-", dir=SCRATCH))
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, root=root))
    return start_process([nginx, "-c", str(conf), "-p", str(workdir)], port), port, workdir


async def measure(runs: int, quick: bool) -> list[Result]:
    size_mib = 16 if quick else 1024
    size = size_mib * MiB
    source = random_file(SCRATCH / f"source-{size_mib}MiB.bin", size)

    data_dir = SCRATCH / "http-bench-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    nginx, nginx_port, nginx_dir = start_nginx(source.parent)
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            result = await client.upload_file(source)
        ours_url = f"http://127.0.0.1:{port}/resources/{result.resource_id}/content"
        nginx_url = f"http://127.0.0.1:{nginx_port}/{source.name}"
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(runs):  # interleaved, so that machine noise hits both alike
            theirs.append(size_mib / await asyncio.to_thread(curl_seconds, nginx_url))
            ours.append(size_mib / await asyncio.to_thread(curl_seconds, ours_url))
    finally:
        stop(server)
        stop(nginx)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(nginx_dir, ignore_errors=True)
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
