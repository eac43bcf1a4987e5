"""What a newcomer met on the server side (issue 13, item 9), each against a real server: names
that curl saves as they are meant, names that would reorder a download dialog refused, a
followed FAILED resource that curl reports as failed, a closed context named as closed, a
client that stops following not logged as an error, line access refusing bytes that are not
UTF-8, an upload's start and end logged, and counters in ``/metrics``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.raw_upload import upload
from tests.support.server import LivefileProcess
from tests.support.wire import open_ws, wait_closed

WAIT = 30.0


def curl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=WAIT, cwd=cwd)


def resource_id(reference: str) -> str:
    return reference.rsplit("/", 1)[-1].split("?")[0]


# --- names -------------------------------------------------------------------------------------


async def test_curl_remote_header_name_saves_accented_names_without_their_accents(
    server: LivefileProcess, tmp_path: Path
) -> None:
    # curl -J reads only filename=, never filename* (its manual says so): the ASCII fallback
    # is what it saves.
    reference = await upload(server.ws_url, b"rapport\n", filename="rapport été 2026.txt")
    url = f"{server.http_url}/resources/{resource_id(reference)}/content"
    result = curl("-O", "-J", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["rapport ete 2026.txt"]


@pytest.mark.parametrize("control", ["\u202e", "\u2067", "\u200f"])
async def test_filenames_with_bidirectional_controls_are_refused_at_upload(
    server: LivefileProcess, control: str
) -> None:
    metadata = {"filename": f"invoice{control}txt.exe", "mimeType": "text/plain"}
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        await up.send(json.dumps({"@": "StartUpload", "metadata": metadata}))
        code, reason = await wait_closed(up)
    assert code == 1002
    assert reason is not None
    assert "bidirectional control characters" in reason
