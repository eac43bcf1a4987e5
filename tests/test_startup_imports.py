"""``livefile serve`` without Redis never imports Redis's client: importing it (and the
OpenTelemetry metrics SDK it pulls in) took about a second of CPU, a quarter of every start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# What ``livefile serve`` imports and builds before it listens, without ``--redis-url``.
SERVE_WITHOUT_REDIS = """
import sys
from livefile.impl_common.cli import build_parser
from livefile.impl_websocket import preflight
from livefile.impl_websocket.app import create_app
from livefile.impl_websocket.server import uvicorn_config
from livefile.impl_websocket.settings import Settings

build_parser()
uvicorn_config(Settings(data_dir=sys.argv[1]))
create_app(Settings(data_dir=sys.argv[1]))
print(sorted(name for name in sys.modules if name.split(".")[0] == "redis"))
"""


def test_a_server_without_redis_does_not_import_its_client(tmp_path: Path) -> None:
    imported = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_REDIS, str(tmp_path / "data")],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert imported.strip() == "[]"
