"""step-streaming's own clients against a default ``livefile serve``: a client that names no
WebSocket subprotocol gets step-streaming's wire format exactly (docs/protocol.md, "Two
dialects"). The client here is ``tests/support/step_streaming_client.py``, as strict as the
Java one: any field, message type or message it would reject fails the test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from websockets.asyncio.client import connect

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from livefile.impl_websocket.app import create_app
from livefile.impl_websocket.settings import Settings
from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess, free_port
from tests.support.step_streaming_client import (
    DownloadClosedError,
    QuotaExceededError,
    StrictDownload,
    StrictUpload,
    UploadFailedError,
    parse_strictly,
    upload_bytes,
)
from tests.support.wire import LIVEFILE, get_json, wait_closed

WAIT = 60.0
MiB = 1024 * 1024


def resource_id_of(reference: str) -> str:
    return reference.rsplit("/", 1)[1].split("?")[0]


def status_over_http(server: LivefileProcess, reference: str) -> dict[str, object]:
    code, body = get_json(f"{server.http_url}/resources/{resource_id_of(reference)}")
    assert code == 200, body
    status: dict[str, object] = body["status"]
    return {key: status[key] for key in ("transferStatus", "currentSize", "numberOfLines")}


def text_of(lines: int) -> bytes:
    return "".join(f"Zeile {i}: Grüße aus Köln, {'x' * (i % 50)}\n" for i in range(lines)).encode()


async def test_a_text_upload_with_line_access(server: LivefileProcess) -> None:
    text = text_of(296) + b"last line without a break"
    reference, ack = await upload_bytes(
        server.ws_url, text, "faust.txt", "text/plain", supports_line_access=True
    )
    assert (ack.size, ack.number_of_lines) == (len(text), 297)
    assert ack.checksum == hashlib.md5(text).hexdigest()
    async with StrictDownload(reference) as download:
        assert download.status == {
            "transferStatus": "COMPLETED",
            "currentSize": len(text),
            "numberOfLines": 297,
        }
        first = await download.lines(0, 3)
        assert first == [line + "\n" for line in text.decode().split("\n")[:3]]
        rest = await download.lines(3, 294)
        assert "".join(first + rest).encode() == text
        whole = bytearray()
        assert (await download.input_stream(whole.extend))["transferStatus"] == "COMPLETED"
        assert whole == text


async def test_the_wire_is_step_streamings_exactly(server: LivefileProcess) -> None:
    """The exact messages, as step-streaming's Java server writes them (spec §3.3)."""
    async with connect(f"{server.ws_url}/ws/streaming/upload", compression=None) as ws:
        assert ws.subprotocol is None
        metadata = {"filename": "a.txt", "mimeType": "text/plain", "supportsLineAccess": True}
        await ws.send(json.dumps({"@": "StartUpload", "metadata": metadata}))
        ready = json.loads(await ws.recv())
        assert list(ready) == ["@", "reference"]
        assert list(ready["reference"]) == ["uri"]
        await ws.send([b"a\n", b"b"])  # one message, two fragments
        md5 = hashlib.md5(b"a\nb").hexdigest()
        await ws.send(json.dumps({"@": "FinishUpload", "checksum": md5}))
        ack = await asyncio.wait_for(ws.recv(), WAIT)
        assert ack == f'{{"@":"UploadAcknowledged","size":3,"checksum":"{md5}","numberOflines":2}}'
        await ws.close(1000, "Upload completed")
    async with connect(ready["reference"]["uri"], compression=None) as ws:
        status = await asyncio.wait_for(ws.recv(), WAIT)
        assert status == (
            '{"@":"StatusChanged","resourceStatus":'
            '{"transferStatus":"COMPLETED","currentSize":3,"numberOfLines":2}}'
        )
        await ws.send(json.dumps({"@": "RequestLines", "startingLineIndex": 0, "linesCount": 2}))
        assert await asyncio.wait_for(ws.recv(), WAIT) == '{"@":"Lines","lines":["a\\n","b"]}'


async def test_the_livefile_dialect_is_confirmed_in_the_handshake(server: LivefileProcess) -> None:
    async with connect(
        f"{server.ws_url}/ws/streaming/upload", compression=None, subprotocols=LIVEFILE
    ) as ws:
        assert ws.subprotocol == "livefile.v1"
        metadata = {"filename": "a.bin", "mimeType": "application/octet-stream"}
        await ws.send(json.dumps({"@": "StartUpload", "metadata": metadata}))
        assert "resourceId" in json.loads(await ws.recv())


def random_pieces(total: int, size: int = MiB) -> list[tuple[int, int]]:
    return [(offset, min(size, total - offset)) for offset in range(0, total, size)]


class Source:
    """Deterministic random bytes made piece by piece (never held whole), with their MD5."""

    def __init__(self, total: int, seed: int) -> None:
        self.total = total
        self.seed = seed
        self.md5 = hashlib.md5()

    def piece(self, index: int, size: int) -> bytes:
        return random.Random(self.seed * 100_003 + index).randbytes(size)

    def digest(self) -> str:
        md5 = hashlib.md5()
        for index, (_, size) in enumerate(random_pieces(self.total)):
            md5.update(self.piece(index, size))
        return md5.hexdigest()


