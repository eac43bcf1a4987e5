"""HTTP download of a COMPLETED resource with curl: livefile against nginx serving the same
file from the same tmpfs, in the same run (Debian's nginx, started here on loopback).

Run: uv run python -m bench.http_download [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.support import (
    SCRATCH,
    MiB,
    free_port,
    livefile_server,
    median,
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


def start_nginx(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="nginx-", dir=SCRATCH))
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, root=root))
    return start_process([nginx, "-c", str(conf), "-p", str(workdir)], port), port


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    source = random_file(SCRATCH / f"source-{args.size_mib}MiB.bin", size)

    data_dir = SCRATCH / "http-bench-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    server = livefile_server(port, data_dir)
    nginx, nginx_port = start_nginx(source.parent)
    try:
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}") as client:
            result = await client.upload_file(source)
        ours_url = f"http://127.0.0.1:{port}/resources/{result.resource_id}/content"
        nginx_url = f"http://127.0.0.1:{nginx_port}/{source.name}"
        ours, theirs = [], []
        for _ in range(args.runs):  # interleaved, so that machine noise hits both alike
            theirs.append(size / MiB / curl_seconds(nginx_url))
            ours.append(size / MiB / curl_seconds(ours_url))
    finally:
        stop(server)
        stop(nginx)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(
        f"HTTP download of a COMPLETED {args.size_mib} MiB resource with curl,"
        f" median of {args.runs} runs (MiB/s):"
    )
    for name, figures in (("nginx (sendfile)", theirs), ("livefile", ours)):
        runs = ", ".join(f"{value:.0f}" for value in figures)
        print(f"  {name:18} {median(figures):8.1f}   runs: {runs}")
    print(f"  ratio livefile / nginx: {median(ours) / median(theirs):.2f}  (target >= 0.5)")


if __name__ == "__main__":
    asyncio.run(main())
