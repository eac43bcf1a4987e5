"""The physical limits of this machine, measured in the same run as the benchmarks they bound:

- loopback TCP: a plain socket sender (this process, in a thread) and receiver (a child
  process), 1 GiB, no framing, no parsing;
- the data directory (SCRATCH, tmpfs by default): sequential write of 1 GiB ended by fsync,
  then sequential read of the same file. Dropping the page cache needs root, and O_DIRECT is
  refused by tmpfs, so the read comes from the page cache: on tmpfs that *is* the storage;
  on a disk it is an upper bound;
- the minimal FastAPI/uvicorn WebSocket endpoint that only appends messages to a file
  (bench/baseline_ws.py), with a plain websockets client: the ceiling of any ASGI upload,
  given as a ratio to loopback TCP.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time
from multiprocessing.connection import Connection

from bench.support import SCRATCH, MiB, Result, end_child, random_file
from bench.upload_throughput import baseline_upload

PIECE = 1 * MiB


def _receive(listener_port: int, expected: int, ready: Connection) -> None:
    """In a child process: accept one connection, read ``expected`` bytes, answer one byte."""
    with socket.create_server(("127.0.0.1", listener_port)) as server:
        ready.send(True)
        conn, _ = server.accept()
        with conn:
            buffer = bytearray(PIECE)
            received = 0
            while received < expected:
                count = conn.recv_into(buffer)
                if not count:
                    raise RuntimeError("sender closed early")
                received += count
            conn.sendall(b"!")


def _send(port: int, size: int) -> float:
    payload = os.urandom(PIECE)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        started = time.perf_counter()
        remaining = size
        while remaining:
            piece = min(remaining, PIECE)
            conn.sendall(memoryview(payload)[:piece])
            remaining -= piece
        if conn.recv(1) != b"!":
            raise RuntimeError("receiver did not confirm")
        return time.perf_counter() - started


def loopback_tcp(size: int) -> float:
    """MiB/s of ``size`` bytes over one loopback TCP connection between two processes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    receiver = ctx.Process(target=_receive, args=(port, size, child))
    receiver.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("loopback receiver did not start")
        parent.recv()
        return size / MiB / _send(port, size)
    finally:
        end_child(receiver)


def disk_write_read(size: int) -> tuple[float, float]:
    """MiB/s of a sequential write (ended by fsync) and of reading it back, in SCRATCH."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / "limits-disk.bin"
    payload = os.urandom(PIECE)
    try:
        started = time.perf_counter()
        with path.open("wb", buffering=0) as target:
            remaining = size
            while remaining:
                piece = min(remaining, PIECE)
                target.write(memoryview(payload)[:piece])
                remaining -= piece
            os.fsync(target.fileno())
        write = size / MiB / (time.perf_counter() - started)
        buffer = bytearray(PIECE)
        started = time.perf_counter()
        with path.open("rb", buffering=0) as source:
            while source.readinto(buffer):
                pass
        read = size / MiB / (time.perf_counter() - started)
        return write, read
    finally:
        path.unlink(missing_ok=True)


def filesystem_of(path: os.PathLike[str] | str) -> str:
    """The file system type of the mount holding ``path`` (from /proc/mounts)."""
    best, kind = "", "unknown"
    resolved = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                mount, fs = fields[1], fields[2]
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fs
    except OSError:
        pass
    return kind


async def measure(runs: int, quick: bool) -> list[Result]:
    size = (64 if quick else 1024) * MiB
    source = random_file(SCRATCH / f"source-{size // MiB}MiB.bin", size)
    tcp: list[float] = []
    writes: list[float] = []
    reads: list[float] = []
    endpoint: list[float] = []
    for _ in range(runs):  # interleaved, so that machine noise hits all alike
        tcp.append(await asyncio.to_thread(loopback_tcp, size))
        write, read = await asyncio.to_thread(disk_write_read, size)
        writes.append(write)
        reads.append(read)
        endpoint.append(size / MiB / await baseline_upload(source))
    mib = size // MiB
    fs = filesystem_of(SCRATCH)
    return [
        Result(
            benchmark=f"limit: loopback TCP, {mib} MiB",
            subject="plain socket, two processes",
            unit="MiB/s",
            runs=tcp,
        ),
        Result(
            benchmark=f"limit: data directory sequential write, {mib} MiB + fsync",
            subject=f"{SCRATCH} ({fs})",
            unit="MiB/s",
            runs=writes,
        ),
        Result(
            benchmark=f"limit: data directory sequential read, {mib} MiB",
            subject=f"{SCRATCH} ({fs})",
            unit="MiB/s",
            runs=reads,
            notes="read right after the write, from the page cache (dropping caches needs root;"
            " tmpfs refuses O_DIRECT): on tmpfs the page cache is the storage.",
        ),
        Result(
            benchmark=f"limit: minimal FastAPI/uvicorn WebSocket endpoint, {mib} MiB",
            subject="append-only endpoint, plain websockets client",
            unit="MiB/s",
            runs=endpoint,
            baseline="loopback TCP",
            baseline_runs=tcp,
            notes="the ratio is the share of raw loopback TCP that one ASGI WebSocket upload"
            " reaches on this machine",
        ),
    ]