@pytest.mark.parametrize("total", [5_000_000, 200_000_000], ids=["5MB", "200MB"])
async def test_one_message_upload_is_followed_live_and_read_whole(
    start_server: ServerFactory, total: int
) -> None:
    """The whole upload is one fragmented binary message; a livefile SDK watcher and a strict
    watcher both see it grow before it ends (the uploader waits for that halfway through), get
    every byte, and a ``getInputStream``-style read of ``[0, size)`` afterwards is one message
    with the same bytes. The server's memory does not grow with the upload."""
    server = start_server()
    source = Source(total, seed=total)
    expected = source.digest()
    pieces = random_pieces(total)
    halfway = len(pieces) // 2
    seen_growing = {"sdk": asyncio.Event(), "strict": asyncio.Event()}
    peak_before = peak_memory(server)

    upload = StrictUpload(server.ws_url)
    reference = await upload.start("big.bin", "application/octet-stream")

    async def data() -> AsyncIterator[bytes]:
        for index, (_, size) in enumerate(pieces):
            if index == halfway:
                async with asyncio.timeout(WAIT):  # the watchers must see it grow first
                    await asyncio.gather(*(event.wait() for event in seen_growing.values()))
            yield source.piece(index, size)

    def growing(status_size: int, transfer: str) -> bool:
        return transfer == "IN_PROGRESS" and 0 < status_size < total

    async def sdk_watcher() -> str:
        md5 = hashlib.md5()
        async with AsyncDownloadClient(reference, timeout=WAIT) as client:
            client.add_status_listener(
                lambda status: (
                    seen_growing["sdk"].set()
                    if growing(status.current_size, status.transfer_status.value)
                    else None
                )
            )
            async for block in client.iter_bytes():
                md5.update(block)
            assert client.status.transfer_status.value == "COMPLETED"
        return md5.hexdigest()

    async def strict_watcher() -> str:
        md5 = hashlib.md5()
        async with StrictDownload(reference) as download:

            def sink(block: bytes) -> None:
                md5.update(block)
                status = download.status
                assert status is not None
                if growing(status["currentSize"], status["transferStatus"]):
                    seen_growing["strict"].set()

            last = await download.input_stream(sink)
            assert last["transferStatus"] == "COMPLETED"
        return md5.hexdigest()

    async def upload_all() -> None:
        await upload.send(data())
        ack = await upload.finish()
        assert (ack.size, ack.checksum, ack.number_of_lines) == (total, expected, None)

    watchers = asyncio.gather(sdk_watcher(), strict_watcher())
    await asyncio.sleep(0)
    _, followed = await asyncio.wait_for(asyncio.gather(upload_all(), watchers), 3 * WAIT)
    assert list(followed) == [expected, expected]

    async with StrictDownload(reference) as download:  # getInputStream on the COMPLETED one
        assert download.status == {
            "transferStatus": "COMPLETED",
            "currentSize": total,
            "numberOfLines": None,
        }
        md5 = hashlib.md5()
        assert await download.chunk(0, total, md5.update) == total  # one message
        assert md5.hexdigest() == expected
    # 200 MB went through in one message: the server never held it.
    assert peak_memory(server) - peak_before < 96 * MiB


def peak_memory(server: LivefileProcess) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) * 1024


async def test_forty_uploads_in_a_row(server: LivefileProcess) -> None:
    """Each client closes after its acknowledgement, as step-streaming's does: all COMPLETED."""
    rng = random.Random(40)
    for i in range(40):
        data = rng.randbytes(20_000)
        reference, ack = await upload_bytes(server.ws_url, data, f"f{i}.bin")
        assert ack.size == len(data)
        assert status_over_http(server, reference) == {
            "transferStatus": "COMPLETED",
            "currentSize": 20_000,
            "numberOfLines": None,
        }


async def test_an_abrupt_end_after_the_acknowledgement_changes_nothing(
    server: LivefileProcess,
) -> None:
    upload = StrictUpload(server.ws_url)
    reference = await upload.start("a.bin", "application/octet-stream")
    await upload.send(pieces_of_bytes(b"x" * 5000))
    await upload.finish(close=False)
    upload.drop()  # the TCP connection ends without a close frame
    await asyncio.sleep(0.3)
    assert status_over_http(server, reference)["transferStatus"] == "COMPLETED"


async def pieces_of_bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_zero_byte_upload_is_one_empty_message(server: LivefileProcess) -> None:
    reference, ack = await upload_bytes(server.ws_url, b"", "empty.txt", "text/plain", True)
    assert (ack.size, ack.number_of_lines) == (0, 0)
    async with StrictDownload(reference) as download:
        assert download.status == {
            "transferStatus": "COMPLETED",
            "currentSize": 0,
            "numberOfLines": 0,
        }
        assert await download.read(0, 0) == b""


