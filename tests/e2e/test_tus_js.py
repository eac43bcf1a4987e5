"""tus-js-client (npm, run by Node) against a real ``livefile serve``: an upload whose
connection is cut and that resumes by itself, ``parallelUploads`` (concatenation), and the IETF
draft through its ``protocol`` option.

Node and tus-js-client (installed by the test into the benchmark's npm cache, see
``bench/peers.py``) are needed: without them the tests skip, or fail when
``LIVEFILE_REQUIRE_NODE=1`` (CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c
import pytest
import requests

from bench.peers import ensure_npm_packages
from tests.support.cutting_proxy import CuttingProxy
from tests.support.server import LivefileProcess

SCRIPT = Path(__file__).resolve().parent.parent / "support" / "tus_js_upload.mjs"
REQUIRED = os.environ.get("LIVEFILE_REQUIRE_NODE") == "1"
DATA = os.urandom(700_000)
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def tus_js() -> tuple[str, Path]:
    """``node`` and the npm prefix holding tus-js-client."""
    node = shutil.which("node")
    try:
        if node is None:
            raise RuntimeError("node is not installed (Debian: nodejs, npm)")
        prefix = ensure_npm_packages(("tus-js-client",))
    except RuntimeError as exc:
        if REQUIRED:
            pytest.fail(f"tus-js-client cannot run: {exc}")
        pytest.skip(f"tus-js-client cannot run: {exc}")
    return node, prefix


@pytest.fixture(scope="module")
def tus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    server = LivefileProcess(tmp_path_factory.mktemp("tus-js") / "data").start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tus-js-source") / "upload.bin"
    path.write_bytes(DATA)
    return path


def run_upload(tus_js: tuple[str, Path], **options: Any) -> dict[str, Any]:
    node, prefix = tus_js
    done = subprocess.run(
        [node, str(SCRIPT), str(prefix), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stored(server: LivefileProcess, upload_url: str) -> tuple[bytes, dict[str, Any]]:
    resource_id = upload_url.rstrip("/").rsplit("/", 1)[-1]
    body = requests.get(f"{server.http_url}/resources/{resource_id}/content").content
    info: dict[str, Any] = requests.get(f"{server.http_url}/resources/{resource_id}").json()
    return body, info


def test_an_interrupted_upload_resumes_by_itself(
    tus_js: tuple[str, Path], tus_server: LivefileProcess, source: Path
) -> None:
    with CuttingProxy(tus_server.port, cut_after=300_000) as proxy:
        result = run_upload(
            tus_js,
            endpoint=proxy.url("/files/"),
            file=str(source),
            retryDelays=[0, 100, 500],
            metadata={"filename": "js.bin", "filetype": "application/x-test"},
        )
        assert proxy.cut.is_set()
    assert result["retries"] >= 1
    body, info = stored(tus_server, result["url"])
    assert body == DATA
    assert info["checksum"] == f"{crc32c.crc32c(DATA):08x}"
    assert info["metadata"]["filename"] == "js.bin"
    assert info["metadata"]["mimeType"] == "application/x-test"


def test_parallel_uploads_are_concatenated_in_order(
    tus_js: tuple[str, Path], tus_server: LivefileProcess, source: Path
) -> None:
    result = run_upload(
        tus_js,
        endpoint=f"{tus_server.http_url}/files/",
        file=str(source),
        parallelUploads=4,
        metadata={"filename": "parallel.bin"},
    )
    body, info = stored(tus_server, result["url"])
    assert body == DATA
    assert info["status"]["transferStatus"] == "COMPLETED"
    assert info["metadata"]["filename"] == "parallel.bin"


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_the_ietf_draft_through_the_protocol_option(
    tus_js: tuple[str, Path], tus_server: LivefileProcess, source: Path, protocol: str
) -> None:
    result = run_upload(
        tus_js,
        endpoint=f"{tus_server.http_url}/files/",
        file=str(source),
        protocol=protocol,
        chunkSize=300_000,
    )
    body, info = stored(tus_server, result["url"])
    assert body == DATA
    assert info["status"]["transferStatus"] == "COMPLETED"
