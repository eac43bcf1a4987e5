"""A reference's own token wins: a general token (``LIVEFILE_TOKEN``, ``--token``, ``token=``),
typically upload-scoped on a CI agent, never hides the download token the reference carries."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import jwt
import pytest

from livefile.api.errors import AuthorizationError
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.support.server import LivefileProcess

SECRET = "livefile-test-secret-of-32-bytes!"
TEXT = b"".join(f"line {n}\n".encode() for n in range(5))


def mint(**claims: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"aud": "livefile", "iat": now, "exp": now + 3600, **claims}, SECRET, algorithm="HS256"
    )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    server = LivefileProcess(
        tmp_path_factory.mktemp("guarded") / "data", env={"LIVEFILE_JWT_SECRET": SECRET}
    ).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def reference(guarded: LivefileProcess) -> str:
    """A COMPLETED text resource uploaded with an upload token: its reference has ?token=."""

    async def put() -> str:
        client = AsyncUploadClient(guarded.ws_url, token=mint(scope="upload"))
        result = await client.upload_bytes(
            TEXT, filename="t.log", mime_type="text/plain", supports_line_access=True
        )
        return result.reference

    value = asyncio.run(put())
    assert "?token=" in value
    return value


def livefile(*args: str, token: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "livefile.impl_common.cli", *args],
        capture_output=True, timeout=60, env={**os.environ, "LIVEFILE_TOKEN": token},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["status"], b'{"transferStatus": "COMPLETED", "currentSize": 35, "numberOfLines": 5}\n'),
        (["get"], TEXT),
        (["tail", "-n", "2"], b"line 3\nline 4\n"),
        (["lines", "--start", "1", "--count", "2"], b"line 1\nline 2\n"),
    ],
    ids=["status", "get", "tail", "lines"],
)
def test_the_cli_reads_a_reference_with_its_own_token_despite_livefile_token(
    reference: str, command: list[str], expected: bytes
) -> None:
    result = livefile(command[0], reference, *command[1:], token=mint(scope="upload"))
    # ``lines`` says on stderr where the next page starts, when lines follow.
    note = b"livefile: next page: --start 3 (5 lines so far; more follow)\n"
    assert (result.returncode, result.stderr) == (0, note if command[0] == "lines" else b"")
    if command[0] == "status":  # its revision counts the statuses: only the rest is fixed
        status = json.loads(result.stdout)
        status.pop("revision")
        assert json.dumps(status).encode() + b"\n" == expected
    else:
        assert result.stdout == expected


def test_the_reference_token_also_wins_over_token_on_the_command_line(reference: str) -> None:
    result = livefile("status", reference, "--token", mint(scope="upload"), token="")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["transferStatus"] == "COMPLETED"


async def test_the_sdk_uses_the_reference_token_and_the_explicit_one_only_without_it(
    guarded: LivefileProcess, reference: str
) -> None:
    upload_token = mint(scope="upload")
    async with AsyncDownloadClient(reference, token=upload_token) as download:
        assert await download.read(0, 6) == b"line 0"
        assert download.token == reference.split("?token=")[1]
    plain = reference.split("?")[0]
    resource_id = plain.rsplit("/", 1)[1]
    async with AsyncDownloadClient(
        plain, token=mint(scope="download", resource=resource_id)
    ) as download:
        assert await download.read(0, 6) == b"line 0"
    with pytest.raises(AuthorizationError, match="scope does not include download"):
        async with AsyncDownloadClient(plain, token=upload_token):
            pass
