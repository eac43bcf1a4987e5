"""Acknowledged means durable, seen from outside: a real ``livefile serve`` run under strace,
whose flushes to stable storage (fsync, fdatasync) are recorded with the files they flush."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory

WAIT = 60.0
TEXT = b"".join(b"line %d\n" % n for n in range(5_000))


def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the servers started from now on run under strace; returns the trace file."""
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI") == "true":  # .ci/run installs it: missing is a failure there
            pytest.fail("strace is not installed (Debian: strace)")
        pytest.skip("strace is not installed (Debian: strace)")
    trace = tmp_path / "flushes.trace"
    wrapper = tmp_path / "python-under-strace"
    # -D: strace runs as a detached grandchild and the server keeps the pid the test started,
    # so stopping the server stops it (strace as the parent would detach and leave it running).
    wrapper.write_text(
        f"#!/bin/sh\nexec {strace} -D -f -qq -y --seccomp-bpf -e trace=fsync,fdatasync"
        f' -e signal=none -o {trace} {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    # tests/support/server.py starts ``sys.executable -m livefile.impl_common.cli serve``.
    monkeypatch.setattr(sys, "executable", str(wrapper))
    return trace


async def upload_text(ws_url: str) -> str:
    async with AsyncUploadClient(ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(
            TEXT, filename="app.log", mime_type="text/plain", supports_line_access=True
        )
    assert result.size == len(TEXT)
    return result.resource_id


def flushed(trace: Path) -> list[str]:
    time.sleep(0.5)  # strace writes its lines as the calls return
    return [line for line in trace.read_text().splitlines() if "sync(" in line]


async def test_an_acknowledged_upload_was_flushed_to_stable_storage(
    start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = traced(tmp_path, monkeypatch)
    server = start_server(data_dir=tmp_path / "data")
    resource_id = await upload_text(server.ws_url)
    calls = "\n".join(flushed(trace))
    folder = f"/resources/{resource_id[:2]}/{resource_id[2:4]}"
    assert f"{folder}/{resource_id}.bin>" in calls  # the bytes
    assert f"{folder}/{resource_id}.idx>" in calls  # the line index
    assert f"{folder}/{resource_id}.meta." in calls  # the record, before its rename
    assert f"{folder}>" in calls  # the directory holding the renamed record (and the bytes)
    assert "catalog.sqlite3-wal>" in calls  # the end committed with synchronous=FULL


async def test_scratch_uploads_are_not_flushed(
    start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = traced(tmp_path, monkeypatch)
    server = start_server("--no-durable", data_dir=tmp_path / "data")
    await upload_text(server.ws_url)
    assert [line for line in flushed(trace) if "/resources/" in line] == []
