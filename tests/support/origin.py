"""A scripted HTTP/1.1 origin on loopback for transfer tests: each path answers with a script
that writes whatever the test wants on the socket — honest, lying, slow, broken — and the
origin records every request it got."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


def head(status: int = 200, reason: str = "OK", /, **headers: str | int) -> bytes:
    """A response head; ``content_length=3`` becomes ``Content-Length: 3``."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name.replace('_', '-').title()}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def serving(data: bytes, **headers: str | int) -> Script:
    """An honest 200 with a Content-Length."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=len(data), **headers) + data)
        await writer.drain()

    return script


def redirecting(location: str, status: int = 302) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, "Found", location=location, content_length=0))
        await writer.drain()

    return script


class Origin:
    """``async with Origin() as origin:``; ``origin.routes[path] = script``."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls
        self.routes: dict[str, Script] = {}
        self.requests: list[str] = []  # the paths asked for, in order
        self.request_heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    async def __aenter__(self) -> Origin:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            self.request_heads.append(request)
            path = request.split(b" ", 2)[1].decode()
            self.requests.append(path)
            script = self.routes.get(path)
            if script is None:
                writer.write(head(404, "Not Found", content_length=0))
            else:
                await script(writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)
