"""``livefile serve`` and the ``livefile`` command host."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import LivefileProcess, free_port
from tests.support.wire import get_json, upload

LOW_SOFT_LIMIT = 512


def test_livefile_lists_the_subcommands_of_every_installed_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livefile.impl_common.cli", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for command in ("serve", "upload", "get", "tail", "status"):
        assert command in result.stdout


async def test_serve_takes_its_settings_from_livefile_environment_variables(
    tmp_path: Path,
) -> None:
    port = free_port()
    data_dir = tmp_path / "from-env"
    env = {
        "LIVEFILE_HOST": "127.0.0.1",
        "LIVEFILE_PORT": str(port),
        "LIVEFILE_DATA_DIR": str(data_dir),
        "LIVEFILE_MAX_RESOURCE_SIZE": "5",
    }
    server = LivefileProcess(None, port=port, env=env).start()
    try:
        assert get_json(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        resource_id = await upload(server.ws_url, b"12345")
        assert (data_dir / "resources" / resource_id[:2] / resource_id[2:4]).is_dir()
        assert (data_dir / "catalog.sqlite3").is_file()
    finally:
        server.kill()


def test_openapi_describes_the_http_routes(tmp_path: Path) -> None:
    server = LivefileProcess(tmp_path / "data").start()
    try:
        status, spec = get_json(f"{server.http_url}/openapi.json")
    finally:
        server.kill()
    assert status == 200
    for path in (
        "/resources/{resource_id}",
        "/contexts",
        "/contexts/{context_id}",
        "/contexts/{context_id}/events",
        "/healthz",
    ):
        assert path in spec["paths"]


def test_serve_takes_the_hard_limit_of_open_files(tmp_path: Path) -> None:
    """Connections and downloads hold descriptors; a soft limit of 1,024 must not cap them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOW_SOFT_LIMIT:
        pytest.skip(f"the hard limit of open files ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))  # inherited by serve
    try:
        server = LivefileProcess(tmp_path / "data").start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert server.process is not None
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        served_soft, served_hard = line.split()[3:5]
        assert served_soft == served_hard != str(LOW_SOFT_LIMIT)
    finally:
        server.kill()
