"""A dropped slow consumer leaves nothing behind (issue 14, item 7): its transport is aborted,
so the server's sockets and descriptors fall back to what they were while the clients still hold
their ends, and what ``--max-downloads`` counts is what the server really holds."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable

import psutil
from websockets.asyncio.client import ClientConnection

from tests.conftest import ServerFactory
from tests.support.metrics import scrape_async, wait_for_metrics
from tests.support.server import LivefileProcess
from tests.support.wire import open_ws, upload, wait_closed

READERS = 200
SEND_TIMEOUT = 2.0
SIZE = 8 * 1024 * 1024
DOWNLOADS = 'livefile_connections{kind="download"}'
WAIT = 30.0


def masked_text_frame(text: str) -> bytes:
    """One client-to-server WebSocket text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def reader_that_never_reads(port: int, resource_id: str) -> socket.socket:
    """A download connection that will read nothing: its receive buffer is tiny, so the
    server's sends to it block as soon as it asks for something (``ask_for_everything``)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/streaming/download/{resource_id} HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing after the head is read
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def ask_for_everything(sock: socket.socket) -> None:
    request = {"@": "RequestChunk", "startOffset": 0, "endOffset": SIZE}
    sock.sendall(masked_text_frame(json.dumps(request)))


def server_process(server: LivefileProcess) -> list[psutil.Process]:
    assert server.process is not None
    parent = psutil.Process(server.process.pid)
    return [parent, *parent.children(recursive=True)]


def established(server: LivefileProcess) -> int:
    """The server's ESTABLISHED TCP connections on its port."""
    return sum(
        1
        for process in server_process(server)
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_ESTABLISHED
        and connection.laddr
        and connection.laddr.port == server.port
    )


def descriptors(server: LivefileProcess) -> int:
    return sum(process.num_fds() for process in server_process(server))


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)  # polling the kernel's tables, not synchronisation


async def test_dropped_slow_consumers_release_their_sockets_and_descriptors_at_once(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        "--send-timeout", str(SEND_TIMEOUT), "--max-downloads", str(READERS)
    )  # fmt: skip
    resource_id = await upload(server.ws_url, os.urandom(SIZE), piece=1024 * 1024)
    await scrape_async(server.http_url)
    base_sockets, base_descriptors = established(server), descriptors(server)

    slow: list[socket.socket] = []
    try:
        for _ in range(READERS):
            slow.append(await asyncio.to_thread(reader_that_never_reads, server.port, resource_id))
        await wait_for_metrics(server.http_url, lambda s: s[DOWNLOADS] == READERS)
        assert established(server) >= base_sockets + READERS
        # The limit holds while they are counted.
        async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as extra:
            assert (await wait_closed(extra))[0] == 1013
        for sock in slow:  # all at once: the server's sends to each of them block now
            ask_for_everything(sock)
        assert descriptors(server) >= base_descriptors + READERS

        # After the send timeout every one of them is dropped, and with it its socket and its
        # open file, although the clients still hold their ends.
        await until(
            lambda: established(server) <= base_sockets + 2,
            SEND_TIMEOUT + 15,
            f"the server still holds {established(server) - base_sockets} dropped sockets",
        )
        await until(
            lambda: descriptors(server) <= base_descriptors + 4,
            5,
            f"the server still holds {descriptors(server) - base_descriptors} descriptors",
        )
        assert (await scrape_async(server.http_url))[DOWNLOADS] == 0
        assert server.log().count("disconnecting a slow consumer") == READERS
        assert all(sock.fileno() != -1 for sock in slow)

        # What the limit counts is what the server holds: READERS new watchers get in, one
        # more does not, and the server never holds more than the limit allows.
        watchers: list[ClientConnection] = []
        try:
            for _ in range(READERS):
                watchers.append(
                    await open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}")
                )
            await wait_for_metrics(server.http_url, lambda s: s[DOWNLOADS] == READERS)
            async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as extra:
                assert (await wait_closed(extra))[0] == 1013
            assert established(server) <= base_sockets + READERS + 2
        finally:
            await asyncio.gather(*(watcher.close() for watcher in watchers))
    finally:
        for sock in slow:
            sock.close()
