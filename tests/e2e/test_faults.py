"""Faults over real processes and sockets: a server killed with SIGKILL, and a full disk.

A kill must leave every resource in a truthful state after the restart: the interrupted upload
FAILED with its bytes, everything completed before the kill intact (checksums re-verified over
the WebSocket and over HTTP). A full disk must end the upload that overflowed it with a clear
reason and FAILED everywhere — although the catalog sits on the same full disk — while the
server goes on serving what it stored before, and accept uploads again once space is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.raw_upload import RawUpload
from tests.support.server import LivefileProcess
from tests.support.wire import (
    get_json,
    next_status,
    open_ws,
    plain_status,
    read_chunk,
    receive_json,
    start_upload,
    status_where,
    wait_closed,
)

WAIT = 30.0  # a bound for events on a loaded CI machine; never a synchronisation sleep
PIECE = 256 * 1024
TEXT = {"filename": "run.log", "mimeType": "text/plain", "supportsLineAccess": True}
BINARY = {"filename": "blob.bin", "mimeType": "application/octet-stream"}
STORAGE_FULL = "Storage full: No space left on device"


@dataclass
class Stored:
    """What an uploader sent and what the server acknowledged."""

    resource_id: str
    data: bytes
    number_of_lines: int | None

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()


def resource_path(data_dir: Path, resource_id: str) -> Path:
    """Where the filesystem storage keeps a resource's bytes (docs/architecture.md)."""
    return data_dir / "resources" / resource_id[0:2] / resource_id[2:4] / f"{resource_id}.bin"


async def upload_whole(ws_url: str, data: bytes, *, lines: bool = False) -> Stored:
    """Upload ``data`` to its end; the server must acknowledge it COMPLETED."""
    metadata: dict[str, Any] = {
        "filename": "run.log" if lines else "blob.bin",
        "mime_type": "text/plain" if lines else "application/octet-stream",
        "supports_line_access": lines,
    }
    async with RawUpload(ws_url, **metadata) as raw:
        await raw.write(data)
        ack = await raw.finish()
    assert ack["size"] == len(data), ack
    assert ack["checksum"] == hashlib.md5(data).hexdigest(), ack
    return Stored(raw.resource_id, data, ack.get("numberOfLines"))


async def download_over_websocket(server: LivefileProcess, resource_id: str) -> bytes:
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        status = await next_status(ws)
        assert status["transferStatus"] in ("COMPLETED", "FAILED"), status
        size = int(status["currentSize"])
        return await read_chunk(ws, 0, size) if size else b""


async def lines_over_websocket(server: LivefileProcess, resource_id: str, count: int) -> list[str]:
    """Lines ``0 .. count-1`` (paging through bounded replies)."""
    lines: list[str] = []
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        await next_status(ws)
        while len(lines) < count:
            request = {"@": "RequestLines", "startingLineIndex": len(lines)}
            await ws.send(json.dumps({**request, "linesCount": count - len(lines)}))
            reply = await asyncio.wait_for(receive_json(ws), WAIT)
            while reply["@"] == "StatusChanged":
                reply = await asyncio.wait_for(receive_json(ws), WAIT)
            assert reply["@"] == "Lines", reply
            assert reply["lines"], reply
            lines += reply["lines"]
    return lines


def download_over_http(
    server: LivefileProcess, resource_id: str, query: str = ""
) -> tuple[bytes, Any]:
    """The whole content and the response headers of ``GET /resources/{id}/content``."""
    url = f"{server.http_url}/resources/{resource_id}/content{query}"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.status == 200
        return response.read(), response.headers


async def assert_intact(server: LivefileProcess, stored: Stored) -> None:
    """A COMPLETED resource: its status, checksum, bytes (WebSocket and HTTP), ETag and lines."""
    status, info = get_json(f"{server.http_url}/resources/{stored.resource_id}")
    assert status == 200
    assert plain_status(info["status"]) == {
        "transferStatus": "COMPLETED",
        "currentSize": len(stored.data),
        "numberOfLines": stored.number_of_lines,
    }
    assert info["checksum"] == stored.md5
    over_ws = await download_over_websocket(server, stored.resource_id)
    assert hashlib.md5(over_ws).hexdigest() == stored.md5
    over_http, headers = download_over_http(server, stored.resource_id)
    assert hashlib.md5(over_http).hexdigest() == stored.md5
    assert headers["ETag"] == f'"{stored.md5}"'
    assert int(headers["Content-Length"]) == len(stored.data)
    if stored.number_of_lines:
        lines = await lines_over_websocket(server, stored.resource_id, stored.number_of_lines)
        assert "".join(lines).encode() == stored.data


