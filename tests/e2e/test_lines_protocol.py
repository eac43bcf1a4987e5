"""Line access over the download WebSocket: the semantics table, while growing and at the end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, open_ws, receive_json, start_upload

TEXT = {"filename": "t.log", "mimeType": "text/plain", "supportsLineAccess": True}


async def request_lines(ws: ClientConnection, start: int, count: int) -> dict[str, Any]:
    await ws.send(
        json.dumps({"@": "RequestLines", "startingLineIndex": start, "linesCount": count})
    )
    while True:
        message = await receive_json(ws)
        if message["@"] != "StatusChanged":
            return message


async def status_with(ws: ClientConnection, size: int) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(receive_json(ws), 10)
        status: dict[str, Any] = message["resourceStatus"]
        if status["currentSize"] == size:
            return status


async def upload_text(server: LivefileProcess, pieces: list[bytes]) -> tuple[str, dict[str, Any]]:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up, TEXT)
        for piece in pieces:
            await up.send(piece)
        ack = await finish_upload(up, b"".join(pieces))
    return resource_id, ack


@pytest.mark.parametrize(
    ("pieces", "lines"),
    [
        ([], []),
        ([b"\n"], ["\n"]),
        ([b"one"], ["one"]),
        ([b"one\n"], ["one\n"]),
        ([b"a\nb\nc"], ["a\n", "b\n", "c"]),
        ([b"a\nb\nc\n"], ["a\n", "b\n", "c\n"]),
        ([b"dos\r\nline\r\n"], ["dos\r\n", "line\r\n"]),
        ([b"spl", b"it\nacross\n"], ["split\n", "across\n"]),
        ([b"\xc3", b"\xa4\n"], ["\u00e4\n"]),
    ],
)
async def test_completed_resource_lines(
    server: LivefileProcess, pieces: list[bytes], lines: list[str]
) -> None:
    resource_id, ack = await upload_text(server, pieces)
    assert ack["numberOfLines"] == len(lines)
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        status = (await receive_json(ws))["resourceStatus"]
        assert status["numberOfLines"] == len(lines)
        reply = await request_lines(ws, 0, len(lines))
        assert reply["lines"] == lines


async def test_growing_resource_counts_and_returns_only_complete_lines(
    server: LivefileProcess,
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up, TEXT)
        async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
            assert (await receive_json(ws))["resourceStatus"]["numberOfLines"] == 0
            await up.send(b"first\nsec")
            status = await status_with(ws, 9)
            assert status["numberOfLines"] == 1
            assert (await request_lines(ws, 0, 1))["lines"] == ["first\n"]
            empty = await request_lines(ws, 1, 1)  # "sec" is not a line yet
            assert (empty["@"], empty["lines"], empty["nextLineIndex"]) == ("Lines", [], 1)
            assert (empty["more"], empty["growing"]) == (False, True)
            error = await request_lines(ws, 2, 1)
            assert (error["@"], error["code"]) == ("Error", "BAD_RANGE")
            assert "[0, 1]" in error["message"]
            await up.send(b"ond\nthi")  # the line is completed by a later message
            status = await status_with(ws, 16)
            assert status["numberOfLines"] == 2
            assert (await request_lines(ws, 1, 1))["lines"] == ["second\n"]
            await finish_upload(up, b"first\nsecond\nthi")
            final = await status_with(ws, 16)
            while final["transferStatus"] != "COMPLETED":
                final = await status_with(ws, 16)
            assert final["numberOfLines"] == 3
            assert (await request_lines(ws, 0, 3))["lines"] == ["first\n", "second\n", "thi"]


@pytest.mark.parametrize(("start", "count"), [(-1, 1), (0, -1), (4, 1), (5, 0), (4, 2**63)])
async def test_out_of_range_lines_get_error_naming_bounds(
    server: LivefileProcess, start: int, count: int
) -> None:
    resource_id, _ = await upload_text(server, [b"a\nb\nc\n"])
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        await receive_json(ws)
        error = await request_lines(ws, start, count)
        assert error["code"] == "BAD_RANGE"
        assert "[0, 3]" in error["message"]
        assert (await request_lines(ws, 2, 1))["lines"] == ["c\n"]


async def test_lines_of_a_resource_without_line_access_are_unsupported(
    server: LivefileProcess,
) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as up:
        resource_id = await start_upload(up)
        await finish_upload(up, b"")
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        assert (await receive_json(ws))["resourceStatus"]["numberOfLines"] is None
        assert (await request_lines(ws, 0, 0))["code"] == "UNSUPPORTED"


async def test_large_request_is_answered_with_fewer_lines_within_the_bound(
    server: LivefileProcess,
) -> None:
    line = b"y" * 999 + b"\n"
    text = line * 3000  # ~3 MB of text, sent in messages of 1,000 lines
    resource_id, _ = await upload_text(
        server, [text[i : i + 1_000_000] for i in range(0, len(text), 1_000_000)]
    )
    async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        await receive_json(ws)
        reply = await request_lines(ws, 0, 3000)
        assert 0 < len(reply["lines"]) < 3000
        assert sum(len(text) for text in reply["lines"]) <= 1024 * 1024
        assert set(reply["lines"]) == {line.decode()}
