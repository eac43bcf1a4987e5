"""``livefile upload`` as a user runs it: reference first, final result last, honest exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.client_upload.watch import wait_for_status
from tests.support.server import LivefileProcess
from tests.support.terminal import run_with_terminal_stderr
from tests.support.wire import crc32c_hex, download, get_json

LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]


def run_upload(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIVEFILE, "upload", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_upload_prints_the_reference_first_and_the_result_last(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("one\ntwo\n")
    result = run_upload(str(path), "--server", server.ws_url, "--lines")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    reference, final = lines[0], json.loads(lines[-1])
    assert reference == f"{server.ws_url}/ws/streaming/download/{final['resourceId']}"
    assert final == {
        "reference": reference,
        "resourceId": final["resourceId"],
        "size": 8,
        "checksum": crc32c_hex(b"one\ntwo\n"),
        "checksumAlgorithm": "crc32c",
        "status": {"transferStatus": "COMPLETED", "currentSize": 8, "numberOfLines": 2},
    }
    assert result.stderr == ""  # no progress when stderr is not a terminal


def test_server_defaults_to_livefile_server_from_the_environment(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "env.bin"
    path.write_bytes(b"from env")
    result = run_upload(str(path), env={"LIVEFILE_SERVER": f"127.0.0.1:{server.port}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{server.ws_url}/ws/streaming/download/")


def test_progress_goes_to_stderr_on_request(server: LivefileProcess, tmp_path: Path) -> None:
    path = tmp_path / "p.bin"
    path.write_bytes(os.urandom(300_000))
    result = run_upload(str(path), "--server", server.ws_url, "--progress")
    assert result.returncode == 0, result.stderr
    # The bar is rewritten with "\r" (which text mode reads as a line break); the last is final.
    assert re.fullmatch(
        r"100%\|█+\| 300kB/300kB \[\d\d:\d\d<\d\d:\d\d, [\d.]+[kMG]?B/s, stored 300kB\]",
        result.stderr.splitlines()[-1],
    ), result.stderr
    assert len(result.stdout.splitlines()) == 2  # the reference and the result, nothing else


def test_failed_upload_exits_1_with_the_reason(server: LivefileProcess, tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    result = run_upload(str(path), "--server", server.ws_url, "--context", "nope")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "livefile: upload failed: PolicyViolationError:"
        " closed with 1008: Unknown upload context nope\n"
    )


def test_missing_file_is_a_usage_error(server: LivefileProcess, tmp_path: Path) -> None:
    result = run_upload(str(tmp_path / "absent"), "--server", server.ws_url)
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_bad_server_url_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    result = run_upload(str(path), "--server", "ftp://example.invalid")
    assert result.returncode == 2
    assert result.stderr == "livefile: Unsupported server URL scheme: 'ftp'\n"


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
    # Once the server has published the second line, the CLI has sent it: now stop it.
    await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 13)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["status"]["transferStatus"] == "COMPLETED"
    assert await download(server.ws_url, resource_id) == b"first\nsecond\n"


def test_live_upload_ends_after_the_idle_timeout(server: LivefileProcess, tmp_path: Path) -> None:
    path = tmp_path / "quiet.log"
    path.write_bytes(b"nothing more\n")
    result = run_upload(str(path), "--server", server.ws_url, "--live", "--idle-timeout", "0.3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["status"] == {
        "transferStatus": "COMPLETED", "currentSize": 13, "numberOfLines": None,
    }  # fmt: skip


def test_idle_timeout_without_live_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    result = run_upload(str(path), "--idle-timeout", "1")
    assert result.returncode == 2
    assert result.stderr == "livefile: --idle-timeout needs --live\n"


def test_a_reader_that_leaves_early_ends_the_command_quietly(
    server: LivefileProcess, tmp_path: Path
) -> None:
    """``livefile upload f | head -1``: the reference is read, the pipe closed; the upload
    still completes and the command ends with 141 (SIGPIPE's status) and no traceback."""
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(2_000_000))
    process = subprocess.Popen(
        [*LIVEFILE, "upload", str(path), "--server", server.ws_url, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    reference = process.stdout.readline().strip()
    process.stdout.close()  # like head -1
    assert process.wait(60) == 141
    assert process.stderr.read() == ""
    resource_id = reference.rsplit("/", 1)[1]
    _, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert info["status"]["transferStatus"] == "COMPLETED"


def test_a_terminal_gets_a_bar_with_percent_rate_and_time_left_unless_quiet(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3_000_000))
    command = [*LIVEFILE, "upload", str(path), "--server", server.ws_url]
    code, stdout, shown = run_with_terminal_stderr(command)
    assert code == 0, shown
    final = shown.decode().replace("\r\n", "\n").split("\r")[-1]
    assert re.fullmatch(
        r"100%\|█+\| 3\.00MB/3\.00MB \[\d\d:\d\d<\d\d:\d\d, [\d.]+[kMG]?B/s, stored 3\.00MB\]\n",
        final,
    ), shown
    assert len(stdout.splitlines()) == 2  # the bar never reaches standard output
    code, _, shown = run_with_terminal_stderr([*command, "--quiet"])
    assert (code, shown) == (0, b"")
