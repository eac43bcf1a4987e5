"""Raw protocol helpers for server tests: real WebSocket and HTTP clients, no livefile SDK."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import urllib.error
import urllib.request
import zlib
from typing import Any

import crc32c
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from livefile.api.messages import SUBPROTOCOL

# What livefile's SDKs send to speak livefile's dialect (docs/protocol.md, "Two dialects").
LIVEFILE = [Subprotocol(SUBPROTOCOL)]
# A bound for a status to arrive on a loaded CI machine; never a synchronisation sleep.
STATUS_WAIT = 30.0
META = {"filename": "data.bin", "mimeType": "application/octet-stream"}


def crc32_hex(data: bytes) -> str:
    """CRC-32 (zlib's) as 8 hex digits."""
    return f"{zlib.crc32(data):08x}"


def crc32c_hex(data: bytes) -> str:
    """The checksum the SDK sends by default: CRC-32C as 8 hex digits (the library is checked
    against a bitwise reference in tests/common/test_checksums.py)."""
    return f"{crc32c.crc32c(data):08x}"


def open_ws(uri: str, subprotocols: list[Subprotocol] | None = LIVEFILE) -> connect:
    """A raw connection; in livefile's dialect unless ``subprotocols`` says otherwise (None:
    step-streaming's dialect, as a client that names no subprotocol gets)."""
    return connect(
        uri,
        compression=None,
        max_size=None,
        open_timeout=10,
        close_timeout=5,
        subprotocols=subprotocols,
    )


def get_json(url: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    message = await ws.recv()
    assert isinstance(message, str), f"expected a text message, got {len(message)} bytes"
    result: dict[str, Any] = json.loads(message)
    return result


async def next_status(ws: ClientConnection, timeout: float = STATUS_WAIT) -> dict[str, Any]:
    """The next message, which must be a ``StatusChanged``; its status."""
    message = await asyncio.wait_for(receive_json(ws), timeout)
    assert message["@"] == "StatusChanged", message
    status: dict[str, Any] = message["resourceStatus"]
    return status


async def status_where(
    ws: ClientConnection, timeout: float = STATUS_WAIT, **expected: object
) -> dict[str, Any]:
    """Read statuses until one has the expected fields (an absent field counts as None)."""
    while True:
        status = await next_status(ws, timeout)
        if all(status.get(key) == value for key, value in expected.items()):
            return status


async def start_upload(ws: ClientConnection, metadata: dict[str, Any] | None = None) -> str:
    """Send StartUpload; return the resource id from ReadyForUpload."""
    await ws.send(json.dumps({"@": "StartUpload", "metadata": metadata or META}))
    ready = await receive_json(ws)
    assert ready["@"] == "ReadyForUpload", ready
    return str(ready["resourceId"])


async def finish_upload(ws: ClientConnection, data: bytes) -> dict[str, Any]:
    """Send FinishUpload with the right checksum; return the UploadAcknowledged message."""
    await ws.send(json.dumps({"@": "FinishUpload", "checksum": hashlib.md5(data).hexdigest()}))
    while True:
        message = await receive_json(ws)
        if message["@"] == "UploadAcknowledged":
            return message


async def upgrade(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    path: str,
    subprotocol: str | None = SUBPROTOCOL,
) -> None:
    """Send a WebSocket handshake for ``path`` by hand on a raw connection (in livefile's
    dialect unless ``subprotocol`` is None), and read the 101 answer's head: the bytes after it
    are frames."""
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
    )
    status = await asyncio.wait_for(reader.readline(), STATUS_WAIT)
    assert status.startswith(b"HTTP/1.1 101"), status
    while await asyncio.wait_for(reader.readline(), STATUS_WAIT) != b"\r\n":
        pass


async def wait_closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; return its close code and reason."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


async def upload(ws_url: str, data: bytes, piece: int = 65536) -> str:
    """A whole, correct upload; returns the resource id."""
    async with open_ws(f"{ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws)
        for offset in range(0, len(data), piece):
            await ws.send(data[offset : offset + piece])
        ack = await finish_upload(ws, data)
        assert ack["size"] == len(data)
        return resource_id


async def read_chunk(ws: ClientConnection, start: int, end: int) -> bytes:
    """Request [start, end) and collect the binary reply (statuses in between are skipped)."""
    await ws.send(json.dumps({"@": "RequestChunk", "startOffset": start, "endOffset": end}))
    received = bytearray()
    got_message = False
    while not got_message or len(received) < end - start:
        message = await ws.recv()
        if isinstance(message, str):
            parsed = json.loads(message)
            assert parsed["@"] == "StatusChanged", parsed
            continue
        got_message = True
        received += message
    assert len(received) == end - start
    return bytes(received)


async def download(ws_url: str, resource_id: str) -> bytes:
    async with open_ws(f"{ws_url}/ws/streaming/download/{resource_id}") as ws:
        first = await receive_json(ws)
        size = int(first["resourceStatus"]["currentSize"])
        return await read_chunk(ws, 0, size)


def read_context_events(
    url: str, subscribed: threading.Event, timeout: float = 30.0
) -> list[tuple[str, dict[str, Any]]]:
    """Read a context's event stream until ``contextClosed``; set ``subscribed`` on its first
    line (the server sends a comment once the listener is registered)."""
    events: list[tuple[str, dict[str, Any]]] = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        kind = ""
        for raw in response:
            subscribed.set()
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "contextClosed":
                    break
    return events


STEP_STREAMING_STATUS_FIELDS = ("transferStatus", "currentSize", "numberOfLines")


def plain_status(status: object) -> dict[str, Any]:
    """A status's step-streaming fields only: without livefile's revision, stage, percent and
    error, for tests about what step-streaming's fields say."""
    assert isinstance(status, dict), status
    return {key: status[key] for key in STEP_STREAMING_STATUS_FIELDS if key in status}
