"""A client installed alone from the workspace's wheels, as a user outside this repository
does it: ``uv build --all-packages`` makes a wheel of every distribution, and
``pip install --find-links dist livefile-client-upload`` (or ``-download``) takes from them
only what that client needs; its other dependencies come from the package index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import LivefileProcess

ROOT = Path(__file__).resolve().parent.parent
SERVER_PACKAGES = {
    "livefile-impl-server", "livefile-impl-websocket", "fastapi", "starlette", "uvicorn",
    "uvloop", "httptools", "pydantic-settings", "redis",
}  # fmt: skip


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True, text=True, timeout=600, cwd=cwd, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def uv() -> str:
    """The uv that runs these tests (``uv run`` says which in UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed to build the wheels: python3 -m pip install uv")
    return found


@pytest.mark.slow
def test_the_clients_install_alone_from_the_wheels_and_talk_to_a_server(
    server: LivefileProcess, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    run(uv(), "build", "--all-packages", "--wheel", "-o", dist, cwd=ROOT)
    wheels = sorted(path.name.split("-")[0] for path in dist.glob("*.whl"))
    assert wheels == [
        "livefile_api", "livefile_client_download", "livefile_client_upload",
        "livefile_impl_common", "livefile_impl_server", "livefile_impl_websocket",
    ]  # fmt: skip

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    run(
        bin_dir / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--find-links", dist, "livefile-client-upload", "livefile-client-download",
    )  # fmt: skip
    listed = run(bin_dir / "python", "-m", "pip", "list", "--format", "json")
    installed = {package["name"].lower().replace("_", "-") for package in json.loads(listed)}
    assert {"livefile-client-upload", "livefile-client-download", "livefile-api"} <= installed
    assert installed & SERVER_PACKAGES == set()

    source = tmp_path / "report.txt"
    source.write_bytes(b"from a client installed alone\n" * 1000)
    uploaded = run(bin_dir / "livefile", "upload", source, "--server", server.ws_url)
    reference = uploaded.splitlines()[0]
    assert json.loads(uploaded.splitlines()[-1])["status"]["transferStatus"] == "COMPLETED"
    copy = tmp_path / "copy.txt"
    run(bin_dir / "livefile", "get", reference, "-o", copy)
    assert copy.read_bytes() == source.read_bytes()
    # Only the client commands are there: `serve` comes with the server packages.
    help_text = run(bin_dir / "livefile", "--help")
    listed_commands = help_text.split("COMMAND\n", 1)[1].splitlines()
    commands = sorted(
        line.split()[0]
        for line in listed_commands
        if line.startswith("    ") and not line.startswith("     ")  # not a wrapped help line
    )
    assert commands == ["fetch", "get", "image", "lines", "repack", "status", "tail", "upload"]