async def assert_failed_with_bytes(
    server: LivefileProcess, resource_id: str, expected: bytes
) -> None:
    """A FAILED resource that kept ``expected``: its status (HTTP and WebSocket) and bytes."""
    _, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert info["status"]["transferStatus"] == "FAILED"
    assert info["status"]["currentSize"] == len(expected)
    assert await download_over_websocket(server, resource_id) == expected
    # A FAILED resource's bytes are served only when asked for (a 409 otherwise).
    over_http, headers = download_over_http(server, resource_id, "?partial=true")
    assert over_http == expected
    assert headers["X-Livefile-Transfer-Status"] == "FAILED"


def text_lines(count: int, unterminated_tail: bytes = b"") -> bytes:
    return b"".join(b"line %06d of the log\n" % number for number in range(count)) + (
        unterminated_tail
    )


async def test_killed_server_keeps_completed_resources_intact_and_fails_the_interrupted_one(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "killed"
    first = start_server(data_dir=data_dir)
    completed = [
        await upload_whole(first.ws_url, b""),
        await upload_whole(first.ws_url, b"x"),
        await upload_whole(first.ws_url, os.urandom(300_000)),
        await upload_whole(first.ws_url, os.urandom(3 * 1024 * 1024 + 17)),
        await upload_whole(
            first.ws_url, text_lines(20_000, b"no line break at the end"), lines=True
        ),
    ]
    assert completed[-1].number_of_lines == 20_001
    interrupted = text_lines(3_000, b"half a li")  # a text upload: its line count must be recovered
    up = await open_ws(f"{first.ws_url}/ws/streaming/upload")
    interrupted_id = await start_upload(up, TEXT)
    async with open_ws(f"{first.ws_url}/ws/streaming/download/{interrupted_id}") as watcher:
        for offset in range(0, len(interrupted), PIECE):
            await up.send(interrupted[offset : offset + PIECE])
        await status_where(watcher, currentSize=len(interrupted))
        first.kill()
    up.transport.abort()

    second = start_server(data_dir=data_dir)
    assert resource_path(data_dir, interrupted_id).stat().st_size == len(interrupted)
    _, info = get_json(f"{second.http_url}/resources/{interrupted_id}")
    assert plain_status(info["status"]) == {
        "transferStatus": "FAILED",
        "currentSize": len(interrupted),
        "numberOfLines": 3_001,  # 3,000 complete lines and the unterminated one
    }
    await assert_failed_with_bytes(second, interrupted_id, interrupted)
    assert await lines_over_websocket(second, interrupted_id, 3_001) == [
        line.decode() for line in interrupted.splitlines(keepends=True)
    ]
    for stored in completed:
        await assert_intact(second, stored)


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, mounted for the test and unmounted after it (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # Servers on the disk are killed by start_server's teardown, which runs before this one
        # (it was set up after it); a lazy unmount still frees the mount if one lingers.
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(path: Path, leave_free: int) -> None:
    """Write a filler file until only about ``leave_free`` bytes are free on its disk."""
    with path.open("wb", buffering=0) as filler:
        while (room := free_bytes(path.parent) - leave_free) > 0:
            filler.write(b"\0" * min(room, 1024 * 1024))


async def upload_until_closed(
    ws_url: str, data: bytes
) -> tuple[str | None, int | None, str | None]:
    """Try to upload ``data``; return the resource id (None if it was never created) and how the
    server closed the connection."""
    async with open_ws(f"{ws_url}/ws/streaming/upload") as up:
        await up.send(json.dumps({"@": "StartUpload", "metadata": BINARY}))
        try:
            ready = await asyncio.wait_for(receive_json(up), WAIT)
        except ConnectionClosed:  # refused before the resource existed
            return None, up.close_code, up.close_reason
        assert ready["@"] == "ReadyForUpload", ready
        with contextlib.suppress(Exception):  # the server may close while we still send
            for offset in range(0, len(data), PIECE):
                await up.send(data[offset : offset + PIECE])
            checksum = hashlib.md5(data).hexdigest()
            await up.send(json.dumps({"@": "FinishUpload", "checksum": checksum}))
        code, reason = await asyncio.wait_for(wait_closed(up), WAIT)
        return str(ready["resourceId"]), code, reason


def catalog_status(data_dir: Path, resource_id: str) -> str:
    """The transfer status the catalog file holds, read by another process's connection."""
    with contextlib.closing(sqlite3.connect(data_dir / "catalog.sqlite3", timeout=WAIT)) as db:
        row = db.execute(
            "SELECT transfer_status FROM resources WHERE id = ?", (resource_id,)
        ).fetchone()
    return str(row[0])


def wait_for_catalog_status(data_dir: Path, resource_id: str, expected: str) -> None:
    """The server records a terminal status it could not write as soon as it can; there is no
    event to await from outside the process, so poll the catalog with a deadline."""
    deadline = time.monotonic() + WAIT
    while (status := catalog_status(data_dir, resource_id)) != expected:
        assert time.monotonic() < deadline, f"the catalog still says {status}, not {expected}"
        time.sleep(0.1)


async def test_full_disk_fails_the_upload_truthfully_and_service_resumes_once_space_is_freed(
    small_disk: Path, start_server: ServerFactory
) -> None:
    data_dir = small_disk / "data"
    server = start_server(data_dir=data_dir)
    before = [
        await upload_whole(server.ws_url, os.urandom(1024 * 1024)),
        await upload_whole(server.ws_url, text_lines(1_000), lines=True),
    ]
    filler = small_disk / "filler"
    fill(filler, leave_free=512 * 1024)

    # The upload overflows the disk: it fails with a reason that says so.
    overflowing = os.urandom(3 * 1024 * 1024)
    failed_id, code, reason = await upload_until_closed(server.ws_url, overflowing)
    assert failed_id is not None, "the upload should have started: there was space for it"
    assert (code, reason) == (1011, STORAGE_FULL), server.log()
    # FAILED everywhere, with the bytes that reached the disk, although the catalog is on the
    # same full disk.
    _, info = get_json(f"{server.http_url}/resources/{failed_id}")
    assert info["status"]["transferStatus"] == "FAILED"
    kept = info["status"]["currentSize"]
    assert 0 < kept <= resource_path(data_dir, failed_id).stat().st_size
    await assert_failed_with_bytes(server, failed_id, overflowing[:kept])

    # While the disk is full: what was stored before is served, new uploads are refused clearly.
    for stored in before:
        await assert_intact(server, stored)
    refused_id, code, reason = await upload_until_closed(server.ws_url, b"more" * 100_000)
    assert code == 1011
    assert str(reason).startswith("Storage full: "), reason
    if refused_id is not None:
        _, info = get_json(f"{server.http_url}/resources/{refused_id}")
        assert info["status"]["transferStatus"] == "FAILED"

    # Space is freed: the catalog catches up, and uploads complete again.
    filler.unlink()
    wait_for_catalog_status(data_dir, failed_id, "FAILED")
    after = await upload_whole(server.ws_url, os.urandom(2 * 1024 * 1024))
    await assert_intact(server, after)

    # A restart finds every resource as it was left: nothing depends on the lost process.
    server.kill()
    restarted = start_server(data_dir=data_dir)
    await assert_failed_with_bytes(restarted, failed_id, overflowing[:kept])
    for stored in [*before, after]:
        await assert_intact(restarted, stored)
    if refused_id is not None:
        _, info = get_json(f"{restarted.http_url}/resources/{refused_id}")
        assert info["status"]["transferStatus"] == "FAILED"
    assert "Traceback" not in server.log() + restarted.log()


async def test_uploader_that_goes_quiet_after_overflowing_the_disk_is_closed_at_once(
    small_disk: Path, start_server: ServerFactory
) -> None:
    data_dir = small_disk / "data"
    # Only the storage failure can end this upload within the test: the idle timeout is long.
    server = start_server("--upload-idle-timeout", "600", data_dir=data_dir)
    fill(small_disk / "filler", leave_free=256 * 1024)
    overflowing = os.urandom(768 * 1024)
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up)
        async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as watcher:
            await up.send(overflowing)  # more than fits, and then nothing more
            assert await asyncio.wait_for(wait_closed(up), WAIT) == (1011, STORAGE_FULL)
            failed = await status_where(watcher, transferStatus="FAILED")
    assert failed["currentSize"] <= resource_path(data_dir, resource_id).stat().st_size
    await assert_failed_with_bytes(server, resource_id, overflowing[: failed["currentSize"]])
