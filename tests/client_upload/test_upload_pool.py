"""The upload SDK's pool of kept-open connections, against real servers: uploads reuse idle
connections (counted by a TCP forwarder in front of the server), and a connection that died
while idle never fails an upload."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from livefile.api.errors import ProtocolError
from livefile.client_upload import AsyncUploadClient, UploadClient
from tests.client_upload.watch import WAIT, read_range, wait_for_end
from tests.conftest import ServerFactory
from tests.support.metrics import wait_for_metrics
from tests.support.server import LivefileProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.wire import crc32c_hex, download

UPLOADS = 'livefile_connections{kind="upload"}'


class Forwarder(TcpProxy):
    """A TCP forwarder to a server's port that counts the connections it accepts.

    ``go_silent()`` makes every open connection look alive to the client while it is dead:
    the server's side is closed at once, the client's side only when the client sends
    something (then it is reset) — as after a NAT or firewall forgot the connection.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.accepted = 0
        self._upstreams: set[asyncio.StreamWriter] = set()
        self._silent: set[asyncio.StreamWriter] = set()  # upstreams closed by go_silent()

    def go_silent(self) -> None:
        for upstream in self._upstreams:
            self._silent.add(upstream)
            upstream.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._upstreams.add(upstream)
            await asyncio.gather(
                self._to_server(reader, upstream),
                self._to_client(up_reader, writer, upstream),
                return_exceptions=True,
            )
        finally:
            writer.transport.abort()
            if upstream is not None:
                self._upstreams.discard(upstream)
                upstream.transport.abort()
            self._tasks.discard(task)

    async def _to_server(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            if upstream in self._silent:
                return  # the client spoke on a dead connection: it is reset (see _accept)
            upstream.write(data)
            await upstream.drain()
        if upstream not in self._silent:
            upstream.write_eof()

    async def _to_client(
        self,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
    ) -> None:
        while data := await up_reader.read(65536):
            writer.write(data)
            await writer.drain()
        if upstream not in self._silent:
            writer.write_eof()  # the server ended the connection; a silent one stays open


@pytest.fixture(scope="module")
def counted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    """A server for the tests that count its upload connections, which no test of another
    module may hold (each test leaves none open)."""
    server = LivefileProcess(tmp_path_factory.mktemp("counted") / "data").start()
    yield server
    server.kill()


@pytest.fixture
async def forwarder(server: LivefileProcess) -> AsyncIterator[Forwarder]:
    async with Forwarder(server.port) as forwarder:
        yield forwarder


async def test_sequential_uploads_of_every_kind_reuse_one_connection(
    forwarder: Forwarder, server: LivefileProcess, tmp_path: Path
) -> None:
    files = [os.urandom(10_240) for _ in range(20)]
    path = tmp_path / "file.bin"
    path.write_bytes(files[0])
    async with AsyncUploadClient(forwarder.ws_url, timeout=WAIT) as client:
        results = [
            await client.upload_bytes(data, filename=f"{i}.bin") for i, data in enumerate(files)
        ]
        from_file = await client.upload_file(path)
        from_stream = await client.upload_stream([b"ab", b"cd"], filename="s.bin")
        async with await client.start(filename="x.txt", mime_type="text/plain") as upload:
            await upload.write(b"started")
        assert client.idle_connections == 1
    assert forwarder.accepted == 1
    for result, data in zip(results, files, strict=True):
        assert (result.size, result.checksum) == (len(data), crc32c_hex(data))
        assert result.status.transfer_status.value == "COMPLETED"
    assert len({result.resource_id for result in results}) == len(files)
    assert await download(server.ws_url, results[-1].resource_id) == files[-1]
    assert await download(server.ws_url, from_file.resource_id) == files[0]
    assert await download(server.ws_url, from_stream.resource_id) == b"abcd"
    assert upload.result is not None
    assert await download(server.ws_url, upload.resource_id) == b"started"


async def test_the_pool_is_closed_at_the_end_of_the_client(
    counted_server: LivefileProcess,
) -> None:
    server = counted_server
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        for index in range(3):
            await client.upload_bytes(b"kept", filename=f"{index}.bin")
        assert (await wait_for_metrics(server.http_url, lambda m: True))[UPLOADS] == 1
    assert client.idle_connections == 0
    await wait_for_metrics(server.http_url, lambda m: m[UPLOADS] == 0)
    # The client stays usable after aclose(), and closes again.
    await client.upload_bytes(b"again", filename="again.bin")
    await client.aclose()
    await wait_for_metrics(server.http_url, lambda m: m[UPLOADS] == 0)


def test_the_sync_client_reuses_and_closes_its_connections(counted_server: LivefileProcess) -> None:
    server = counted_server
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        results = [client.upload_bytes(b"sync %d" % i, filename=f"{i}.bin") for i in range(5)]
        assert client.idle_connections == 1
    assert [result.size for result in results] == [6] * 5
    asyncio.run(wait_for_metrics(server.http_url, lambda m: m[UPLOADS] == 0))
    client.close()  # closing twice is harmless


async def test_concurrent_uploads_work_and_keep_at_most_max_idle(
    forwarder: Forwarder, server: LivefileProcess
) -> None:
    files = [os.urandom(4096) for _ in range(32)]
    async with AsyncUploadClient(forwarder.ws_url, timeout=WAIT, max_idle_connections=4) as client:
        for _ in range(3):
            results = await asyncio.gather(
                *(client.upload_bytes(data, filename=f"{i}.bin") for i, data in enumerate(files))
            )
            assert [result.size for result in results] == [4096] * 32
            assert client.idle_connections == 4
    # 32 connections for the first round; each later round reuses the 4 kept ones.
    assert forwarder.accepted == 32 + 2 * (32 - 4)
    assert await download(server.ws_url, results[7].resource_id) == files[7]


async def test_without_pooling_every_upload_has_its_own_connection(
    forwarder: Forwarder,
) -> None:
    async with AsyncUploadClient(forwarder.ws_url, timeout=WAIT, max_idle_connections=0) as client:
        for index in range(3):
            await client.upload_bytes(b"own", filename=f"{index}.bin")
        assert client.idle_connections == 0
    assert forwarder.accepted == 3


async def test_a_failed_upload_does_not_return_its_connection(
    forwarder: Forwarder, server: LivefileProcess
) -> None:
    async with AsyncUploadClient(forwarder.ws_url, timeout=WAIT) as client:
        await client.upload_bytes(b"first", filename="first.bin")
        with pytest.raises(ValueError, match="given up"):
            async with await client.start(filename="x.bin", mime_type="a/b") as upload:
                await upload.write(b"partial")
                raise ValueError("given up")
        assert client.idle_connections == 0  # the pooled one was taken, then closed
        ended = await wait_for_end(server.ws_url, upload.resource_id)
        assert (ended["transferStatus"], ended["currentSize"]) == ("FAILED", 7)
        result = await client.upload_bytes(b"next", filename="next.bin")
    assert forwarder.accepted == 2
    assert await read_range(server.ws_url, result.resource_id, 0, 4) == b"next"


async def test_a_server_restart_between_uploads_does_not_fail_the_next(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    first = start_server()
    restarted: LivefileProcess | None = None
    try:
        async with AsyncUploadClient(first.ws_url, timeout=WAIT) as client:
            before = await client.upload_bytes(b"before", filename="before.bin")
            assert client.idle_connections == 1
            # SIGTERM: the server closes the idle connection with 1001 on its way out.
            await asyncio.to_thread(first.stop)
            restarted = LivefileProcess(tmp_path / "data", port=first.port).start()
            after = await client.upload_bytes(b"after", filename="after.bin")
            # SIGKILL: no close frame at all, only the TCP connection's end.
            restarted.kill()
            restarted = LivefileProcess(tmp_path / "data", port=first.port).start()
            last = await client.upload_bytes(b"last", filename="last.bin")
        assert await download(restarted.ws_url, before.resource_id) == b"before"
        assert await download(restarted.ws_url, after.resource_id) == b"after"
        assert await download(restarted.ws_url, last.resource_id) == b"last"
    finally:
        if restarted is not None:
            restarted.kill()


async def test_a_connection_that_died_while_idle_is_replaced_without_failing(
    forwarder: Forwarder, server: LivefileProcess
) -> None:
    async with AsyncUploadClient(forwarder.ws_url, timeout=WAIT) as client:
        await client.upload_bytes(b"first", filename="first.bin")
        forwarder.go_silent()  # the idle connection still looks open to the client
        result = await client.upload_bytes(b"second", filename="second.bin")
    assert forwarder.accepted == 2
    assert await download(server.ws_url, result.resource_id) == b"second"


async def test_idle_connections_are_closed_after_the_idle_timeout(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    client = AsyncUploadClient(server.ws_url, timeout=WAIT, idle_connection_timeout=0.2)
    await client.upload_bytes(b"short-lived", filename="a.bin")
    await wait_for_metrics(server.http_url, lambda m: m[UPLOADS] == 0)
    assert client.idle_connections == 0
    await client.upload_bytes(b"new", filename="b.bin")
    await client.aclose()


async def test_an_idle_connection_closed_by_the_server_is_not_reused(
    start_server: ServerFactory,
) -> None:
    server = start_server("--start-timeout", "0.3")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        await client.upload_bytes(b"one", filename="one.bin")
        await wait_for_metrics(server.http_url, lambda m: m[UPLOADS] == 0)
        result = await client.upload_bytes(b"two", filename="two.bin")
    assert await download(server.ws_url, result.resource_id) == b"two"


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_idle_connections"):
        AsyncUploadClient("ws://127.0.0.1:1", max_idle_connections=-1)
    with pytest.raises(ValueError, match="idle_connection_timeout"):
        AsyncUploadClient("ws://127.0.0.1:1", idle_connection_timeout=0)


async def test_aborting_a_finished_upload_leaves_its_pooled_connection_alone(
    server: LivefileProcess,
) -> None:
    # A finished upload's connection belongs to the pool: aborting that upload afterwards
    # must not close it under the next upload.
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        upload = await client.start(filename="a.bin", mime_type="a/b")
        await upload.finish()
        await upload.abort()
        assert client.idle_connections == 1
        result = await client.upload_bytes(b"still fine", filename="b.bin")
        with pytest.raises(ProtocolError, match="already finished"):
            await upload.write(b"late")
    assert result.size == 10
