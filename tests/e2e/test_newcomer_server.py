"""What a newcomer met on the server side (issue 13, item 9), each against a real server: names
that curl saves as they are meant, names that would reorder a download dialog refused, a
followed FAILED resource that curl reports as failed, a closed context named as closed, a
client that stops following not logged as an error, line access refusing bytes that are not
UTF-8, an upload's start and end logged, and counters in ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from livefile.api.errors import PolicyViolationError
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.metrics import Scrape, scrape_async, wait_for_metrics
from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess
from tests.support.wire import META, get_json, open_ws, wait_closed

WAIT = 30.0


def curl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=WAIT, cwd=cwd)


def resource_id(reference: str) -> str:
    return reference.rsplit("/", 1)[-1].split("?")[0]


async def wait_for_status(server: LivefileProcess, rid: str, transfer_status: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        _, info = await asyncio.to_thread(get_json, f"{server.http_url}/resources/{rid}")
        if info["status"]["transferStatus"] == transfer_status:
            return
        assert asyncio.get_running_loop().time() < deadline, info
        await asyncio.sleep(0.05)  # polling: the HTTP route offers no event to await


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


# --- following over HTTP -----------------------------------------------------------------------


async def test_following_an_already_failed_resource_fails_like_a_failure_while_following(
    server: LivefileProcess, tmp_path: Path
) -> None:
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"z" * 5000)
        await raw.drop()
    url = f"{server.http_url}/resources/{raw.resource_id}/content"
    await wait_for_status(server, raw.resource_id, "FAILED")
    # A FAILED resource is a 409 whose body is cut short (docs/protocol.md), follow or not: curl
    # reports the broken transfer instead of keeping anything as the file.
    for query in ("?follow=true", ""):
        answered = curl("-o", str(tmp_path / "answered"), f"{url}{query}")
        assert answered.returncode == 18, answered.stderr  # transfer closed, data outstanding
        assert b"zzz" not in (tmp_path / "answered").read_bytes()  # not the bytes: the JSON
    partial = curl("-o", str(tmp_path / "partial"), f"{url}?partial=true")  # asked for as is
    assert partial.returncode == 0, partial.stderr
    assert (tmp_path / "partial").read_bytes() == b"z" * 5000


async def test_a_failure_while_following_cuts_the_download_without_an_error_in_the_log(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"x" * 1000)
        url = f"{server.http_url}/resources/{raw.resource_id}/content?follow=true"
        follower = subprocess.Popen(
            ["curl", "-sSN", "-o", "/dev/null", url], stderr=subprocess.PIPE
        )
        assert server.wait_for_log("content?follow=true")
        await raw.drop()
        assert follower.wait(WAIT) == 18
    assert server.wait_for_log("dropping an unfinished download")
    assert "ERROR" not in server.log()


async def test_a_client_that_stops_following_ends_its_download_quietly(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"x" * 1000)
        url = f"{server.http_url}/resources/{raw.resource_id}/content?follow=true"
        follower = subprocess.Popen(["curl", "-sSN", "-o", "/dev/null", url])
        assert server.wait_for_log("content?follow=true")
        # The followed response, its pump and its disconnect watcher: three tasks.
        during = await wait_for_metrics(server.http_url, lambda m: True)
        follower.terminate()
        follower.wait(WAIT)
        # The server lets go of the follower now, not when the upload ends.
        await wait_for_metrics(
            server.http_url,
            lambda m: m["livefile_asyncio_tasks"] <= during["livefile_asyncio_tasks"] - 3,
        )
        await raw.write(b"y" * 1000)
        await raw.finish()
    assert "ERROR" not in server.log()


# --- upload contexts ---------------------------------------------------------------------------


async def test_an_upload_into_a_closed_context_is_told_it_is_closed(
    server: LivefileProcess,
) -> None:
    _, opened = get_json(f"{server.http_url}/contexts", method="POST")
    context_id = opened["contextId"]
    assert get_json(f"{server.http_url}/contexts/{context_id}", method="DELETE")[0] == 204
    upload_url = f"{server.ws_url}/ws/streaming/upload?streamingUploadContextId={context_id}"
    start = json.dumps({"@": "StartUpload", "metadata": META})
    async with open_ws(upload_url) as up:
        await up.send(start)
        assert await wait_closed(up) == (1008, f"Upload context {context_id} is closed")
    async with open_ws(f"{upload_url[: -len(context_id)]}{'0' * 32}") as up:
        await up.send(start)
        assert await wait_closed(up) == (1008, f"Unknown upload context {'0' * 32}")
    status, body = get_json(f"{server.http_url}/contexts/{context_id}")
    assert (status, body) == (404, {"detail": "Upload context is closed"})
    status, body = get_json(f"{server.http_url}/contexts/{context_id}", method="DELETE")
    assert (status, body) == (404, {"detail": "Upload context is closed"})


async def test_the_sdk_names_a_closed_context_as_closed(server: LivefileProcess) -> None:
    _, opened = get_json(f"{server.http_url}/contexts", method="POST")
    context_id = opened["contextId"]
    get_json(f"{server.http_url}/contexts/{context_id}", method="DELETE")
    async with AsyncUploadClient(server.ws_url, context_id=context_id, timeout=WAIT) as client:
        with pytest.raises(PolicyViolationError, match=f"Upload context {context_id} is closed"):
            await client.upload_bytes(b"late", filename="late.txt")


# --- text with line access must be UTF-8 ---------------------------------------------------------


def livefile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livefile.impl_common.cli", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def test_latin1_text_with_line_access_but_no_charset_is_refused_and_failed(
    server: LivefileProcess, tmp_path: Path
) -> None:
    text = "rapport été 2026\n".encode("latin-1")
    path = tmp_path / "rapport.txt"
    path.write_bytes(text)
    result = livefile("upload", str(path), "--lines", "--server", server.ws_url, "--quiet")
    assert result.returncode == 1
    bad = text.index(b"\xe9")
    assert result.stderr.endswith(
        f"closed with 1007: Not UTF-8: invalid byte at offset {bad}; line access needs UTF-8"
        " text: give its charset (--charset)\n"
    ), result.stderr
    reference = result.stdout.split()[0]  # printed as soon as the upload started
    _, info = get_json(f"{server.http_url}/resources/{resource_id(reference)}")
    assert info["status"]["transferStatus"] == "FAILED"
    assert info["status"]["error"]["code"] == "invalid_utf8"
    assert info["status"]["currentSize"] == bad  # the valid bytes before it are kept


def test_latin1_text_with_its_charset_is_stored_as_utf8(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "rapport.txt"
    path.write_bytes("rapport été 2026\n".encode("latin-1"))
    result = livefile(
        "upload", str(path), "--lines", "--charset", "latin-1", "--server", server.ws_url
    )
    assert result.returncode == 0, result.stderr
    shown = livefile("lines", result.stdout.split()[0])
    assert (shown.returncode, shown.stdout) == (0, "rapport été 2026\n")


@pytest.mark.parametrize(
    ("pieces", "bad", "kept"),
    [
        ([b"ok\n", b"\xff\n"], 3, 3),  # a byte that never begins a character
        ([b"caf\xc3", b"\xa9 \xc3(\n"], 6, 6),  # é split across messages, then a broken é
        # The upload ends within a character: its bytes were taken before that was known.
        ([b"ends in the middle \xe2\x82"], 19, 21),
    ],
)
async def test_line_access_refuses_the_first_byte_that_is_not_utf8(
    server: LivefileProcess, pieces: list[bytes], bad: int, kept: int
) -> None:
    text = RawUpload(server.ws_url, mime_type="text/plain", supports_line_access=True)
    async with text as raw, open_ws(raw.reference) as watcher:
        for piece in pieces:
            await raw.write(piece)
        with contextlib.suppress(Exception):  # the server may close before FinishUpload
            await raw.finish()
        while True:
            status = json.loads(await asyncio.wait_for(watcher.recv(), WAIT))
            if status["resourceStatus"]["transferStatus"] == "FAILED":
                break
    assert status["resourceStatus"]["error"]["code"] == "invalid_utf8"
    assert f"invalid byte at offset {bad};" in status["resourceStatus"]["error"]["message"]
    assert status["resourceStatus"]["currentSize"] == kept


async def test_binary_uploads_may_hold_any_bytes(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, b"\xff\xfe latin-1 \xe9\n")
    _, info = get_json(f"{server.http_url}/resources/{resource_id(reference)}")
    assert info["status"]["transferStatus"] == "COMPLETED"


# --- an upload's start and end in the log --------------------------------------------------------


async def test_each_upload_logs_one_line_at_its_start_and_one_at_its_end(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    async with RawUpload(
        server.ws_url, filename="build.log", mime_type="text/plain", supports_line_access=True
    ) as done:
        await done.write(b"one\ntwo\n")
        await done.finish()
    async with RawUpload(server.ws_url, filename="crash.bin") as dropped:
        await dropped.write(b"x" * 12)
        await dropped.drop()
    assert server.wait_for_log(f"upload {dropped.resource_id} FAILED")
    log = server.log().splitlines()
    mine = [line for line in log if f"upload {done.resource_id}" in line]
    assert mine[0] == (
        f"INFO:     upload {done.resource_id} started: 'build.log' (text/plain, line access)"
    )
    assert re.fullmatch(
        rf"INFO:     upload {done.resource_id} COMPLETED: 'build.log', 8 bytes, 2 lines"
        r" in \d+\.\d\d s",
        mine[1],
    ), mine
    assert len(mine) == 2
    failed = [line for line in log if f"upload {dropped.resource_id}" in line]
    assert failed[0] == (
        f"INFO:     upload {dropped.resource_id} started: 'crash.bin' (application/octet-stream)"
    )
    assert re.fullmatch(
        rf"WARNING:  upload {dropped.resource_id} FAILED: 'crash.bin', 12 bytes in \d+\.\d\d s"
        r" \(disconnected: the uploader's connection ended\)",
        failed[1],
    ), failed
    assert len(failed) == 2


# --- counters in /metrics ----------------------------------------------------------------------


def increase(before: Scrape, after: Scrape, series: str) -> float:
    return after.samples.get(series, 0.0) - before.samples.get(series, 0.0)


CONTENT = 'route="/resources/{resource_id}/content"'


async def test_metrics_count_bytes_uploads_responses_and_closes_of_real_traffic(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    before = await scrape_async(server.http_url)
    reference = await upload(server.ws_url, b"c" * 1000)  # completed: server closes 1000
    async with RawUpload(server.ws_url) as dropped:
        await dropped.write(b"x" * 12)
        await dropped.drop()  # failed: the client went away without a close frame
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await download.read(0, 600) == b"c" * 600  # the client closes with 1000
    url = f"{server.http_url}/resources/{resource_id(reference)}"
    for _ in range(2):  # the second from the protocol's immediate answers, the first not
        assert curl("-o", "/dev/null", f"{url}/content").returncode == 0
    assert curl("-o", "/dev/null", "-r", "0-99", f"{url}/content").returncode == 0
    assert get_json(f"{server.http_url}/resources/{'0' * 32}/lines")[0] == 404
    assert get_json(f"{server.http_url}/no/such/route")[0] == 404
    await wait_for_status(server, dropped.resource_id, "FAILED")
    after = await wait_for_metrics(
        server.http_url,
        lambda m: m.samples.get('livefile_uploads_total{outcome="failed"}', 0) >= 1,
    )
    assert increase(before, after, "livefile_received_bytes_total") == 1012
    assert increase(before, after, 'livefile_uploads_total{outcome="completed"}') == 1
    assert increase(before, after, 'livefile_uploads_total{outcome="failed"}') == 1
    assert increase(before, after, 'livefile_sent_bytes_total{via="websocket"}') == 600
    # Two whole files and a range: resource bytes only, not JSON answers or /metrics itself.
    assert increase(before, after, 'livefile_sent_bytes_total{via="http"}') == 2100
    responses = "livefile_http_responses_total"
    assert increase(before, after, f'{responses}{{method="GET",{CONTENT},status="200"}}') == 2
    assert increase(before, after, f'{responses}{{method="GET",{CONTENT},status="206"}}') == 1
    lines_404 = f'{responses}{{method="GET",route="/resources/{{resource_id}}/lines",status="404"}}'
    assert increase(before, after, lines_404) == 1
    unmatched = f'{responses}{{method="GET",route="unmatched",status="404"}}'
    assert increase(before, after, unmatched) == 1
    closes = "livefile_websocket_closes_total"
    assert increase(before, after, f'{closes}{{kind="upload",code="1000",by="server"}}') == 1
    # A dropped connection: uvicorn reports no status (1005), others an abnormal end (1006).
    dropped_closes = [
        increase(before, after, f'{closes}{{kind="upload",code="{code}",by="client"}}')
        for code in (1005, 1006)
    ]
    assert sum(dropped_closes) == 1
    assert increase(before, after, f'{closes}{{kind="download",code="1000",by="client"}}') == 1
    for reason in ("head_timeout", "pending_cap", "per_client_cap"):
        assert after[f'livefile_connections_closed_total{{reason="{reason}"}}'] == 0


async def test_metrics_count_connections_closed_for_a_late_request_head(
    start_server: ServerFactory,
) -> None:
    server = start_server("--request-head-timeout", "0.5")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest of the head
    assert await asyncio.wait_for(reader.read(), WAIT)  # 408, then closed
    writer.close()
    after = await scrape_async(server.http_url)
    assert after['livefile_connections_closed_total{reason="head_timeout"}'] == 1
