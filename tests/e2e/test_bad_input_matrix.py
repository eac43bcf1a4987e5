"""Issue 5's bad-input matrix against one server, while other connections keep uploading and
downloading through it.

Every row sends one kind of bad input (over the upload WebSocket, the download WebSocket or
HTTP) and asserts the exact answer docs/protocol.md gives for it. Meanwhile a background thread
with its own event loop keeps several uploads and downloads running (the SDKs and the raw wire
helpers, WebSocket and HTTP) and checks the MD5 of every byte that comes back. After each row
the server must still run and the traffic must have seen no error; at the end of the module the
traffic must have completed rounds all along and must still complete them.

Hostile paths go through curl ``--path-as-is`` or raw sockets: HTTP clients normalise dot
segments and refuse NUL bytes, so they would not send what is being tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.support.server import LivefileProcess
from tests.support.wire import (
    download,
    get_json,
    open_ws,
    plain_status,
    read_chunk,
    receive_json,
    upload,
    wait_closed,
)

# CI installs curl (.ci/run); there a missing curl fails these tests instead of skipping them.
pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None and not os.environ.get("CI"), reason="curl is not installed"
)

T = TypeVar("T")
WAIT = 30.0
MIB = 1024 * 1024
TEXT_LIMIT = 65536
TRANSPORT_LIMIT = MIB + 1024  # max(binary limit, text limit) + 1 KiB
TRAFFIC_WORKERS = 4
MIN_ROUNDS = 20  # completed upload+download rounds while the matrix ran
HUGE = 2**63
LONG_NUMBER = "1" + "0" * 5000  # beyond Python's 4300-digit int conversion limit
TEXT = b"first line\nsecond line\r\nthird line\nno break"
START = json.dumps(
    {"@": "StartUpload", "metadata": {"filename": "m.bin", "mimeType": "application/octet-stream"}}
)


# --- background traffic ---------------------------------------------------------------------


class BackgroundTraffic:
    """Uploads and downloads (WebSocket and HTTP) in a thread with its own event loop, each
    round checked byte for byte by MD5, until ``stop``."""

    def __init__(self, server: LivefileProcess) -> None:
        self.server = server
        self.rounds = 0
        self.errors: list[str] = []
        self._progress = threading.Condition()
        self._stopping = threading.Event()
        self._loop_ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="background-traffic", daemon=True)
        # No proxies from the environment: urlopen's default opener reads os.environ on each
        # request, and reading it on this thread while pytest sets and removes
        # PYTEST_CURRENT_TEST on the main one raised KeyError now and then.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> BackgroundTraffic:
        self._thread.start()
        assert self._loop_ready.wait(WAIT), "the traffic thread did not start"
        return self

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the traffic thread's loop (for setup outside the tests' loop)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT)

    def wait_for_rounds(self, count: int, timeout: float = WAIT) -> bool:
        with self._progress:
            return self._progress.wait_for(lambda: self.rounds >= count, timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(WAIT * 2)
        assert not self._thread.is_alive(), "the traffic did not stop"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_ready.set()
        kinds: list[Callable[[int], Awaitable[None]]] = [
            self._sdk_round,
            self._wire_round,
            self._live_round,
        ]
        workers = [
            asyncio.create_task(self._worker(kinds[number % len(kinds)], number))
            for number in range(TRAFFIC_WORKERS)
        ]
        while not self._stopping.is_set():
            await asyncio.to_thread(self._stopping.wait, 1.0)
        await asyncio.gather(*workers)

    async def _worker(self, one_round: Callable[[int], Awaitable[None]], number: int) -> None:
        turn = 0
        while not self._stopping.is_set():
            turn += 1
            try:
                await asyncio.wait_for(one_round(turn), WAIT)
            except Exception as exc:
                self.errors.append(f"worker {number} round {turn}: {exc!r}")
                continue
            with self._progress:
                self.rounds += 1
                self._progress.notify_all()

    def _check(self, what: str, got: bytes, data: bytes) -> None:
        if hashlib.md5(got).hexdigest() != hashlib.md5(data).hexdigest():
            self.errors.append(f"{what}: MD5 mismatch ({len(got)} bytes, {len(data)} sent)")

    async def _http_get(self, resource_id: str) -> bytes:
        url = f"{self.server.http_url}/resources/{resource_id}/content"

        def get() -> bytes:
            with self._http.open(url, timeout=WAIT) as response:
                body: bytes = response.read()
                return body

        return await asyncio.to_thread(get)

    async def _sdk_round(self, turn: int) -> None:
        """The upload SDK in one call; the download SDK and plain HTTP read it back."""
        data = os.urandom(200_000 + turn % 7 * 30_000)
        client = AsyncUploadClient(self.server.ws_url, timeout=WAIT, message_size=64 * 1024)
        result = await client.upload_bytes(data, filename=f"sdk-{turn}.bin")
        if result.size != len(data):
            self.errors.append(f"sdk upload {turn}: acknowledged {result.size} bytes")
        async with AsyncDownloadClient(result.reference, timeout=WAIT) as reader:
            self._check(f"sdk download {turn}", await reader.read(0, len(data)), data)
        self._check(f"http download {turn}", await self._http_get(result.resource_id), data)

    async def _wire_round(self, turn: int) -> None:
        """Raw protocol messages both ways, then HTTP."""
        data = os.urandom(300_000 + turn % 5 * 20_000)
        resource_id = await upload(self.server.ws_url, data, piece=50_000)
        self._check(f"wire download {turn}", await download(self.server.ws_url, resource_id), data)
        self._check(f"http download {turn}", await self._http_get(resource_id), data)

    async def _live_round(self, turn: int) -> None:
        """A watcher follows the upload while it is written, then HTTP reads the result."""
        data = os.urandom(400_000)
        client = AsyncUploadClient(self.server.ws_url, timeout=WAIT, message_size=32 * 1024)
        live = await client.start(filename=f"live-{turn}.bin", mime_type="application/x-live")
        async with AsyncDownloadClient(live.reference, timeout=WAIT) as follower:

            async def follow() -> bytes:
                return b"".join([piece async for piece in follower.iter_bytes()])

            followed = asyncio.create_task(follow())
            for offset in range(0, len(data), 50_000):
                await live.write(data[offset : offset + 50_000])
            await live.finish()
            self._check(f"followed download {turn}", await followed, data)
        self._check(f"http download {turn}", await self._http_get(live.resource_id), data)


@dataclass
class Matrix:
    server: LivefileProcess
    traffic: BackgroundTraffic
    text_id: str  # COMPLETED, with line access: TEXT
    binary_id: str  # COMPLETED, without line access: 100,000 random bytes
    binary: bytes


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """The module's own server, two finished resources to aim at, and the background traffic
    that must run without a single error for as long as the matrix does."""
    server = LivefileProcess(tmp_path_factory.mktemp("matrix") / "data").start()
    traffic = BackgroundTraffic(server).start()
    try:
        binary = os.urandom(100_000)
        text_id = traffic.run(_upload_text(server))
        binary_id = traffic.run(upload(server.ws_url, binary))
        assert traffic.wait_for_rounds(TRAFFIC_WORKERS), "no traffic before the matrix"
        started_with = traffic.rounds
        yield Matrix(server, traffic, text_id, binary_id, binary)
        # Traffic still completes after the whole matrix, and it completed all along.
        assert traffic.wait_for_rounds(traffic.rounds + TRAFFIC_WORKERS), traffic.errors
        assert traffic.rounds - started_with >= MIN_ROUNDS
    finally:
        traffic.stop()
        alive = server.process is not None and server.process.poll() is None
        server.kill()
    assert alive, "the server died:\n" + server.log()
    assert traffic.errors == []


@pytest.fixture(autouse=True)
def still_serving(matrix: Matrix) -> Iterator[None]:
    """After every row: the server runs and no other connection has seen an error."""
    yield
    assert matrix.server.process is not None
    assert matrix.server.process.poll() is None, "the server died:\n" + matrix.server.log()
    assert matrix.traffic.errors == []


async def _upload_text(server: LivefileProcess) -> str:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        await ws.send(
            json.dumps(
                {
                    "@": "StartUpload",
                    "metadata": {
                        "filename": "t.log",
                        "mimeType": "text/plain",
                        "supportsLineAccess": True,
                    },
                }
            )
        )
        ready = await receive_json(ws)
        await ws.send(TEXT)
        await ws.send(json.dumps({"@": "FinishUpload", "checksum": hashlib.md5(TEXT).hexdigest()}))
        await wait_closed(ws)
    return str(ready["resourceId"])


# --- helpers ----------------------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=WAIT)


def curl_status(url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and body of one request, the path sent exactly as given."""
    result = curl("--path-as-is", "-D", "-", *args, url)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def close_reason(text: str) -> str:
    """``text`` as a close frame carries it: cut to 123 UTF-8 bytes at a code-point boundary."""
    return text.encode()[:123].decode(errors="ignore")


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes no HTTP client would send; return all the server answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def final_status(server: LivefileProcess, resource_id: str) -> dict[str, Any]:
    """The terminal status, from the event stream (it ends after the terminal status)."""
    events = curl("-N", f"{server.http_url}/resources/{resource_id}/events").stdout.decode()
    last = events.strip().split("\n")[-1]
    assert last.startswith("data: "), events
    status: dict[str, Any] = json.loads(last[6:])
    return status


