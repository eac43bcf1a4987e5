"""Large binary messages are taken out of the incoming bytes before websockets parses them
(``impl_common/frame_splitter.py``); everything else still reaches websockets in order. Through
the real server: uploads that mix both kinds of frame store every byte, and frames websockets
must refuse are still refused."""

from __future__ import annotations

import asyncio
import json
import os
import struct

from livefile.api.model import TransferStatus
from livefile.client_download import AsyncDownloadClient
from tests.support.server import LivefileProcess
from tests.support.wire import (
    META,
    download,
    finish_upload,
    get_json,
    open_ws,
    start_upload,
    upgrade,
)

WAIT = 30.0


async def test_an_upload_mixing_large_messages_pings_and_fragments_is_stored_exactly(
    server: LivefileProcess,
) -> None:
    large, small = os.urandom(1_000_000), os.urandom(100)
    fragments = [os.urandom(200_000), os.urandom(17), os.urandom(300_000)]
    after = os.urandom(65_536)
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws)
        await ws.send(large)  # taken by the splitter
        pong = await ws.ping(b"between")  # a control frame: answered by websockets
        await asyncio.wait_for(pong, WAIT)
        await ws.send(small)  # too small to take: websockets parses it
        await ws.send(fragments)  # one message in three frames, taken fragment by fragment
        await ws.send(after)  # taken again, once the fragmented message has ended
        data = large + small + b"".join(fragments) + after
        ack = await asyncio.wait_for(finish_upload(ws, data), WAIT)
    assert ack["size"] == len(data)
    assert await download(server.ws_url, resource_id) == data


async def test_an_unmasked_large_binary_frame_is_refused_with_1002(
    server: LivefileProcess,
) -> None:
    """A client must mask its frames (RFC 6455 5.1): the splitter leaves an unmasked frame to
    websockets, which closes the connection with a protocol error."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await upgrade(reader, writer, "/ws/streaming/upload")
    start = json.dumps({"@": "StartUpload", "metadata": META}).encode()
    writer.write(masked_frame(0x81, start))
    opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
    assert (opcode, json.loads(payload)["@"]) == (0x1, "ReadyForUpload")
    writer.write(b"\x82\x7e" + struct.pack("!H", 65_000) + os.urandom(65_000))
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
        if opcode == 0x8:
            break
    assert struct.unpack("!H", payload[:2])[0] == 1002
    assert b"mask" in payload[2:]
    writer.close()


async def test_a_message_inside_a_fragmented_one_is_refused_with_1002(
    server: LivefileProcess,
) -> None:
    """RFC 6455 allows only control frames between the fragments of a message: a text frame
    there closes the connection, and the upload is FAILED with the fragment stored."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await upgrade(reader, writer, "/ws/streaming/upload", subprotocol=None)  # step-streaming's
    start = json.dumps({"@": "StartUpload", "metadata": META}).encode()
    writer.write(masked_frame(0x81, start))
    opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
    ready = json.loads(payload)
    assert (opcode, list(ready)) == (0x1, ["@", "reference"])
    writer.write(masked_frame(0x02, b"0123456789"))  # BINARY, FIN=0: a message begins
    writer.write(masked_frame(0x89, b"ping"))  # a ping between fragments is fine
    opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
    assert (opcode, payload) == (0xA, b"ping")
    writer.write(masked_frame(0x81, b"{}"))  # a text message inside it is not
    opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
    assert opcode == 0x8
    assert struct.unpack("!H", payload[:2])[0] == 1002
    assert payload[2:] == (
        b"Expected a continuation frame of the fragmented binary message under way"
    )
    writer.close()
    resource_id = ready["reference"]["uri"].rsplit("/", 1)[1]
    async with asyncio.timeout(WAIT):
        while True:
            _, body = get_json(f"{server.http_url}/resources/{resource_id}")
            if body["status"]["transferStatus"] in ("COMPLETED", "FAILED"):
                break
            await asyncio.sleep(0.05)
    assert (body["status"]["transferStatus"], body["status"]["currentSize"]) == ("FAILED", 10)


async def test_a_message_arriving_with_one_over_the_limit_is_stored_before_the_refusal(
    server: LivefileProcess,
) -> None:
    """A message and, in the same read, the head of one over the size limit: the first is the
    client's and is stored (uvicorn dropped every frame parsed before the one its parser
    refused); the second closes the connection with 1009, the upload FAILED with the bytes
    before it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await upgrade(reader, writer, "/ws/streaming/upload", subprotocol=None)
    start = json.dumps({"@": "StartUpload", "metadata": META}).encode()
    writer.write(masked_frame(0x81, start))
    _, payload = await asyncio.wait_for(read_frame(reader), WAIT)
    resource_id = json.loads(payload)["reference"]["uri"].rsplit("/", 1)[1]
    before = os.urandom(100)
    over_the_limit = b"\x82\xff" + struct.pack("!Q", 2 * 1024 * 1024) + os.urandom(4)
    writer.write(masked_frame(0x82, before) + over_the_limit)  # one write: one read
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
        if opcode == 0x8:
            break
    assert struct.unpack("!H", payload[:2])[0] == 1009
    writer.close()
    reference = f"{server.ws_url}/ws/streaming/download/{resource_id}"
    async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
        end = await watcher.wait_for_end(WAIT)
        assert (end.transfer_status, end.current_size) == (TransferStatus.FAILED, 100)
        assert await watcher.read(0, 100) == before


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([first_byte, 0x80 | len(payload)]) + mask + masked


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: its opcode and payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return first & 0x0F, await reader.readexactly(length)
