"""``livefile serve`` with a bad setting: one line naming the setting (flag and environment
variable), the value and what is allowed, and exit status 2 — never a traceback. A port that is
taken is a fault of the moment, not a bad value: one line too, and exit status 1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SERVE = [sys.executable, "-m", "livefile.impl_common.cli", "serve"]
# Root passes permission bits: without these two capabilities it meets them like their owner.
DROP_DAC_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def serve(
    cwd: Path, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("LIVEFILE_")}
    return subprocess.run(
        [*(prefix or []), *SERVE, "--host", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=30,  # a server that starts instead of refusing fails here
    )


def one_line(result: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("livefile serve: ")
    assert "Traceback" not in line
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (
            ["--checkpoint-interval", "-1"],
            {},
            ["--checkpoint-interval -1", "LIVEFILE_CHECKPOINT_INTERVAL", "at least 0"],
        ),
        (["--port", "99999"], {}, ["--port 99999", "LIVEFILE_PORT", "from 0 to 65535"]),
        ([], {"LIVEFILE_PORT": "abc"}, ["LIVEFILE_PORT=abc", "--port", "an integer"]),
        (
            ["--log-level", "loud"],
            {},
            ["--log-level loud", "LIVEFILE_LOG_LEVEL", "debug", "info", "warning", "error"],
        ),
        (
            [],
            {"LIVEFILE_REQUEST_HEAD_TIMEOUT": "0"},
            ["LIVEFILE_REQUEST_HEAD_TIMEOUT=0", "--request-head-timeout", "greater than 0"],
        ),
        (
            ["--max-connections-per-client", "many"],
            {},
            ["--max-connections-per-client many", "LIVEFILE_MAX_CONNECTIONS_PER_CLIENT"],
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_flag_variable_value_and_what_is_allowed(
    tmp_path: Path, args: list[str], env: dict[str, str], words: list[str]
) -> None:
    one_line(serve(tmp_path, "--data-dir", str(tmp_path / "data"), *args, env=env), 2, *words)
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_a_data_directory_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    line = one_line(serve(tmp_path, "--data-dir", str(a_file)), 2, str(a_file), "LIVEFILE_DATA_DIR")
    assert "must be a directory" in line
    line = one_line(serve(tmp_path, env={"LIVEFILE_DATA_DIR": str(a_file)}), 2, "--data-dir")
    assert f"LIVEFILE_DATA_DIR={a_file}" in line


def test_a_data_directory_inside_a_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    inside = tmp_path / "a-file" / "data"
    line = one_line(serve(tmp_path, "--data-dir", str(inside)), 2, str(inside), "--data-dir")
    assert "not a directory" in line


def test_a_data_directory_the_server_cannot_read_or_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root reads and writes a mode-000 directory (CAP_DAC_OVERRIDE), and so would the
        # server: run it without that override, as an ordinary owner would be.
        if shutil.which("setpriv") is None:
            pytest.skip("root, and no setpriv to drop CAP_DAC_OVERRIDE")
        probe = subprocess.run([*DROP_DAC_OVERRIDE, "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip("root, and this container cannot drop CAP_DAC_OVERRIDE")
        prefix = DROP_DAC_OVERRIDE
    try:
        result = serve(tmp_path, "--data-dir", str(locked), prefix=prefix)
    finally:
        locked.chmod(0o700)
    line = one_line(result, 2, str(locked), "--data-dir", "LIVEFILE_DATA_DIR")
    assert "read and write" in line
    assert "permission denied" in line
    assert list(locked.iterdir()) == []  # no probe left behind


def test_a_port_in_use_is_one_line_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, "--data-dir", str(tmp_path / "data"), "--port", str(port))
    one_line(result, 1, f"127.0.0.1:{port}", "--port", "LIVEFILE_PORT", "already in use")