async def send_all(ws: Any, messages: list[str | bytes]) -> None:
    """Send in order; the server may close before the last one arrives."""
    for message in messages:
        try:
            await ws.send(message)
        except ConnectionClosed:
            return


async def run_upload_exchange(
    server: LivefileProcess, messages: list[str | bytes]
) -> tuple[int | None, str | None, str | None]:
    """Send ``messages`` on an upload connection; return the close code and reason and the id
    from ``ReadyForUpload`` (None if no resource was created)."""
    resource_id: str | None = None
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        await send_all(ws, messages)
        try:
            while True:
                message = await asyncio.wait_for(ws.recv(), WAIT)
                if isinstance(message, str) and json.loads(message)["@"] == "ReadyForUpload":
                    resource_id = json.loads(message)["resourceId"]
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason, resource_id


# --- upload connection ------------------------------------------------------------------------


def start_with(metadata: dict[str, Any]) -> str:
    return json.dumps({"@": "StartUpload", "metadata": metadata})


UPLOAD_ROWS: list[Any] = [
    pytest.param(
        ["{not json"],
        1002,
        "Malformed JSON: Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1)",
        id="malformed-json",
    ),
    pytest.param(
        [""], 1002, "Malformed JSON: Expecting value: line 1 column 1 (char 0)", id="empty-text"
    ),
    pytest.param(
        ['{"@": "StartUpload", "n": ' + LONG_NUMBER + "}"],
        1002,
        "Malformed JSON: a number has more than 4300 digits",
        id="number-of-5001-digits",
    ),
    pytest.param(["[1, 2]"], 1002, "A message must be a JSON object, got list", id="json-array"),
    pytest.param(
        ['"StartUpload"'], 1002, "A message must be a JSON object, got str", id="json-string"
    ),
    pytest.param(["42"], 1002, "A message must be a JSON object, got int", id="json-number"),
    pytest.param(["null"], 1002, "A message must be a JSON object, got NoneType", id="json-null"),
    pytest.param(
        ['{"metadata": {}}'], 1002, 'Missing message type property "@"', id="missing-type"
    ),
    pytest.param(['{"@": null}'], 1002, 'Missing message type property "@"', id="null-type"),
    pytest.param(['{"@": "Hello"}'], 1002, "Unknown message type 'Hello'", id="unknown-type"),
    pytest.param(['{"@": 5}'], 1002, "Unknown message type '5'", id="numeric-type"),
    pytest.param(
        ['{"@": "FinishUpload", "checksum": "x"}'],
        1002,
        "Unexpected FinishUpload while awaiting StartUpload",
        id="finish-upload-first",
    ),
    pytest.param(
        [b"data"], 1002, "Unexpected binary data while awaiting StartUpload", id="data-first"
    ),
    pytest.param(
        [START, START], 1002, "Unexpected StartUpload while uploading", id="start-upload-twice"
    ),
    pytest.param(
        [START, '{"@": "RequestChunk", "startOffset": 0, "endOffset": 1}'],
        1002,
        "Unexpected RequestChunk while uploading",
        id="download-request-on-upload",
    ),
    pytest.param(
        ['{"@": "ReadyForUpload", "reference": {"uri": "ws://x"}, "resourceId": "y"}'],
        1002,
        "Unexpected ReadyForUpload while awaiting StartUpload",
        id="server-message-from-client",
    ),
    pytest.param(
        [START, '{"@": "FinishUpload", "checksum": 5}'],
        1002,
        "Invalid FinishUpload: checksum: Input should be a valid string",
        id="checksum-not-a-string",
    ),
    pytest.param(
        ['{"@": "StartUpload", "metadata": "m.bin"}'],
        1002,
        "Invalid StartUpload: metadata: Input should be a valid dictionary or instance of"
        " ResourceMetadata",
        id="metadata-not-an-object",
    ),
    pytest.param(
        ["x" * 70_000], 1009, "Text message of 70000 bytes exceeds 65536", id="oversized-text"
    ),
    pytest.param(
        [START, b"d" * 1000, "x" * 70_000],
        1009,
        "Text message of 70000 bytes exceeds 65536",
        id="oversized-text-while-uploading",
    ),
    pytest.param(
        [START, b"d" * 1000, b"d" * (MIB + 1)],
        1009,
        f"Binary message of {MIB + 1} bytes exceeds {MIB}",
        id="oversized-binary",
    ),
    pytest.param(
        [START, b"d" * 1000, b"d" * (TRANSPORT_LIMIT + 1024)],
        1009,
        f"frame with {TRANSPORT_LIMIT + 1024} bytes exceeds limit of {TRANSPORT_LIMIT} bytes",
        id="binary-over-the-transport-limit",
    ),
    pytest.param(
        ["x" * (TRANSPORT_LIMIT + 1024)],
        1009,
        f"frame with {TRANSPORT_LIMIT + 1024} bytes exceeds limit of {TRANSPORT_LIMIT} bytes",
        id="text-over-the-transport-limit",
    ),
]


