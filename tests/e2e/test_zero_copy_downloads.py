"""Download replies leave ``livefile serve`` with sendfile: each message's header goes to the
socket, then its payload straight from the file. What the socket does not take at once must
follow through the transport, in order, with statuses never landing inside a message."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct

import pytest
from websockets.asyncio.client import connect

from livefile.client_upload import AsyncUploadClient
from livefile.impl_common.frame_splitter import header_size, payload_length
from livefile.impl_websocket.zero_copy import binary_frame_header
from tests.e2e.test_http_downloads import read_answer
from tests.support.server import LivefileProcess
from tests.support.wire import LIVEFILE, receive_json, upgrade, upload

WAIT = 30.0


async def test_a_reader_with_a_tiny_window_gets_every_reply_intact(
    server: LivefileProcess,
) -> None:
    data = os.urandom(5_000_000)
    resource_id = await upload(server.ws_url, data)
    sock = socket.socket()
    # A 4 KiB receive window fills at once, so sendfile stops short on every reply.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    uri = f"{server.ws_url}/ws/streaming/download/{resource_id}"
    async with connect(
        uri, sock=sock, compression=None, max_size=None, subprotocols=LIVEFILE
    ) as ws:
        first = await asyncio.wait_for(receive_json(ws), WAIT)
        assert first["resourceStatus"]["currentSize"] == len(data)
        # Requests sent back to back: later replies queue behind a half-sent one.
        ranges = [(0, len(data)), (17, 70_000), (4_999_000, 5_000_000), (0, 16384), (5, 6)]
        for start, end in ranges:
            await ws.send(json.dumps({"@": "RequestChunk", "startOffset": start, "endOffset": end}))
        for start, end in ranges:
            received = bytearray()
            while len(received) < end - start:
                message = await asyncio.wait_for(ws.recv(), WAIT)
                assert isinstance(message, bytes), message
                received += message
            assert received == data[start:end]


async def test_followers_of_a_live_upload_get_statuses_between_whole_messages(
    server: LivefileProcess,
) -> None:
    """Statuses are pushed while replies are being sent; every message must parse, and the
    bytes must add up to the upload, for several followers at once."""
    data = os.urandom(24_000_000)
    async with AsyncUploadClient(server.ws_url) as client:
        live = await client.start(filename="live.bin", mime_type="application/octet-stream")
        resource_id = live.resource_id

        async def follow() -> bytes:
            async with connect(
                f"{server.ws_url}/ws/streaming/download/{resource_id}",
                compression=None,
                max_size=None,
                subprotocols=LIVEFILE,
            ) as ws:
                received = bytearray()
                status = (await asyncio.wait_for(receive_json(ws), WAIT))["resourceStatus"]
                while True:
                    if status["currentSize"] > len(received):
                        await ws.send(json.dumps({"@": "RequestChunk",
                                                  "startOffset": len(received),
                                                  "endOffset": status["currentSize"]}))  # fmt: skip
                        wanted = status["currentSize"]
                        while len(received) < wanted:
                            message = await asyncio.wait_for(ws.recv(), WAIT)
                            if isinstance(message, str):  # a status, between two messages
                                parsed = json.loads(message)
                                assert parsed["@"] == "StatusChanged", parsed
                                status = parsed["resourceStatus"]
                            else:
                                received += message
                    elif status["transferStatus"] in ("COMPLETED", "FAILED"):
                        return bytes(received)
                    else:
                        status = (await asyncio.wait_for(receive_json(ws), WAIT))["resourceStatus"]

        followers = [asyncio.create_task(follow()) for _ in range(4)]
        for offset in range(0, len(data), 1_000_000):
            await live.write(data[offset : offset + 1_000_000])
        await live.finish()
        assert await asyncio.wait_for(asyncio.gather(*followers), WAIT) == [data] * 4


async def test_a_connection_upgraded_after_a_zero_copy_answer_still_closes(
    server: LivefileProcess,
) -> None:
    """A keep-alive connection first gets a range by sendfile (which duplicates its socket),
    then upgrades to a download WebSocket: after the closing handshake the server must end the
    TCP connection, which a leftover duplicate descriptor would prevent."""
    data = os.urandom(200_000)
    resource_id = await upload(server.ws_url, data)
    content = f"/resources/{resource_id}/content"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for _ in range(2):  # the first caches the headers, the second is answered with sendfile
        writer.write(f"GET {content} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-65535\r\n\r\n".encode())
        status, body = await asyncio.wait_for(read_answer(reader), WAIT)
        assert status.startswith(b"HTTP/1.1 206")
        assert body == data[:65536]
    await upgrade(reader, writer, f"/ws/streaming/download/{resource_id}")
    mask = os.urandom(4)
    close_payload = bytes(b ^ mask[i % 4] for i, b in enumerate(struct.pack("!H", 1000)))
    writer.write(b"\x88\x82" + mask + close_payload)
    # The server's status message and its close frame, then the end of the stream.
    rest = await asyncio.wait_for(reader.read(), WAIT)
    assert b"\x88\x02\x03\xe8" in rest
    writer.close()


@pytest.mark.parametrize(
    ("first", "last", "byte"),
    [(True, True, 0x82), (True, False, 0x02), (False, False, 0x00), (False, True, 0x80)],
    ids=["whole", "first", "middle", "last"],
)
@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 1 << 33])
def test_a_frame_header_for_a_message_or_a_fragment_of_one(
    first: bool, last: bool, byte: int, length: int
) -> None:
    """FIN and opcode (BINARY to open a message, CONTINUATION after), and the length as the
    frame splitter's reader reads it back."""
    header = binary_frame_header(length, first, last)
    assert header[0] == byte
    assert header_size(header) == len(header)
    assert payload_length(header) == length
