"""The upload SDK against a real server: every kind of source, the reference before the data,
progress, quotas, contexts, aborts, timeouts, transcoding and the sync facade.

What the server holds is checked over HTTP and the raw download protocol, not the download SDK.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
import socket
import statistics
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from livefile.api import (
    ConnectionLostError,
    LivefileTimeoutError,
    PolicyViolationError,
    ProtocolError,
    QuotaExceededError,
    ServerError,
    TransferStatus,
)
from livefile.api.messages import ReadyForUpload
from livefile.api.model import ResourceReference
from livefile.client_upload import AsyncUploadClient, TranscodingError, UploadClient
from tests.client_upload.watch import WAIT, read_range, wait_for_end
from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import crc32_hex, crc32c_hex, download, get_json, plain_status


def resource(server: LivefileProcess, resource_id: str) -> dict[str, object]:
    status, info = get_json(f"{server.http_url}/resources/{resource_id}")
    assert status == 200, info
    assert isinstance(info, dict)
    return info


async def test_bytes_are_uploaded_and_completed(server: LivefileProcess) -> None:
    data = os.urandom(3_500_000)
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(data, filename="a.bin")
    crc = crc32c_hex(data)
    assert result.status.transfer_status is TransferStatus.COMPLETED
    assert (result.size, result.checksum, result.checksum_algorithm) == (len(data), crc, "crc32c")
    info = resource(server, result.resource_id)
    assert plain_status(info["status"]) == {"transferStatus": "COMPLETED", "currentSize": len(data),
                              "numberOfLines": None}  # fmt: skip
    assert (info["checksum"], info["checksumAlgorithm"]) == (crc, "crc32c")
    assert await download(server.ws_url, result.resource_id) == data


async def test_zero_bytes_complete_with_size_zero(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(b"", filename="empty.txt")
    assert (result.status.transfer_status, result.size) == (TransferStatus.COMPLETED, 0)
    assert result.checksum == crc32c_hex(b"")
    assert plain_status(resource(server, result.resource_id)["status"]) == {
        "transferStatus": "COMPLETED", "currentSize": 0, "numberOfLines": None,
    }  # fmt: skip


async def test_file_is_uploaded_with_its_name_and_guessed_type(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    path.write_bytes(b"<h1>ok</h1>")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_file(path)
    assert resource(server, result.resource_id)["metadata"] == {
        "filename": "report.html",
        "mimeType": "text/html",
        "supportsLineAccess": False,
    }
    assert await download(server.ws_url, result.resource_id) == b"<h1>ok</h1>"


async def test_file_of_unknown_type_is_octet_stream(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "blob.unknownext"
    path.write_bytes(b"?")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_file(path, filename="renamed.unknownext")
    metadata = resource(server, result.resource_id)["metadata"]
    assert metadata == {
        "filename": "renamed.unknownext",
        "mimeType": "application/octet-stream",
        "supportsLineAccess": False,
    }


CHUNKS = [bytes([n]) * 1000 for n in range(50)]


async def test_async_iterator_is_uploaded(server: LivefileProcess) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_stream(chunks(), filename="a")
    assert await download(server.ws_url, result.resource_id) == b"".join(CHUNKS)


async def test_sync_iterator_is_uploaded(server: LivefileProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield from CHUNKS

    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_stream(chunks(), filename="s")
    assert await download(server.ws_url, result.resource_id) == b"".join(CHUNKS)


async def test_reference_is_available_before_any_data(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="later.txt", mime_type="text/plain")
        assert upload.reference == f"{server.ws_url}/ws/streaming/download/{upload.resource_id}"
        assert plain_status(resource(server, upload.resource_id)["status"]) == {
            "transferStatus": "INITIATED", "currentSize": 0, "numberOfLines": None,
        }  # fmt: skip
        await upload.write(b"now")
        result = await upload.finish()
    assert (result.reference, result.resource_id) == (upload.reference, upload.resource_id)


async def test_on_reference_is_called_before_the_source_is_read(
    server: LivefileProcess,
) -> None:
    seen: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        seen.append("first read")
        yield b"data"

    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_stream(
            chunks(), filename="r", on_reference=lambda ref: seen.append(ref)
        )
    assert seen == [result.reference, "first read"]


async def test_message_size_bounds_every_data_message(server: LivefileProcess) -> None:
    sent: list[int] = []
    async with AsyncUploadClient(server.ws_url, timeout=WAIT, message_size=1000) as client:
        result = await client.upload_bytes(
            os.urandom(10_500), filename="m", progress=lambda s, _: sent.append(s)
        )
    # Progress is reported as each message is sent (checkpoints may repeat a sent figure).
    assert list(dict.fromkeys(sent)) == [*range(1000, 10_001, 1000), 10_500]
    assert result.size == 10_500


async def test_checkpoints_report_acknowledged_bytes_before_finishing(
    server: LivefileProcess,
) -> None:
    data = os.urandom(1_000_000)
    reports: list[tuple[int, int]] = []
    stored_all = asyncio.Event()

    def progress(sent: int, acknowledged: int) -> None:
        reports.append((sent, acknowledged))
        if acknowledged == len(data):
            stored_all.set()

    async with AsyncUploadClient(server.ws_url, timeout=WAIT, message_size=100_000) as client:
        upload = await client.start(filename="p", mime_type="text/plain", progress=progress)
        await upload.write(data)
        # A time-driven checkpoint (not the acknowledgement) reports every byte as stored.
        await asyncio.wait_for(stored_all.wait(), WAIT)
        result = await upload.finish()
    sent = [s for s, _ in reports]
    acknowledged = [a for _, a in reports]
    assert sent == sorted(sent)
    assert acknowledged == sorted(acknowledged)
    assert all(a <= s for s, a in reports)
    assert reports[-1] == (result.size, result.size) == (len(data), len(data))


async def test_failing_progress_callback_ends_the_upload_with_its_error(
    server: LivefileProcess,
) -> None:
    def progress(sent: int, acknowledged: int) -> None:
        if acknowledged:
            raise RuntimeError("progress display broke")

    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="p", mime_type="text/plain", progress=progress)
        await upload.write(b"abc")
        with pytest.raises(RuntimeError, match="progress display broke"):
            await upload.finish()


async def test_quota_stops_an_endless_stream_early(start_server: ServerFactory) -> None:
    server = start_server("--max-resource-size", "1000000")
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            yield os.urandom(65536)

    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        with pytest.raises(QuotaExceededError, match="exceeds the maximum resource size 1000000"):
            await client.upload_stream(endless(), filename="big")
    # What is read past the quota is what fits in the socket buffers before the close arrives.
    assert produced < 10_000_000, f"{produced} bytes read: the client kept sending"


async def test_without_resume_a_server_shutdown_mid_upload_is_a_server_error(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    async with AsyncUploadClient(server.ws_url, timeout=WAIT, resume_for=0) as client:
        upload = await client.start(filename="x", mime_type="text/plain")
        await upload.write(b"before")
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        with pytest.raises(ServerError, match="closed with 1001: Server shutdown"):
            async with asyncio.timeout(WAIT):
                while True:  # a paced writer, still writing when the server goes
                    await upload.write(b".")
                    await asyncio.sleep(0.01)
        await stopping


async def test_missing_required_context_is_a_policy_violation(
    start_server: ServerFactory,
) -> None:
    server = start_server("--require-upload-context")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        with pytest.raises(
            PolicyViolationError, match="Missing parameter streamingUploadContextId"
        ):
            await client.upload_bytes(b"x", filename="x")


async def test_unknown_context_is_a_policy_violation(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, context_id="nope", timeout=WAIT) as client:
        with pytest.raises(PolicyViolationError, match="Unknown upload context nope"):
            await client.upload_bytes(b"x", filename="x")


async def test_upload_joins_an_open_context(server: LivefileProcess) -> None:
    _, context = get_json(f"{server.http_url}/contexts", method="POST")
    async with AsyncUploadClient(
        server.ws_url, context_id=context["contextId"], timeout=WAIT
    ) as client:
        result = await client.upload_bytes(b"x", filename="x")
    assert resource(server, result.resource_id)["uploadContextId"] == context["contextId"]


async def test_abort_marks_the_resource_failed_with_the_bytes_kept(
    server: LivefileProcess,
) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="x", mime_type="text/plain")
        await upload.write(b"half")
        await upload.abort("the producer gave up")
    final = await wait_for_end(server.ws_url, upload.resource_id)
    assert (final["transferStatus"], final["currentSize"]) == ("FAILED", 4)
    assert await read_range(server.ws_url, upload.resource_id, 0, 4) == b"half"


async def test_exception_inside_an_upload_block_aborts_it(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="x", mime_type="text/plain")
        with pytest.raises(RuntimeError):
            async with upload:
                await upload.write(b"half")
                raise RuntimeError("the producer crashed")
    final = await wait_for_end(server.ws_url, upload.resource_id)
    assert (final["transferStatus"], final["currentSize"]) == ("FAILED", 4)


async def test_upload_block_that_ends_normally_finishes_it(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="x", mime_type="text/plain")
        async with upload:
            await upload.write(b"whole")
    assert upload.result is not None
    final = await wait_for_end(server.ws_url, upload.resource_id)
    assert (final["transferStatus"], final["currentSize"]) == ("COMPLETED", 5)


async def test_write_after_finish_is_refused(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="x", mime_type="text/plain")
        await upload.finish()
        with pytest.raises(ProtocolError, match="already finished"):
            await upload.write(b"late")


async def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes TCP handshakes; nobody ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=0.5) as client:
            with pytest.raises(LivefileTimeoutError, match=r"timed out after 0\.5 s"):
                await client.upload_bytes(b"x", filename="x")
        assert time.monotonic() - started < 3


async def test_no_server_is_a_connection_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(ConnectionLostError, match="Cannot connect"):
            await client.upload_bytes(b"x", filename="x")


READY = ReadyForUpload(
    reference=ResourceReference(uri=f"ws://stalled/ws/streaming/download/{'0' * 32}"),
    resource_id="0" * 32,
).to_json()


async def test_server_that_stops_reading_times_out_the_write() -> None:
    # The real server always reads; a stalled one is a few lines of websockets.
    connections: list[ServerConnection] = []

    async def stall(ws: ServerConnection) -> None:
        connections.append(ws)
        await ws.recv()  # StartUpload
        await ws.send(READY)
        await ws.wait_closed()  # reads no more: with max_queue=1 websockets stops reading too

    async with serve(stall, "127.0.0.1", 0, compression=None, max_queue=1) as stalled:
        port = stalled.sockets[0].getsockname()[1]
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=0.5) as client:
            upload = await client.start(filename="x", mime_type="text/plain")
            with pytest.raises(LivefileTimeoutError, match=r"took no data for 0\.5 s"):
                for _ in range(1000):  # at most 1 GB: far more than any socket buffer
                    await upload.write(bytes(1024 * 1024))
        for connection in connections:  # a server that reads nothing never hears the end
            connection.transport.abort()


async def test_missing_live_file_raises_before_connecting(tmp_path: Path) -> None:
    # No server listens there: an attempt to connect would raise ConnectionLostError.
    async with AsyncUploadClient("ws://127.0.0.1:9", timeout=5) as client:
        with pytest.raises(FileNotFoundError):
            await client.upload_live_file(tmp_path / "absent.log", until=lambda: True)


async def test_live_file_is_followed_until_the_writer_says_it_is_done(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.touch()
    done = threading.Event()
    lines = [f"event {n}\n".encode() for n in range(200)]

    def writer() -> None:
        with path.open("ab", buffering=0) as log:
            for line in lines:
                log.write(line)
                time.sleep(0.006)  # paces the writer over ~1.2 s
        done.set()

    thread = threading.Thread(target=writer)
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        thread.start()
        result = await client.upload_live_file(path, until=done, supports_line_access=True)
    thread.join()
    expected = b"".join(lines)
    assert result.checksum == crc32c_hex(expected)
    assert (result.size, result.status.number_of_lines) == (len(expected), 200)
    assert await download(server.ws_url, result.resource_id) == expected


async def test_live_file_growth_is_sent_within_100_ms(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "slow.log"
    path.write_bytes(b"0")
    done = asyncio.Event()
    sizes = {size: asyncio.Event() for size in range(1, 7)}

    def progress(sent: int, acknowledged: int) -> None:
        if sent in sizes:
            sizes[sent].set()

    delays = []
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = asyncio.create_task(
            client.upload_live_file(path, until=done, poll_interval=0.05, progress=progress)
        )
        await asyncio.wait_for(sizes[1].wait(), WAIT)
        for size in range(2, 7):
            with path.open("ab") as log:
                log.write(b"+")
            appended = time.monotonic()
            await asyncio.wait_for(sizes[size].wait(), WAIT)
            delays.append(time.monotonic() - appended)
        done.set()
        result = await upload
    assert result.size == 6
    assert statistics.median(delays) < 0.1, f"append-to-send delays: {delays}"


def test_sync_facade_uploads_bytes_and_live_files(server: LivefileProcess, tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(b"start ")
    done = threading.Event()

    def append_then_stop() -> None:
        with path.open("ab") as target:
            target.write(b"and end")
        done.set()

    with UploadClient(server.ws_url, timeout=WAIT) as client:
        result = client.upload_bytes(b"sync", filename="s.bin")
        assert (result.status.transfer_status, result.size) == (TransferStatus.COMPLETED, 4)
        upload = client.start(filename="manual.txt", mime_type="text/plain")
        upload.write(b"by hand")
        assert upload.finish().size == 7
        # The writer appends once the upload runs (its reference is known), then says done.
        live = client.upload_live_file(
            path,
            until=done,
            on_reference=lambda _: threading.Thread(target=append_then_stop).start(),
        )
    assert live.size == len(b"start and end")
    assert asyncio.run(download(server.ws_url, live.resource_id)) == b"start and end"


LATIN1_TEXT = (
    "Österreichische Größen: Mädchen über Brücken, Bäckerei-Öfen glühen.\n"
    "Äpfel, Birnen und Süßigkeiten für Jürgen und Ülrike; Grüße aus Köln.\n"
) * 40 + "Schluß ohne Zeilenumbruch: ÄÖÜäöüß"


async def test_latin1_text_is_stored_as_exact_utf8_with_its_lines(
    server: LivefileProcess,
) -> None:
    source = LATIN1_TEXT.encode("latin-1")
    expected = LATIN1_TEXT.encode("utf-8")
    assert len(expected) > len(source)  # every umlaut grows by a byte
    async with AsyncUploadClient(server.ws_url, timeout=WAIT, message_size=64) as client:
        result = await client.upload_stream(
            [source[i : i + 100] for i in range(0, len(source), 100)],
            filename="faust.txt", mime_type="text/plain", supports_line_access=True,
            charset="ISO-8859-1",
        )  # fmt: skip
    assert result.size == len(expected)
    assert result.checksum == crc32c_hex(expected)
    assert result.status.number_of_lines == 81
    assert await download(server.ws_url, result.resource_id) == expected


async def test_bom_contradicting_the_charset_is_refused(server: LivefileProcess) -> None:
    text = codecs.BOM_UTF16_BE + "Grüße\n".encode("utf-16-be")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        with pytest.raises(TranscodingError, match="UTF-16-BE byte-order mark"):
            await client.upload_bytes(
                text, filename="t.txt", mime_type="text/plain", charset="utf-16-le"
            )


async def test_concurrent_uploads_do_not_mix(server: LivefileProcess) -> None:
    payloads = [os.urandom(200_000) for _ in range(8)]
    async with AsyncUploadClient(server.ws_url, timeout=WAIT, message_size=10_000) as client:
        results = await asyncio.gather(
            *(client.upload_bytes(data, filename=f"{n}.bin") for n, data in enumerate(payloads))
        )
    for data, result in zip(payloads, results, strict=True):
        assert await download(server.ws_url, result.resource_id) == data


def content(url: str) -> tuple[str | None, bytes]:
    """The ETag and body of a GET."""
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return response.headers["ETag"], response.read()


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("crc32c", crc32c_hex),
        ("crc32", crc32_hex),
        ("sha256", lambda data: hashlib.sha256(data).hexdigest()),
        ("md5", lambda data: hashlib.md5(data).hexdigest()),
    ],
)
async def test_each_checksum_algorithm_is_agreed_end_to_end_and_shown(
    server: LivefileProcess, algorithm: str, digest: Callable[[bytes], str]
) -> None:
    data = os.urandom(2_500_000)
    client = AsyncUploadClient(server.ws_url, timeout=WAIT, checksum_algorithm=algorithm)
    result = await client.upload_bytes(data, filename="a.bin")
    assert (result.checksum, result.checksum_algorithm) == (digest(data), algorithm)
    info = resource(server, result.resource_id)
    assert (info["checksum"], info["checksumAlgorithm"]) == (digest(data), algorithm)
    stored = digest(data) if algorithm == "md5" else f"{algorithm}:{digest(data)}"
    etag, body = content(f"{server.http_url}/resources/{result.resource_id}/content")
    assert (etag, body) == (f'"{stored}"', data)


def test_an_unknown_checksum_algorithm_is_refused_before_any_io() -> None:
    with pytest.raises(ValueError, match="sha1"):
        AsyncUploadClient("ws://127.0.0.1:1", checksum_algorithm="sha1")


async def test_upload_bytes_sends_everything_before_the_reference_arrives() -> None:
    """One round trip less per upload: this server answers only once StartUpload, the data and
    FinishUpload have all arrived, so a client that waited for the reference first would time
    out instead."""
    data = b"pipelined\n"
    received: list[str | bytes] = []

    async def answer_at_the_end(ws: ServerConnection) -> None:
        while len(received) < 3:
            received.append(await ws.recv())
        finish = json.loads(received[2])
        await ws.send(READY)
        await ws.send(
            json.dumps({"@": "UploadAcknowledged", "size": len(data),
                        "checksum": finish["checksum"], "checksumAlgorithm": "crc32c"})
        )  # fmt: skip
        await ws.wait_closed()

    async with serve(answer_at_the_end, "127.0.0.1", 0, compression=None) as fake:
        port = fake.sockets[0].getsockname()[1]
        references: list[str] = []
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=5) as client:
            result = await client.upload_bytes(
                data, filename="p.txt", on_reference=references.append
            )
    assert [json.loads(received[0])["@"], received[1], json.loads(received[2])["@"]] == [
        "StartUpload",
        data,
        "FinishUpload",
    ]
    assert result.checksum == crc32c_hex(data)
    assert references == [result.reference]