@pytest.mark.parametrize(("messages", "code", "reason"), UPLOAD_ROWS)
async def test_bad_upload_input_closes_with_the_documented_code_and_reason_and_fails_the_resource(
    matrix: Matrix, messages: list[str | bytes], code: int, reason: str
) -> None:
    got_code, got_reason, resource_id = await run_upload_exchange(matrix.server, messages)
    assert (got_code, got_reason) == (code, close_reason(reason))
    if resource_id is not None:
        # Refused after StartUpload: FAILED, with every byte received before the bad message.
        sent = sum(len(m) for m in messages[1:-1] if isinstance(m, bytes))
        status = final_status(matrix.server, resource_id)
        assert (status["transferStatus"], status["currentSize"]) == ("FAILED", sent)


async def test_data_after_finish_upload_is_discarded_and_the_upload_completes(
    matrix: Matrix,
) -> None:
    data = b"kept bytes"
    finish = json.dumps({"@": "FinishUpload", "checksum": hashlib.md5(data).hexdigest()})
    code, reason, resource_id = await run_upload_exchange(
        matrix.server, [START, data, finish, b"after the end", b"more"]
    )
    assert (code, reason) == (1000, "Upload completed")
    assert resource_id is not None
    assert plain_status(final_status(matrix.server, resource_id)) == {
        "transferStatus": "COMPLETED",
        "currentSize": len(data),
        "numberOfLines": None,
    }
    assert await download(matrix.server.ws_url, resource_id) == data


