"""Paging through lines: a page ends at the last published line instead of being refused, and
every page says where the next one starts and whether more lines may come — over the
WebSocket, over HTTP, in the SDK and in ``livefile lines``, against a real server."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from typing import Any

from livefile.client_download import AsyncDownloadClient, DownloadClient
from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess
from tests.support.wire import get_json, open_ws, receive_json

LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]
WAIT = 30.0
THIRTY = [f"line {n}\n" for n in range(30)]
TEXT: dict[str, Any] = {"mime_type": "text/plain", "supports_line_access": True}
# ~2.4 MB: far more than one reply's ~1 MiB bound, in lines of varied lengths.
MANY = [f"{n:06d} {'x' * (n % 97)}\n" for n in range(50_000)]


def resource_id(reference: str) -> str:
    return reference.rsplit("/", 1)[-1].split("?")[0]


async def request_lines(ws: Any, start: int, count: int) -> dict[str, Any]:
    await ws.send(
        json.dumps({"@": "RequestLines", "startingLineIndex": start, "linesCount": count})
    )
    while True:
        message = await asyncio.wait_for(receive_json(ws), WAIT)
        if message["@"] != "StatusChanged":
            return message


def http_lines(server: LivefileProcess, rid: str, query: str) -> tuple[dict[str, Any], Any]:
    url = f"{server.http_url}/resources/{rid}/lines?{query}"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())


async def run_cli(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *LIVEFILE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


# --- a resource shorter than the page asked for -------------------------------------------------


async def test_websocket_page_of_100_on_30_lines_ends_at_the_last_line(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    async with open_ws(reference) as ws:
        await receive_json(ws)
        reply = await request_lines(ws, 0, 100)
    assert reply["lines"] == THIRTY
    assert reply["startingLineIndex"] == 0
    assert reply["nextLineIndex"] == 30
    assert reply["numberOfLines"] == 30
    assert (reply["more"], reply["growing"]) == (False, False)


async def test_websocket_start_beyond_the_last_line_is_still_a_bad_range(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    async with open_ws(reference) as ws:
        await receive_json(ws)
        at_end = await request_lines(ws, 30, 100)
        beyond = await request_lines(ws, 31, 100)
    assert (at_end["lines"], at_end["nextLineIndex"], at_end["more"]) == ([], 30, False)
    assert (beyond["@"], beyond["code"]) == ("Error", "BAD_RANGE")
    assert "numbered from 0" in beyond["message"]


async def test_http_default_count_on_30_lines_is_one_whole_page(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    headers, body = http_lines(server, resource_id(reference), "start=0")
    assert body["lines"] == THIRTY
    assert (body["start"], body["nextStart"], body["more"], body["growing"]) == (
        0,
        30,
        False,
        False,
    )
    assert headers["x-livefile-next-line"] == "30"
    assert "link" not in headers  # nothing follows, nothing will


async def test_http_start_beyond_the_last_line_is_400_naming_the_numbering(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    status, body = get_json(f"{server.http_url}/resources/{resource_id(reference)}/lines?start=31")
    assert status == 400
    assert body["detail"].endswith("start must be at most 30 (lines are numbered from 0)")


async def test_cli_lines_with_its_default_count_prints_all_30_lines(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    code, stdout, stderr = await run_cli("lines", reference)
    assert (code, stdout.decode(), stderr) == (0, "".join(THIRTY), b"")


async def test_cli_lines_says_on_stderr_where_the_next_page_starts(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    code, stdout, stderr = await run_cli("lines", reference, "--start", "5", "--count", "10")
    assert (code, stdout.decode()) == (0, "".join(THIRTY[5:15]))
    assert stderr.decode() == "livefile: next page: --start 15 (30 lines so far; more follow)\n"


async def test_sdk_lines_returns_what_there_is(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, "".join(THIRTY).encode(), **TEXT)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await download.lines(0, 100) == THIRTY
        assert await download.lines(28, 100) == THIRTY[28:]
        page = await download.lines_page(20, 100)
    assert (page.start, page.lines, page.next_start) == (20, THIRTY[20:], 30)
    assert (page.more, page.growing, page.complete) == (False, False, True)


def test_sync_sdk_lines_page_says_the_same(server: LivefileProcess) -> None:
    reference = asyncio.run(upload(server.ws_url, "".join(THIRTY).encode(), **TEXT))
    with DownloadClient(reference, timeout=WAIT) as download:
        assert download.lines(25, 100) == THIRTY[25:]
        page = download.lines_page(10, 5)
    assert (page.start, page.lines, page.next_start) == (10, THIRTY[10:15], 15)
    assert (page.more, page.growing) == (True, False)


# --- a page cut by the reply's byte bound ------------------------------------------------------


async def test_http_huge_page_is_cut_and_says_where_to_continue_until_every_line_came(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(MANY).encode(), **TEXT)
    rid = resource_id(reference)
    received: list[str] = []
    start, pages = 0, 0
    while True:
        headers, body = http_lines(server, rid, f"start={start}&count=200000")
        pages += 1
        assert body["start"] == start
        assert body["nextStart"] == start + len(body["lines"])
        assert headers["x-livefile-next-line"] == str(body["nextStart"])
        received.extend(body["lines"])
        if not body["more"]:
            assert "link" not in headers
            break
        assert len(body["lines"]) < len(MANY)  # cut by the bound, and it says so
        assert headers["link"] == (
            f'</resources/{rid}/lines?start={body["nextStart"]}&count=200000>; rel="next"'
        )
        start = body["nextStart"]
    assert pages >= 3
    assert received == MANY  # every line exactly once, in order


async def test_websocket_huge_page_is_cut_and_continuing_yields_every_line_once(
    server: LivefileProcess,
) -> None:
    reference = await upload(server.ws_url, "".join(MANY).encode(), **TEXT)
    received: list[str] = []
    async with open_ws(reference) as ws:
        await receive_json(ws)
        start = 0
        while True:
            reply = await request_lines(ws, start, 200_000)
            assert reply["startingLineIndex"] == start
            received.extend(reply["lines"])
            assert reply["nextLineIndex"] == start + len(reply["lines"])
            if not reply["more"]:
                break
            start = reply["nextLineIndex"]
    assert received == MANY


async def test_sdk_pages_and_lines_yield_every_line_once(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, "".join(MANY).encode(), **TEXT)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await download.lines(0, 200_000) == MANY
        paged: list[str] = []
        page = await download.lines_page(0, 200_000)
        paged.extend(page.lines)
        while page.more:
            page = await download.lines_page(page.next_start, 200_000)
            paged.extend(page.lines)
    assert paged == MANY


async def test_cli_huge_count_prints_every_line_once(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, "".join(MANY).encode(), **TEXT)
    code, stdout, stderr = await run_cli("lines", reference, "--count", "200000")
    assert (code, stderr) == (0, b"")
    assert stdout.decode() == "".join(MANY)


# --- a growing resource ------------------------------------------------------------------------


async def test_last_page_of_a_growing_resource_says_more_may_come(
    server: LivefileProcess,
) -> None:
    async with RawUpload(server.ws_url, filename="run.log", **TEXT) as raw:
        await raw.write(b"one\ntwo\nthr")
        async with AsyncDownloadClient(raw.reference, timeout=WAIT) as download:
            await download.wait_for_status(lambda status: status.number_of_lines == 2)
            page = await download.lines_page(0, 100)
            assert (page.lines, page.next_start) == (["one\n", "two\n"], 2)
            assert (page.more, page.growing, page.complete) == (False, True, False)
            _, body = http_lines(server, raw.resource_id, "start=0&count=100")
            assert (body["nextStart"], body["more"], body["growing"]) == (2, False, True)
            code, stdout, stderr = await run_cli("lines", raw.reference)
            assert (code, stdout) == (0, b"one\ntwo\n")
            assert stderr.decode() == (
                "livefile: next page: --start 2 (2 lines so far;"
                " more may come: the resource is still growing)\n"
            )
            await raw.write(b"ee\n")
            await raw.finish()
            await download.wait_for_end(WAIT)
            last = await download.lines_page(page.next_start, 100)
    assert (last.lines, last.next_start, last.more, last.growing) == (["three\n"], 3, False, False)
