"""A TCP proxy in front of a server that can cut every connection through it at once, as a
flaky network does: both sides are reset, nobody sends a close frame. Or freeze them: nothing
goes through any more, but both sides stay open (a half-open connection the server has not
noticed)."""

from __future__ import annotations

import asyncio
from typing import Self


class TcpProxy:
    """A loopback listener whose connections ``_accept`` forwards to ``target_port``; every
    connection's task is cancelled when the ``async with`` block ends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class CuttingProxy(TcpProxy):
    """``async with CuttingProxy(port) as proxy``: clients connect to ``proxy.ws_url``;
    ``cut()`` resets every open connection; new connections go through again at once."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.frozen = asyncio.Event()

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        await super().__aexit__(*exc_info)

    def freeze(self) -> None:
        """Stop forwarding on the connections open now, closing nothing."""
        self.frozen.set()

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.update((writer, upstream))
            await asyncio.gather(
                self._pipe(reader, upstream), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.frozen.is_set():
                await asyncio.Event().wait()  # frozen: hold both sides open, forever
            writer.write(data)
            await writer.drain()
        writer.transport.abort()  # one side ended: end the other at once, no close frame