# --- hostile metadata -------------------------------------------------------------------------


def _mime_refusal(mime: str) -> str:
    return (
        f"Invalid StartUpload: metadata.mimeType: Value error, invalid MIME type {mime!r}:"
        " expected type/subtype"
    )


METADATA_ROWS: list[Any] = [
    pytest.param(
        {"filename": "m.txt", "mimeType": "text/plain\n"},
        _mime_refusal("text/plain\n"),
        id="mime-type-ending-in-a-line-break",
    ),
    pytest.param(
        {"filename": "m.txt", "mimeType": "text/plain\r\nSet-Cookie: x=1"},
        _mime_refusal("text/plain\r\nSet-Cookie: x=1"),
        id="mime-type-injecting-a-header",
    ),
    pytest.param(
        {"filename": "m.txt", "mimeType": "text/plain; charset=utf-8"},
        _mime_refusal("text/plain; charset=utf-8"),
        id="mime-type-with-parameters",
    ),
    pytest.param({"filename": "m.txt", "mimeType": ""}, _mime_refusal(""), id="mime-type-empty"),
    pytest.param(
        {"filename": "m.txt", "mimeType": "téxt/plain"},
        _mime_refusal("téxt/plain"),
        id="mime-type-not-ascii",
    ),
    pytest.param(
        {"filename": "m.txt", "mimeType": "a/" + "b" * 300},
        _mime_refusal(("a/" + "b" * 300)[:80]),
        id="mime-type-300-characters",
    ),
    pytest.param(
        {"filename": "m.txt"},
        "Invalid StartUpload: metadata.mimeType: Field required",
        id="mime-type-missing",
    ),
    pytest.param(
        {"filename": "/etc/passwd", "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error,"
        " filename must not contain path separators",
        id="filename-absolute-path",
    ),
    pytest.param(
        {"filename": "..\\..\\boot.ini", "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error,"
        " filename must not contain path separators",
        id="filename-windows-path",
    ),
    pytest.param(
        {"filename": "..", "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error, filename must not be '.' or '..'",
        id="filename-dot-dot",
    ),
    pytest.param(
        {"filename": "a\x00.txt", "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error,"
        " filename must not contain control characters",
        id="filename-with-nul",
    ),
    pytest.param(
        {"filename": "a\x85.txt", "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error,"
        " filename must not contain control characters",
        id="filename-with-c1-control",
    ),
    *[
        pytest.param(
            {"filename": f"invoice{control}txt.exe", "mimeType": "text/plain"},
            "Invalid StartUpload: metadata.filename: Value error, filename must not contain"
            f" bidirectional control characters (U+{ord(control):04X})",
            id=f"filename-with-bidi-U+{ord(control):04X}",
        )
        for control in "\u202e\u202a\u2066\u2069\u200f\u200e\u061c"
    ],
    pytest.param(
        {"filename": "x" * 10_240, "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error,"
        " filename must be at most 255 bytes in UTF-8",
        id="filename-10-kb",
    ),
    pytest.param(
        {"filename": "", "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Value error, filename must not be empty",
        id="filename-empty",
    ),
    pytest.param(
        {"filename": ["a"], "mimeType": "text/plain"},
        "Invalid StartUpload: metadata.filename: Input should be a valid string",
        id="filename-not-a-string",
    ),
    pytest.param(
        {"filename": "m.txt", "mimeType": "text/plain", "supportsLineAccess": "yes"},
        "Invalid StartUpload: metadata.supportsLineAccess: Input should be a valid boolean",
        id="supports-line-access-not-a-boolean",
    ),
]


@pytest.mark.parametrize(("metadata", "reason"), METADATA_ROWS)
async def test_hostile_metadata_is_refused_with_1002_naming_the_field(
    matrix: Matrix, metadata: dict[str, Any], reason: str
) -> None:
    code, got_reason, resource_id = await run_upload_exchange(matrix.server, [start_with(metadata)])
    assert (code, got_reason) == (1002, close_reason(reason))
    assert resource_id is None


async def test_filename_with_a_lone_surrogate_is_refused_with_1002(matrix: Matrix) -> None:
    text = '{"@": "StartUpload", "metadata": {"filename": "\\ud800.txt", "mimeType": "a/b"}}'
    code, reason, resource_id = await run_upload_exchange(matrix.server, [text])
    assert code == 1002
    assert reason is not None
    assert reason == (
        "Invalid StartUpload: metadata.filename: Value error,"
        " filename must be valid Unicode (no lone surrogates)"
    )
    assert resource_id is None


@pytest.mark.parametrize(
    ("filename", "mime_type"),
    [
        pytest.param("%2e%2e%2fpasswd", "text/plain", id="percent-encoded-traversal"),
        pytest.param('<script>"x".html', "text/html", id="markup-and-quotes"),
        pytest.param("passwd", "a+b/c.d-e_f", id="odd-but-valid-mime-type"),
    ],
)
async def test_hostile_but_valid_metadata_round_trips_exactly_and_never_becomes_a_path(
    matrix: Matrix, filename: str, mime_type: str
) -> None:
    data = b"payload"
    finish = json.dumps({"@": "FinishUpload", "checksum": hashlib.md5(data).hexdigest()})
    start = start_with({"filename": filename, "mimeType": mime_type})
    code, _, resource_id = await run_upload_exchange(matrix.server, [start, data, finish])
    assert code == 1000
    assert resource_id is not None
    status, info = get_json(f"{matrix.server.http_url}/resources/{resource_id}")
    assert status == 200
    assert (info["metadata"]["filename"], info["metadata"]["mimeType"]) == (filename, mime_type)
    code_, headers, body = curl_status(f"{matrix.server.http_url}/resources/{resource_id}/content")
    assert (code_, headers["content-type"], body) == (200, mime_type, data)
    assert all(32 <= ord(ch) < 127 for ch in headers["content-disposition"])
    assert matrix.server.data_dir is not None
    stored = [path.name for path in matrix.server.data_dir.rglob("*")]
    assert not any(filename in name or "passwd" in name for name in stored)


# --- download connection: requests ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    code: str
    message: str
    request_id: str | int | None = None


def bad_range(start: int, end: int, size: int = len(TEXT)) -> str:
    return (
        f"Requested range [{start}, {end}) is not within [0, {size}]:"
        f" need 0 <= startOffset <= endOffset <= {size}"
    )


def bad_lines(start: int, end: int, total: int = 4) -> str:
    return (
        f"Requested lines [{start}, {end}) are not within [0, {total}]: need 0 <="
        f" startingLineIndex <= {total} (lines are numbered from 0) and 0 <= linesCount"
    )


def chunk(start: Any, end: Any, **extra: Any) -> str:
    return json.dumps({"@": "RequestChunk", "startOffset": start, "endOffset": end, **extra})


def lines(start: Any, count: Any, **extra: Any) -> str:
    return json.dumps(
        {"@": "RequestLines", "startingLineIndex": start, "linesCount": count, **extra}
    )


def invalid(kind: str, field: str, why: str = "Input should be a valid integer") -> str:
    return f"Invalid {kind}: {field}: {why}"


SIZE = len(TEXT)
DOWNLOAD_ROWS: list[Any] = [
    pytest.param(
        "{not json",
        Reply(
            "BAD_REQUEST",
            "Malformed JSON: Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1)",
        ),
        id="malformed-json",
    ),
    pytest.param(
        '{"@": "RequestChunk", "startOffset": ' + LONG_NUMBER + ', "endOffset": 1}',
        Reply("BAD_REQUEST", "Malformed JSON: a number has more than 4300 digits"),
        id="offset-of-5001-digits",
    ),
    pytest.param(
        "[]", Reply("BAD_REQUEST", "A message must be a JSON object, got list"), id="json-array"
    ),
    pytest.param(
        "NaN", Reply("BAD_REQUEST", "A message must be a JSON object, got float"), id="json-nan"
    ),
    pytest.param(
        '{"startOffset": 0}',
        Reply("BAD_REQUEST", 'Missing message type property "@"'),
        id="missing-type",
    ),
    pytest.param(
        '{"@": "GiveMeEverything"}',
        Reply("BAD_REQUEST", "Unknown message type 'GiveMeEverything'"),
        id="unknown-type",
    ),
    pytest.param(
        START, Reply("BAD_REQUEST", "StartUpload is not a download request"), id="upload-message"
    ),
    pytest.param(
        '{"@": "FinishUpload", "checksum": "x"}',
        Reply("BAD_REQUEST", "FinishUpload is not a download request"),
        id="finish-upload-on-download",
    ),
    pytest.param(
        b"\x00\x01binary",
        Reply("BAD_REQUEST", "Binary messages are not requests"),
        id="binary-message",
    ),
    pytest.param(
        "x" * 70_000,
        Reply("BAD_REQUEST", "Text message of 70000 bytes exceeds 65536"),
        id="oversized-text",
    ),
    pytest.param(
        "\N{EURO SIGN}" * 30_000,
        Reply("BAD_REQUEST", "Text message of 90000 bytes exceeds 65536"),
        id="oversized-text-in-bytes-not-characters",
    ),
    pytest.param(
        chunk(-1, 5, requestId=1), Reply("BAD_RANGE", bad_range(-1, 5), 1), id="negative-offset"
    ),
    pytest.param(
        chunk(5, 2, requestId="r"), Reply("BAD_RANGE", bad_range(5, 2), "r"), id="inverted-range"
    ),
    pytest.param(chunk(0, SIZE + 1), Reply("BAD_RANGE", bad_range(0, SIZE + 1)), id="past-the-end"),
    pytest.param(chunk(0, HUGE), Reply("BAD_RANGE", bad_range(0, HUGE)), id="end-2-to-the-63"),
    pytest.param(
        chunk(HUGE, HUGE + 1), Reply("BAD_RANGE", bad_range(HUGE, HUGE + 1)), id="start-2-to-the-63"
    ),
    pytest.param(
        chunk(-HUGE, 0), Reply("BAD_RANGE", bad_range(-HUGE, 0)), id="start-minus-2-to-the-63"
    ),
    pytest.param(
        chunk(1.0, 2),
        Reply("BAD_REQUEST", invalid("RequestChunk", "startOffset")),
        id="float-offset",
    ),
    pytest.param(
        chunk("1", 2),
        Reply("BAD_REQUEST", invalid("RequestChunk", "startOffset")),
        id="string-offset",
    ),
    pytest.param(
        chunk(0, True),
        Reply("BAD_REQUEST", invalid("RequestChunk", "endOffset")),
        id="boolean-offset",
    ),
    pytest.param(
        chunk(None, 2),
        Reply("BAD_REQUEST", invalid("RequestChunk", "startOffset")),
        id="null-offset",
    ),
    pytest.param(
        '{"@": "RequestChunk", "endOffset": 2}',
        Reply("BAD_REQUEST", invalid("RequestChunk", "startOffset", "Field required")),
        id="missing-offset",
    ),
    pytest.param(
        '{"@": "RequestChunk", "startOffset": 1e2, "endOffset": 200}',
        Reply("BAD_REQUEST", invalid("RequestChunk", "startOffset")),
        id="exponent-offset",
    ),
    pytest.param(
        chunk(0, 1, requestId=[1]),
        Reply(
            "BAD_REQUEST",
            "Invalid RequestChunk: requestId.str: Input should be a valid string;"
            " requestId.int: Input should be a valid integer",
        ),
        id="request-id-not-an-id",
    ),
    pytest.param(
        lines(-1, 1, requestId=2), Reply("BAD_RANGE", bad_lines(-1, 0), 2), id="negative-line"
    ),
    pytest.param(lines(0, -1), Reply("BAD_RANGE", bad_lines(0, -1)), id="negative-line-count"),
    pytest.param(lines(5, 3), Reply("BAD_RANGE", bad_lines(5, 8)), id="lines-past-the-end"),
    pytest.param(
        lines(HUGE, 1), Reply("BAD_RANGE", bad_lines(HUGE, HUGE + 1)), id="line-2-to-the-63"
    ),
    pytest.param(
        lines(5, HUGE), Reply("BAD_RANGE", bad_lines(5, HUGE + 5)), id="line-count-2-to-the-63"
    ),
    pytest.param(
        lines(0.5, 1),
        Reply("BAD_REQUEST", invalid("RequestLines", "startingLineIndex")),
        id="float-line",
    ),
]


@pytest.mark.parametrize(("request_message", "reply"), DOWNLOAD_ROWS)
async def test_bad_download_request_gets_the_documented_error_and_the_connection_stays_usable(
    matrix: Matrix, request_message: str | bytes, reply: Reply
) -> None:
    async with open_ws(f"{matrix.server.ws_url}/ws/streaming/download/{matrix.text_id}") as ws:
        await receive_json(ws)  # the current status
        await ws.send(request_message)
        error = await receive_json(ws)
        assert error == {
            "@": "Error",
            "code": reply.code,
            "message": reply.message,
            "requestId": reply.request_id,
        }
        assert await read_chunk(ws, 0, SIZE) == TEXT


async def test_lines_of_a_resource_without_line_access_are_unsupported(matrix: Matrix) -> None:
    async with open_ws(f"{matrix.server.ws_url}/ws/streaming/download/{matrix.binary_id}") as ws:
        await receive_json(ws)
        await ws.send(lines(0, 1, requestId="l"))
        assert await receive_json(ws) == {
            "@": "Error",
            "code": "UNSUPPORTED",
            "message": "This resource was not uploaded with line access (supportsLineAccess)",
            "requestId": "l",
        }
        assert await read_chunk(ws, 0, 10) == matrix.binary[:10]


async def test_text_over_the_transport_limit_closes_the_download_with_1009(
    matrix: Matrix,
) -> None:
    async with open_ws(f"{matrix.server.ws_url}/ws/streaming/download/{matrix.text_id}") as ws:
        await receive_json(ws)
        await ws.send("x" * (TRANSPORT_LIMIT + 1024))
        assert await wait_closed(ws) == (
            1009,
            f"frame with {TRANSPORT_LIMIT + 1024} bytes exceeds limit of {TRANSPORT_LIMIT} bytes",
        )


# --- ids that are not ids ---------------------------------------------------------------------

UNKNOWN_IDS: list[Any] = [
    pytest.param("..", id="dot-dot"),
    pytest.param("%2e%2e", id="encoded-dot-dot"),
    pytest.param("%00", id="encoded-nul"),
    pytest.param("0123456789abcdef%000123456789abcdef", id="encoded-nul-inside"),
    pytest.param("0" * 32 + "%0a", id="id-and-a-line-break"),
    pytest.param("0123456789ABCDEF0123456789ABCDEF", id="uppercase-hex"),
    pytest.param("%ff%fe", id="invalid-utf8"),
    pytest.param("x" * 10_240, id="10-kb"),
]
OTHER_PATHS: list[Any] = [
    pytest.param("%2e%2e%2f", id="encoded-dot-dot-slash"),
    pytest.param("%2e%2e%2fetc%2fpasswd", id="encoded-traversal"),
    pytest.param("..%2f..%2fetc%2fpasswd", id="half-encoded-traversal"),
    pytest.param("/etc/passwd", id="absolute-path"),
    pytest.param("../../etc/passwd", id="dot-segments"),
]


@pytest.mark.parametrize("resource_id", UNKNOWN_IDS[:-1])
async def test_download_of_an_id_that_is_not_an_id_gets_not_found_and_1008(
    matrix: Matrix, resource_id: str
) -> None:
    async with open_ws(f"{matrix.server.ws_url}/ws/streaming/download/{resource_id}") as ws:
        error = await receive_json(ws)
        closed = await wait_closed(ws)
    assert error == {
        "@": "Error",
        "code": "NOT_FOUND",
        "message": "Unknown resource id",
        "requestId": None,
    }
    assert closed == (1008, "Unknown resource id")


@pytest.mark.parametrize("path", OTHER_PATHS[:4])
async def test_download_path_with_more_segments_is_refused_in_the_handshake_with_403(
    matrix: Matrix, path: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(f"{matrix.server.ws_url}/ws/streaming/download/{path}"):
            pass
    assert refused.value.response.status_code == 403


def test_download_path_over_8_kib_is_refused_in_the_handshake_with_414(matrix: Matrix) -> None:
    request = (
        f"GET /ws/streaming/download/{'x' * 10_240} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", matrix.server.port), timeout=5) as sock:
        sock.sendall(request)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            answer = b""
    assert answer.startswith(b"HTTP/1.1 414 ")


HTTP_ROUTES = ["", "/content", "/lines", "/events"]


@pytest.mark.parametrize("route", HTTP_ROUTES)
@pytest.mark.parametrize("resource_id", UNKNOWN_IDS)
def test_http_route_of_an_id_that_is_not_an_id_is_404_unknown_resource(
    matrix: Matrix, resource_id: str, route: str
) -> None:
    status, _, body = curl_status(f"{matrix.server.http_url}/resources/{resource_id}{route}")
    assert (status, json.loads(body)) == (404, {"detail": "Unknown resource id"})


@pytest.mark.parametrize("route", HTTP_ROUTES[1:])
@pytest.mark.parametrize("path", OTHER_PATHS[1:])
def test_http_path_with_more_segments_matches_no_route_and_is_404(
    matrix: Matrix, path: str, route: str
) -> None:
    status, _, body = curl_status(f"{matrix.server.http_url}/resources/{path}{route}")
    assert (status, json.loads(body)) == (404, {"detail": "Not Found"})


def test_http_path_ending_in_an_encoded_slash_is_redirected_without_it(matrix: Matrix) -> None:
    status, headers, _ = curl_status(f"{matrix.server.http_url}/resources/%2e%2e%2f")
    assert (status, headers["location"]) == (307, f"{matrix.server.http_url}/resources/..")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/resources/\x00", id="http-nul"),
        pytest.param(b"/resources/ab\x00cd/content", id="http-nul-inside"),
        pytest.param(b"/ws/streaming/download/\x00", id="websocket-nul"),
    ],
)
def test_raw_nul_byte_in_the_request_line_is_400(matrix: Matrix, target: bytes) -> None:
    request = (
        b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    answer = raw_request(matrix.server.port, request)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"\r\n\r\nInvalid HTTP request received.")


# --- HTTP: ranges and lines -------------------------------------------------------------------

THOUSAND_RANGES = "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))
DIGITS = "9" * 5000


@pytest.mark.parametrize(
    ("header", "status", "content_range", "start", "stop"),
    [
        pytest.param("bytes=", 200, None, 0, 100_000, id="empty-set"),
        pytest.param("bytes=5-2", 200, None, 0, 100_000, id="inverted"),
        pytest.param("bytes=a-b", 200, None, 0, 100_000, id="letters"),
        pytest.param("bytes=1-2-3", 200, None, 0, 100_000, id="three-numbers"),
        pytest.param("bytes=--1", 200, None, 0, 100_000, id="negative"),
        pytest.param("items=0-1", 200, None, 0, 100_000, id="unknown-unit"),
        pytest.param(THOUSAND_RANGES, 200, None, 0, 100_000, id="1000-ranges"),
        pytest.param("bytes=-0", 416, "bytes */100000", 0, 0, id="empty-suffix"),
        pytest.param("bytes=100000-", 416, "bytes */100000", 0, 0, id="start-at-the-end"),
        pytest.param(f"bytes={2**63}-", 416, "bytes */100000", 0, 0, id="start-2-to-the-63"),
        pytest.param(f"bytes={DIGITS}-", 416, "bytes */100000", 0, 0, id="start-of-5000-digits"),
        pytest.param(
            f"bytes=10-{DIGITS}", 206, "bytes 10-99999/100000", 10, 100_000, id="end-of-5000-digits"
        ),
        pytest.param(
            f"bytes=-{DIGITS}", 206, "bytes 0-99999/100000", 0, 100_000, id="suffix-of-5000-digits"
        ),
    ],
)
def test_garbage_range_header_gets_the_documented_answer(
    matrix: Matrix, header: str, status: int, content_range: str | None, start: int, stop: int
) -> None:
    url = f"{matrix.server.http_url}/resources/{matrix.binary_id}/content"
    got_status, headers, body = curl_status(url, "-H", f"Range: {header}")
    assert got_status == status
    assert headers.get("content-range") == content_range
    if status != 416:
        assert hashlib.md5(body).digest() == hashlib.md5(matrix.binary[start:stop]).digest()


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        pytest.param(
            "start=5&count=5",
            400,
            "Requested lines [5, 10) are not within [0, 4]: start must be at most 4"
            " (lines are numbered from 0)",
            id="past-the-end",
        ),
        pytest.param(
            f"start={HUGE}&count=1",
            400,
            f"Requested lines [{HUGE}, {HUGE + 1}) are not within [0, 4]: start must be at"
            " most 4 (lines are numbered from 0)",
            id="start-2-to-the-63",
        ),
        pytest.param(
            f"start=5&count={HUGE}",
            400,
            f"Requested lines [5, {HUGE + 5}) are not within [0, 4]: start must be at most 4"
            " (lines are numbered from 0)",
            id="count-2-to-the-63",
        ),
        pytest.param("start=-1&count=1", 422, None, id="negative-start"),
        pytest.param("start=0&count=-1", 422, None, id="negative-count"),
        pytest.param("start=a", 422, None, id="letters"),
        pytest.param("start=1.5", 422, None, id="fraction"),
        pytest.param(f"start={DIGITS}", 422, None, id="5000-digits"),
    ],
)
def test_http_lines_out_of_range_or_not_integers_get_the_documented_status(
    matrix: Matrix, query: str, status: int, detail: str | None
) -> None:
    url = f"{matrix.server.http_url}/resources/{matrix.text_id}/lines?{query}"
    got_status, _, body = curl_status(url)
    assert got_status == status
    answer = json.loads(body)
    if detail is not None:
        assert answer == {"detail": detail}
    else:  # FastAPI's validation answer names the query parameter
        assert answer["detail"][0]["loc"][0] == "query"


def test_http_lines_without_line_access_is_409(matrix: Matrix) -> None:
    url = f"{matrix.server.http_url}/resources/{matrix.binary_id}/lines?start=0&count=1"
    status, _, body = curl_status(url)
    assert (status, json.loads(body)) == (409, {"detail": "The resource has no line access"})


def test_background_traffic_keeps_completing_rounds_between_rows(matrix: Matrix) -> None:
    """A row of its own: the traffic is not just free of errors, it progresses."""
    assert matrix.traffic.wait_for_rounds(matrix.traffic.rounds + TRAFFIC_WORKERS)
