"""``livefile upload`` as a user runs it: reference first, final status last, honest exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from livefile.client_download import AsyncDownloadClient
from tests.support.server import LivefileProcess
from tests.support.wire import download

LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]


def test_upload_prints_the_reference_first_and_the_final_status_last(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("one\ntwo\n")
    result = subprocess.run(
        [*LIVEFILE, "upload", str(path), "--server", server.ws_url, "--lines"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, last = result.stdout.splitlines()[0], result.stdout.splitlines()[-1]
    final = json.loads(last)
    assert first.startswith(f"{server.ws_url}/ws/streaming/download/")
    assert final["reference"] == first
    assert final["status"] == {"transferStatus": "COMPLETED", "currentSize": 8, "numberOfLines": 2}


def test_failed_upload_exits_non_zero_with_the_reason(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    result = subprocess.run(
        [*LIVEFILE, "upload", str(path), "--server", server.ws_url, "--context", "nope"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Unknown upload context nope" in result.stderr


def test_missing_file_is_a_usage_error(server: LivefileProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [*LIVEFILE, "upload", str(tmp_path / "absent"), "--server", server.ws_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no such file" in result.stderr


async def test_live_upload_follows_the_file_until_sigterm(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "live.log"
    path.write_bytes(b"first\n")
    process = subprocess.Popen(
        [*LIVEFILE, "upload", str(path), "--server", server.ws_url, "--live"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    reference = process.stdout.readline().strip()  # printed before the data goes out
    resource_id = reference.rsplit("/", 1)[1]
    with path.open("ab") as log:
        log.write(b"second\n")
    # The upload has the second line once the server has published it; then stop the CLI.
    async with AsyncDownloadClient(reference, timeout=30) as watcher:
        await watcher.wait_for_status(lambda status: status.current_size == 13)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["status"]["transferStatus"] == "COMPLETED"
    assert await download(server.ws_url, resource_id) == b"first\nsecond\n"
    assert os.path.getsize(path) == 13
