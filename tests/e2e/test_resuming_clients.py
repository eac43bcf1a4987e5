"""Real HTTP clients from Debian's packages — curl, wget, aria2c, resuming or not — against
growing, COMPLETED and FAILED resources, with and without ``?follow=true``: none of them may end
with a wrong or truncated file and a success exit code (issue 14, items 5 and 6).

Each case runs the client as a user would, into a directory that is empty ("fresh") or holds the
first bytes of the resource under the output name ("resumed"). A growing resource has its first
bytes published when the client starts and gets the rest in pieces while the client runs; a
"failed" one is aborted by its uploader while the client runs, a "failed-before" one before the
client starts. Exit status 0 must mean the file is exactly the resource's bytes (or the range
asked for) of a COMPLETED resource; growing resources that complete must be downloaded whole by
every client, FAILED ones must fail every client.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, next_status, open_ws, start_upload, upload

TOOLS = ("curl", "wget", "aria2c")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
# CI installs them (.ci/run); there a missing one fails these tests instead of skipping them.
pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"), reason=f"not installed: {', '.join(MISSING)}"
)
WAIT = 30.0
SIZE = 1_500_000
PUBLISHED_AT_START = 800_000  # what a growing resource has published when the client starts
RESUMED_FROM = 500_000  # what a "resumed" client already has
PIECES = 10  # the rest of a growing resource, one piece every PACE seconds
PACE = 0.04
RANGE = (100_000, 1_199_999)  # curl -r: inclusive, ending beyond PUBLISHED_AT_START
OUT = "out.bin"


@dataclass(frozen=True)
class Client:
    name: str
    args: tuple[str, ...]  # the URL is appended
    resumes: bool = False
    range: tuple[int, int] | None = None

    def command(self, url: str) -> list[str]:
        return [*self.args, url]


CLIENTS = [
    Client("curl", ("curl", "-sS", "-o", OUT)),
    Client("curl-C", ("curl", "-sS", "-C", "-", "-o", OUT), resumes=True),
    Client("curl-r", ("curl", "-sS", "-r", f"{RANGE[0]}-{RANGE[1]}", "-o", OUT), range=RANGE),
    Client("wget", ("wget", "-nv", "-O", OUT)),
    Client("wget-c", ("wget", "-nv", "-c", "-O", OUT), resumes=True),
    Client("aria2c-c", ("aria2c", "--summary-interval=0", "-c", "-o", OUT), resumes=True),
    Client("aria2c-x8", ("aria2c", "--summary-interval=0", "-c", "-x", "8", "-o", OUT)),
]


def downloaded_file(client: Client, workdir: Path, output: str) -> Path:
    """The file the client wrote: aria2c, asked to continue a file it cannot resume (the
    length of a growing resource is unknown), keeps it and downloads under a new name, which it
    reports."""
    if client.name.startswith("aria2c"):
        completed = re.findall(r"Download complete: (.+)", output)
        assert completed, output
        return Path(completed[-1].strip())
    return workdir / OUT


async def run_client(client: Client, url: str, workdir: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *client.command(url),
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), WAIT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def published(watcher: ClientConnection, size: int) -> None:
    while (await next_status(watcher))["currentSize"] < size:
        pass


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
@pytest.mark.parametrize("follow", [False, True], ids=["plain", "follow"])
@pytest.mark.parametrize("state", ["growing", "completed", "failed", "failed-before"])
@pytest.mark.parametrize("client", CLIENTS, ids=[client.name for client in CLIENTS])
async def test_no_client_keeps_a_wrong_or_truncated_file_as_complete(
    server: LivefileProcess,
    tmp_path: Path,
    client: Client,
    state: str,
    follow: bool,
    resumed: bool,
) -> None:
    data = os.urandom(SIZE)
    workdir = tmp_path / "client"
    workdir.mkdir()
    if resumed:
        (workdir / OUT).write_bytes(data[:RESUMED_FROM])
    query = "?follow=true" if follow else ""

    if state == "completed":
        resource_id = await upload(server.ws_url, data)
        code, output = await run_client(
            client, f"{server.http_url}/resources/{resource_id}/content{query}", workdir
        )
    elif state == "failed-before":
        async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
            resource_id = await start_upload(up)
            async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as watcher:
                await up.send(data[:PUBLISHED_AT_START])
                await published(watcher, PUBLISHED_AT_START)
                up.transport.abort()
                while (await next_status(watcher))["transferStatus"] != "FAILED":
                    pass
        code, output = await run_client(
            client, f"{server.http_url}/resources/{resource_id}/content{query}", workdir
        )
    else:
        async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
            resource_id = await start_upload(up)
            url = f"{server.http_url}/resources/{resource_id}/content{query}"
            async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as watcher:
                await up.send(data[:PUBLISHED_AT_START])
                await published(watcher, PUBLISHED_AT_START)
            downloading = asyncio.create_task(run_client(client, url, workdir))
            piece = (SIZE - PUBLISHED_AT_START) // PIECES + 1
            for number, offset in enumerate(range(PUBLISHED_AT_START, SIZE, piece)):
                await asyncio.sleep(PACE)
                if state == "failed" and number == PIECES // 2:
                    up.transport.abort()
                    break
                await up.send(data[offset : offset + piece])
            else:
                await finish_upload(up, data)
            code, output = await downloading

    context = f"{client.name} exited {code}:\n{output}"
    if state.startswith("failed"):
        assert code != 0, context
        return
    assert code == 0, context
    expected = data[client.range[0] : client.range[1] + 1] if client.range else data
    got = downloaded_file(client, workdir, output).read_bytes()
    assert len(got) == len(expected), context
    assert got == expected, context