async def test_line_requests_follow_a_live_text(server: LivefileProcess) -> None:
    """testLineBasedDownload: on each status, ask for the lines not read yet."""
    text = text_of(200)
    lines = text.decode().splitlines(keepends=True)
    upload = StrictUpload(server.ws_url)
    reference = await upload.start("live.log", "text/plain", supports_line_access=True)
    received: list[str] = []

    async def follow() -> None:
        async with StrictDownload(reference) as download:
            while True:
                status = download.status
                assert status is not None
                total = status["numberOfLines"]
                if total > len(received):
                    received.extend(await download.lines(len(received), total - len(received)))
                elif status["transferStatus"] == "COMPLETED":
                    return
                else:
                    await download.wait_for_change(WAIT)

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(lines), 20):
            yield "".join(lines[start : start + 20]).encode()
            await asyncio.sleep(0.05)

    follower = asyncio.create_task(follow())
    await upload.send(trickle())
    await upload.finish()
    await asyncio.wait_for(follower, WAIT)
    assert "".join(received).encode() == text


async def test_a_bad_request_closes_with_the_reason_instead_of_an_error_message(
    server: LivefileProcess,
) -> None:
    reference, _ = await upload_bytes(server.ws_url, b"one\ntwo\n", "t.txt", "text/plain", True)
    async with connect(reference, compression=None) as ws:
        parse_strictly(str(await asyncio.wait_for(ws.recv(), WAIT)), {"StatusChanged"})
        # A page reaching past the end is cut there (issue 13); a start beyond it is refused.
        await ws.send(json.dumps({"@": "RequestLines", "startingLineIndex": 5, "linesCount": 1}))
        code, reason = await asyncio.wait_for(wait_closed(ws), WAIT)
    assert code == 1008
    assert reason is not None
    assert "[5, 6)" in reason
    async with connect(reference, compression=None) as ws:
        parse_strictly(str(await asyncio.wait_for(ws.recv(), WAIT)), {"StatusChanged"})
        await ws.send(json.dumps({"@": "RequestChunk", "startOffset": 0, "endOffset": 99}))
        code, reason = await asyncio.wait_for(wait_closed(ws), WAIT)
    assert code == 1008
    assert reason is not None
    assert reason.startswith("Requested range [0, 99)")


async def test_an_unknown_resource_is_closed_at_once(server: LivefileProcess) -> None:
    reference = f"{server.ws_url}/ws/streaming/download/{'0' * 32}"
    with pytest.raises(DownloadClosedError) as caught:
        async with asyncio.timeout(5):  # not the Java client's 30 s
            async with StrictDownload(reference):
                pass
    assert (caught.value.code, caught.value.reason) == (1008, "Unknown resource id")


async def test_a_quota_refusal_is_a_quota_exceeded_exception(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-resource-size", "1000000")
    upload = StrictUpload(server.ws_url)
    reference = await upload.start("big.bin", "application/octet-stream")
    with pytest.raises(QuotaExceededError) as caught:
        await upload.send(pieces_of_bytes(bytes(3_000_000)))
        await upload.finish()
    assert caught.value.code == 1008
    assert caught.value.reason.startswith("QuotaExceededException: Size ")
    assert str(caught.value).endswith("exceeds the maximum resource size 1000000")
    status = status_over_http(server, reference)
    assert status["transferStatus"] == "FAILED"
    assert isinstance(status["currentSize"], int)
    assert status["currentSize"] <= 1_000_000


async def test_an_upload_context_required_and_missing(start_server: ServerFactory) -> None:
    server = start_server("--require-upload-context")
    with pytest.raises(UploadFailedError) as caught:
        await upload_bytes(server.ws_url, b"data")
    assert (caught.value.code, caught.value.reason) == (
        1008,
        "Missing parameter streamingUploadContextId",
    )
    assert "CloseReason[1008,Missing parameter streamingUploadContextId]" in str(caught.value)
    code, context = get_json(f"{server.http_url}/contexts", method="POST")
    assert code == 201
    reference, ack = await upload_bytes(server.ws_url, b"data", context_id=context["contextId"])
    assert ack.size == 4
    assert status_over_http(server, reference)["transferStatus"] == "COMPLETED"


async def test_under_another_asgi_server_a_one_message_upload_is_refused_clearly(
    tmp_path: Path,
) -> None:
    """Without livefile serve's frame handling the ASGI server would gather the one message
    whole: the upload is refused at once with a reason; downloads still work there."""
    port = free_port()
    settings = Settings(data_dir=tmp_path / "data", port=port)
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:  # noqa: ASYNC110 (uvicorn sets a flag, no event)
                await asyncio.sleep(0.05)
        ws_url = f"ws://127.0.0.1:{port}"
        with pytest.raises(UploadFailedError) as caught:
            await upload_bytes(ws_url, b"data")
        assert caught.value.code == 1003
        assert caught.value.reason == (
            "Single-message uploads need livefile serve; send several messages with livefile.v1"
        )
        async with AsyncUploadClient(ws_url) as client:  # livefile's dialect: several messages
            result = await client.upload_bytes(bytes(range(256)) * 10_000, filename="a.bin")
        async with StrictDownload(result.reference) as download:
            assert await download.read(0, 2_560_000) == bytes(range(256)) * 10_000
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, WAIT)
