"""Bad input over real sockets: each gets its documented answer, and the server goes on serving."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import (
    META,
    download,
    get_json,
    open_ws,
    plain_status,
    read_chunk,
    receive_json,
    start_upload,
    upload,
    wait_closed,
)


@pytest.fixture
async def healthy(server: LivefileProcess) -> AsyncIterator[LivefileProcess]:
    """After the test, an ordinary upload and download through the same server still work."""
    yield server
    data = os.urandom(300_000)
    resource_id = await upload(server.ws_url, data)
    assert await download(server.ws_url, resource_id) == data


async def test_checksum_mismatch_closes_1011_naming_both_and_fails(
    healthy: LivefileProcess,
) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws)
        await ws.send(b"abc")
        await ws.send(json.dumps({"@": "FinishUpload", "checksum": "0" * 32}))
        code, reason = await wait_closed(ws)
    assert code == 1011
    assert (
        reason == f"Checksum mismatch: client={'0' * 32} server={hashlib.md5(b'abc').hexdigest()}"
    )
    _, info = get_json(f"{healthy.http_url}/resources/{resource_id}")
    assert plain_status(info["status"]) == {
        "transferStatus": "FAILED",
        "currentSize": 3,
        "numberOfLines": None,
    }


async def test_malformed_json_on_upload_closes_1002(healthy: LivefileProcess) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        await ws.send("{not json")
        code, reason = await wait_closed(ws)
    assert code == 1002
    assert reason is not None
    assert reason.startswith("Malformed JSON")


async def test_unknown_message_type_on_upload_closes_1002(healthy: LivefileProcess) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        await ws.send('{"@": "Launch"}')
        assert await wait_closed(ws) == (1002, "Unknown message type 'Launch'")


async def test_binary_data_before_start_upload_closes_1002(healthy: LivefileProcess) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        await ws.send(b"data")
        assert await wait_closed(ws) == (
            1002,
            "Unexpected binary data while awaiting StartUpload",
        )


async def test_finish_upload_first_closes_1002(healthy: LivefileProcess) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        await ws.send('{"@": "FinishUpload", "checksum": "x"}')
        assert await wait_closed(ws) == (
            1002,
            "Unexpected FinishUpload while awaiting StartUpload",
        )


async def test_invalid_metadata_closes_1002_with_the_field(healthy: LivefileProcess) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        await ws.send(
            json.dumps(
                {
                    "@": "StartUpload",
                    "metadata": {"filename": "../etc/passwd", "mimeType": "text/plain"},
                }
            )
        )
        code, reason = await wait_closed(ws)
    assert code == 1002
    assert reason is not None
    assert "filename must not contain path separators" in reason


@pytest.mark.parametrize("resource_id", ["0123456789abcdef0123456789abcdef", "..", "x" * 300])
async def test_unknown_resource_gets_error_and_close_1008(
    healthy: LivefileProcess, resource_id: str
) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/download/{resource_id}") as ws:
        error = await receive_json(ws)
        code, reason = await wait_closed(ws)
    assert error["@"] == "Error"
    assert error["code"] == "NOT_FOUND"
    assert (code, reason) == (1008, "Unknown resource id")


@pytest.mark.parametrize(
    ("start", "end"), [(-1, 5), (5, 2), (0, 11), (0, 2**63), (2**63, 2**63 + 1)]
)
async def test_invalid_range_gets_error_naming_bounds_and_connection_stays_usable(
    healthy: LivefileProcess, start: int, end: int
) -> None:
    resource_id = await upload(healthy.ws_url, b"0123456789")
    async with open_ws(f"{healthy.ws_url}/ws/streaming/download/{resource_id}") as ws:
        await receive_json(ws)  # current status
        await ws.send(json.dumps({"@": "RequestChunk", "startOffset": start, "endOffset": end}))
        error = await receive_json(ws)
        assert error["@"] == "Error"
        assert error["code"] == "BAD_RANGE"
        assert "[0, 10]" in error["message"]
        assert await read_chunk(ws, 2, 6) == b"2345"


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [
        ("{oops", "Malformed JSON"),
        ('{"@": "Launch"}', "Unknown message type"),
        ('{"@": "RequestChunk", "startOffset": 0.5, "endOffset": 1}', "startOffset"),
        ('"just a string"', "must be a JSON object"),
    ],
)
async def test_bad_download_request_gets_error_and_connection_stays_usable(
    healthy: LivefileProcess, request_text: str, reason: str
) -> None:
    resource_id = await upload(healthy.ws_url, b"abcdef")
    async with open_ws(f"{healthy.ws_url}/ws/streaming/download/{resource_id}") as ws:
        await receive_json(ws)
        await ws.send(request_text)
        error = await receive_json(ws)
        assert error["code"] == "BAD_REQUEST"
        assert reason in error["message"]
        assert await read_chunk(ws, 0, 6) == b"abcdef"


async def test_empty_range_is_one_empty_binary_message(healthy: LivefileProcess) -> None:
    resource_id = await upload(healthy.ws_url, b"abc")
    async with open_ws(f"{healthy.ws_url}/ws/streaming/download/{resource_id}") as ws:
        await receive_json(ws)
        await ws.send(json.dumps({"@": "RequestChunk", "startOffset": 3, "endOffset": 3}))
        assert await ws.recv() == b""


async def test_unknown_resource_over_http_is_404_json(healthy: LivefileProcess) -> None:
    status, body = get_json(f"{healthy.http_url}/resources/0123456789abcdef0123456789abcdef")
    assert (status, body) == (404, {"detail": "Unknown resource id"})


async def test_missing_context_when_required_closes_1008(start_server: ServerFactory) -> None:
    server = start_server("--require-upload-context")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        assert await wait_closed(ws) == (1008, "Missing parameter streamingUploadContextId")


async def test_unknown_context_closes_1008_at_start_upload(healthy: LivefileProcess) -> None:
    # Refused at StartUpload, not at connect: a ResumeUpload needs no open context.
    uri = f"{healthy.ws_url}/ws/streaming/upload?streamingUploadContextId=nope"
    async with open_ws(uri) as ws:
        await ws.send(json.dumps({"@": "StartUpload", "metadata": META}))
        assert await wait_closed(ws) == (1008, "Unknown upload context nope")


async def test_size_quota_stops_the_upload_as_soon_as_it_is_exceeded(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-resource-size", "100000")
    sent = 0
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws)
        closed = asyncio.ensure_future(wait_closed(ws))
        piece = os.urandom(10_000)
        with contextlib.suppress(ConnectionClosed):
            while not closed.done() and sent < 50_000_000:
                await ws.send(piece)
                sent += len(piece)
                await asyncio.sleep(0)  # let the reader notice the close frame
        code, reason = await closed
    assert code == 1008
    assert reason == "QuotaExceededException: Size 110000 exceeds the maximum resource size 100000"
    assert sent < 5_000_000, "the client could go on sending long after the quota was exceeded"
    _, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert plain_status(info["status"]) == {
        "transferStatus": "FAILED",
        "currentSize": 100000,
        "numberOfLines": None,
    }


async def test_count_quota_refuses_the_extra_resource_of_a_context(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-resources-per-context", "1")
    _, context = get_json(f"{server.http_url}/contexts", method="POST")
    uri = f"{server.ws_url}/ws/streaming/upload?streamingUploadContextId={context['contextId']}"
    async with open_ws(uri) as ws:
        await start_upload(ws)
    async with open_ws(uri) as ws:
        await ws.send(
            json.dumps({"@": "StartUpload", "metadata": {"filename": "b", "mimeType": "a/b"}})
        )
        code, reason = await wait_closed(ws)
    assert code == 1008
    assert reason == (
        f"QuotaExceededException: Upload context {context['contextId']} already holds 1 resources"
    )


async def test_oversized_binary_message_closes_1009_and_fails_the_resource(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-message-size", "4096")
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws)
        await ws.send(b"k" * 4096)
        await ws.send(b"k" * 4097)
        assert await wait_closed(ws) == (1009, "Binary message of 4097 bytes exceeds 4096")
    _, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert info["status"]["transferStatus"] == "FAILED"
    assert info["status"]["currentSize"] == 4096


async def test_oversized_text_message_is_measured_in_bytes(healthy: LivefileProcess) -> None:
    async with open_ws(f"{healthy.ws_url}/ws/streaming/upload") as ws:
        await ws.send("\N{EURO SIGN}" * 30_000)  # 30,000 characters, 90,000 bytes
        assert await wait_closed(ws) == (1009, "Text message of 90000 bytes exceeds 65536")
