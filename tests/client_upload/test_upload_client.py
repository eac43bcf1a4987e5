"""The upload SDK against a real server: every kind of source, the reference before the data,
progress, quotas, contexts, aborts, timeouts, transcoding and the sync facade."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from livefile.api import (
    ConnectionLostError,
    LivefileTimeoutError,
    PolicyViolationError,
    QuotaExceededError,
    TransferStatus,
)
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient, TranscodingError, UploadClient
from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 30.0


async def stored(result_reference: str) -> bytes:
    async with AsyncDownloadClient(result_reference, timeout=WAIT) as download:
        return await download.read(0, download.status.current_size)


async def test_bytes_are_uploaded_and_completed(server: LivefileProcess) -> None:
    data = os.urandom(3_500_000)
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(data, filename="a.bin")
    assert result.status.transfer_status is TransferStatus.COMPLETED
    assert (result.size, result.checksum) == (len(data), hashlib.md5(data).hexdigest())
    assert await stored(result.reference) == data


async def test_file_is_uploaded_with_its_name_and_guessed_type(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    path.write_bytes(b"<h1>ok</h1>")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_file(path)
    _, info = get_json(f"{server.http_url}/resources/{result.resource_id}")
    assert info["metadata"] == {
        "filename": "report.html",
        "mimeType": "text/html",
        "supportsLineAccess": False,
    }
    assert await stored(result.reference) == b"<h1>ok</h1>"


async def test_async_and_sync_iterators_are_uploaded(server: LivefileProcess) -> None:
    async def async_chunks() -> AsyncIterator[bytes]:
        for n in range(50):
            yield bytes([n]) * 1000

    def sync_chunks() -> Iterator[bytes]:
        for n in range(50):
            yield bytes([n]) * 1000

    expected = b"".join(bytes([n]) * 1000 for n in range(50))
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        first = await client.upload_stream(async_chunks(), filename="a")
        second = await client.upload_stream(sync_chunks(), filename="s")
    assert await stored(first.reference) == expected
    assert await stored(second.reference) == expected


async def test_reference_is_available_before_any_data(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="later.txt", mime_type="text/plain")
        assert upload.reference.endswith(f"/ws/streaming/download/{upload.resource_id}")
        _, info = get_json(f"{server.http_url}/resources/{upload.resource_id}")
        assert info["status"]["transferStatus"] == "INITIATED"
        await upload.write(b"now")
        result = await upload.finish()
    assert result.reference == upload.reference


async def test_progress_reports_sent_and_acknowledged_bytes(server: LivefileProcess) -> None:
    reports: list[tuple[int, int]] = []
    async with AsyncUploadClient(server.ws_url, timeout=WAIT, message_size=100_000) as client:
        result = await client.upload_bytes(
            os.urandom(1_000_000), filename="p", progress=lambda s, a: reports.append((s, a))
        )
    sent = [s for s, _ in reports]
    assert sent == sorted(sent)
    assert sent[-1] == result.size
    assert reports[-1] == (1_000_000, 1_000_000)


async def test_quota_stops_an_endless_stream_early(start_server: ServerFactory) -> None:
    server = start_server("--max-resource-size", "1000000")
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < 1_000_000_000:
            produced += 65536
            yield os.urandom(65536)

    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        with pytest.raises(QuotaExceededError, match="exceeds the maximum resource size 1000000"):
            await client.upload_stream(endless(), filename="big")
    assert produced < 50_000_000, "the client kept sending long after the quota was exceeded"


async def test_missing_required_context_is_a_policy_violation(
    start_server: ServerFactory,
) -> None:
    server = start_server("--require-upload-context")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        with pytest.raises(PolicyViolationError, match="Missing parameter"):
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
    _, info = get_json(f"{server.http_url}/resources/{result.resource_id}")
    assert info["uploadContextId"] == context["contextId"]


async def test_exception_inside_an_upload_block_aborts_it_with_bytes_kept(
    server: LivefileProcess,
) -> None:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="x", mime_type="text/plain")
        with pytest.raises(RuntimeError):
            async with upload:
                await upload.write(b"half")
                raise RuntimeError("the producer crashed")
    async with AsyncDownloadClient(upload.reference, timeout=WAIT) as download:
        final = await download.wait_for_end(WAIT)
        assert (final.transfer_status, final.current_size) == (TransferStatus.FAILED, 4)
        assert await download.read(0, 4) == b"half"


async def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=0.5) as client:
            with pytest.raises(LivefileTimeoutError, match="timed out"):
                await client.upload_bytes(b"x", filename="x")


async def test_no_server_is_a_connection_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with AsyncUploadClient(f"ws://127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(ConnectionLostError, match="Cannot connect"):
            await client.upload_bytes(b"x", filename="x")


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
                time.sleep(0.005)  # pacing the writer over ~1 s
        done.set()

    thread = threading.Thread(target=writer)
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        thread.start()
        result = await client.upload_live_file(path, until=done, supports_line_access=True)
    thread.join()
    assert await stored(result.reference) == b"".join(lines)
    assert result.status.number_of_lines == 200


def test_sync_facade_uploads_bytes_and_live_files(server: LivefileProcess, tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(b"start ")
    done = threading.Event()
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        result = client.upload_bytes(b"sync", filename="s.bin")
        assert result.size == 4
        upload = client.start(filename="manual.txt", mime_type="text/plain")
        upload.write(b"by hand")
        assert upload.finish().size == 7

        def append_then_stop() -> None:
            with path.open("ab") as target:
                target.write(b"and end")
            done.set()

        threading.Timer(0.2, append_then_stop).start()
        live = client.upload_live_file(path, until=done)
    assert live.size == len(b"start and end")


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
    assert result.checksum == hashlib.md5(expected).hexdigest()
    assert result.status.number_of_lines == 81
    assert await stored(result.reference) == expected


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
        assert await stored(result.reference) == data
