"""The peers the benchmarks compare livefile with, installed and started on loopback here.

- tus-node-server: ``@tus/server`` + ``@tus/file-store`` from npm, installed by the benchmark
  itself into a cache outside the repository (``~/.cache/livefile-bench/node``, or
  ``$LIVEFILE_BENCH_NODE_DIR``; reused when present) and run with the machine's ``node`` through
  ``bench/tus_server.mjs`` (a plain ``node:http`` server, tus path ``/files/``).
- nginx: Debian's ``/usr/sbin/nginx`` serving a directory with ``sendfile on``, one worker.
- wrk: the HTTP load generator (``apt-get install -y wrk`` when missing and running as root).

Every server is a context manager that stops it (and removes its scratch files) at the end.

Run: uv run python -m bench.peers   (installs the peers, starts each once, checks it answers)
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.support import (
    SCRATCH,
    MiB,
    Result,
    free_port,
    livefile_server,
    median,
    random_file,
    start_process,
    stop,
)

BENCH_DIR = Path(__file__).resolve().parent
TUS_SERVER_SCRIPT = BENCH_DIR / "tus_server.mjs"
NODE_PREFIX = Path(
    os.environ.get("LIVEFILE_BENCH_NODE_DIR", Path.home() / ".cache" / "livefile-bench" / "node")
)
TUS_PACKAGES = ("@tus/server", "@tus/file-store")

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def peer_source(size_mib: int) -> Path:
    """A random file of ``size_mib`` MiB for the peer benchmarks, in a directory of their own
    under SCRATCH (other benchmarks clean up their own source files); made once, then reused."""
    return random_file(SCRATCH / "peers" / f"source-{size_mib}MiB.bin", size_mib * MiB)


# --- tus-node-server ---------------------------------------------------------------------------


def ensure_npm_packages(packages: tuple[str, ...], prefix: Path = NODE_PREFIX) -> Path:
    """Install the npm ``packages`` under ``prefix`` unless already there; returns ``prefix``
    (the tests install tus-js-client this way too)."""
    modules = prefix / "node_modules"
    if all((modules / name / "package.json").exists() for name in packages):
        return prefix
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed to install {' '.join(packages)}")
    prefix.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), *packages],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm install {' '.join(packages)} failed:\n{done.stderr}")
    return prefix


def ensure_tus_packages(prefix: Path = NODE_PREFIX) -> Path:
    """Install ``@tus/server`` and ``@tus/file-store`` under ``prefix`` unless already there."""
    return ensure_npm_packages(TUS_PACKAGES, prefix)


def package_version(name: str, prefix: Path = NODE_PREFIX) -> str:
    manifest = json.loads((prefix / "node_modules" / name / "package.json").read_text())
    return str(manifest["version"])


@dataclass(frozen=True)
class TusServer:
    """A running tus-node-server: ``endpoint`` takes creation POSTs; uploads land in data_dir."""

    port: int
    data_dir: Path
    version: str
    pid: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"


@contextmanager
def tus_node_server(data_dir: Path, port: int | None = None) -> Iterator[TusServer]:
    """tus-node-server with a FileStore in ``data_dir`` (emptied first and removed at the end)."""
    prefix = ensure_tus_packages()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is needed to run tus-node-server")
    port = port or free_port()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    process = start_process(
        [node, str(TUS_SERVER_SCRIPT), str(prefix), str(port), str(data_dir)], port
    )
    try:
        yield TusServer(port, data_dir, package_version("@tus/server", prefix), process.pid)
    finally:
        stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- nginx -------------------------------------------------------------------------------------


def start_nginx(root: Path, port: int, workdir: Path | None = None) -> subprocess.Popen[bytes]:
    """nginx (one worker, sendfile on, keep-alive) serving ``root`` on 127.0.0.1:``port``.

    Its config, pid and error log go to ``workdir`` (default: a new directory under SCRATCH,
    left behind); stop it with ``bench.support.stop``, or use ``nginx_server``, which also
    removes its directory.
    """
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if workdir is None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="nginx-", dir=SCRATCH))
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, root=root))
    return start_process([binary, "-c", str(conf), "-p", str(workdir)], port)


@dataclass(frozen=True)
class NginxServer:
    port: int
    root: Path
    pid: int  # the master; CpuMeter counts its worker too

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def nginx_server(root: Path, port: int | None = None) -> Iterator[NginxServer]:
    """nginx serving ``root`` (its scratch directory removed at the end)."""
    port = port or free_port()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nginx-", dir=SCRATCH) as workdir:
        process = start_nginx(root, port, Path(workdir))
        try:
            yield NginxServer(port, root, process.pid)
        finally:
            stop(process)


# --- livefile ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LivefileServer:
    port: int
    data_dir: Path
    pid: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextmanager
def livefile(data_dir: Path, *extra: str) -> Iterator[LivefileServer]:
    """``livefile serve`` on an empty ``data_dir`` (removed at the end)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    process = livefile_server(port, data_dir, *extra)
    try:
        yield LivefileServer(port, data_dir, process.pid)
    finally:
        stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- CPU accounting ----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds a server (with its child processes) and the client spend inside ``with``,
    and the wall-clock seconds. The client is this process plus any child process it waits
    for meanwhile (a load generator such as wrk); servers it started are reaped only later."""

    def __init__(self, server_pid: int) -> None:
        self._server = psutil.Process(server_pid)
        self.server = 0.0
        self.client = 0.0
        self.wall = 0.0

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        """The process's CPU seconds and its children's (nginx's worker, say)."""
        total = 0.0
        for member in [process, *process.children(recursive=True)]:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    @staticmethod
    def _client_cpu() -> float:
        """This process's CPU seconds plus those of children reaped meanwhile (e.g. wrk)."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def __enter__(self) -> CpuMeter:
        self._started = (self._cpu(self._server), self._client_cpu(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        server, client, wall = self._started
        self.server = self._cpu(self._server) - server
        self.client = self._client_cpu() - client
        self.wall = time.perf_counter() - wall


def cpu_series(meters: dict[str, list[CpuMeter]], per: float = 1.0) -> dict[str, list[float]]:
    """Per-run CPU seconds (divided by ``per``) of each subject's server and client."""
    series: dict[str, list[float]] = {}
    for name, runs in meters.items():
        series[f"{name}_server_cpu"] = [meter.server / per for meter in runs]
        series[f"{name}_client_cpu"] = [meter.client / per for meter in runs]
        series[f"{name}_wall"] = [meter.wall / per for meter in runs]
    return series


def cpu_summary(
    meters: dict[str, list[CpuMeter]], per: float = 1.0, scale: float = 1.0, unit: str = "s"
) -> str:
    """E.g. ``livefile server 1.2 s + client 0.9 s in 1.5 s; tus server ...`` (medians)."""
    parts = []
    for name, runs in meters.items():
        server = median([meter.server / per * scale for meter in runs])
        client = median([meter.client / per * scale for meter in runs])
        wall = median([meter.wall / per * scale for meter in runs])
        parts.append(
            f"{name} server {server:.2f} {unit} + client {client:.2f} {unit}"
            f" in {wall:.2f} {unit} wall"
        )
    return "; ".join(parts)


def explain(result: Result, missed_reason: str, load_before: float) -> Result:
    """Add to ``result.notes`` the machine's load while it ran and, when the target is
    missed, why (``missed_reason``: what profiling found)."""
    load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    notes = [result.notes] if result.notes else []
    notes.append(
        f"Load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on {cores}"
        " cores: other processes on the machine share the CPU with both subjects."
    )
    if result.met is False and missed_reason:
        notes.append(f"Target missed: {missed_reason}")
    result.notes = " ".join(notes)
    return result


# --- wrk ---------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of ``wrk``, installed with apt-get when missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, env=env, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get install wrk did not provide wrk")
    return found


# --- output ------------------------------------------------------------------------------------


def print_results(results: list[Result]) -> None:
    for result in results:
        runs = ", ".join(f"{value:.1f}" for value in result.runs)
        print(f"{result.benchmark}: {result.subject}")
        print(f"  {result.value:10.1f} {result.unit}   runs: {runs}")
        if result.baseline is not None and result.baseline_value is not None:
            base = ", ".join(f"{value:.1f}" for value in result.baseline_runs)
            print(f"  baseline {result.baseline}")
            print(f"  {result.baseline_value:10.1f} {result.unit}   runs: {base}")
        ratio = result.ratio
        shown = "n/a" if ratio is None else f"{ratio:.2f}"
        verdict = {True: "met", False: "MISSED", None: ""}[result.met]
        print(f"  ratio {shown}  (target {result.target_text}) {verdict}")
        if result.notes:
            print(f"  notes: {result.notes}")


def _check(port: int, method: str, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def main() -> None:
    print(f"wrk: {ensure_wrk()}")
    with tus_node_server(SCRATCH / "peers-check-tus") as tus:
        status = _check(tus.port, "OPTIONS", "/files/", {"Tus-Resumable": "1.0.0"})
        print(f"@tus/server {tus.version} on {tus.endpoint}: OPTIONS -> {status}")
    root = SCRATCH / "peers-check-nginx"
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_text("hello\n")
    try:
        with nginx_server(root) as nginx:
            status = _check(nginx.port, "GET", "/hello.txt", {})
            print(f"nginx on {nginx.base_url}: GET /hello.txt -> {status}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
