"""A minimal tus 1.0 client for the peer benchmarks: raw HTTP/1.1 on asyncio streams.

One ``TusConnection`` is one keep-alive TCP connection; requests on it run one after the other.
A file body goes out with ``loop.sendfile`` (``os.sendfile`` on a plain socket transport), so
the client spends next to no CPU on the bytes. No dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

TUS_VERSION = "1.0.0"
OFFSET_STREAM = "application/offset+octet-stream"


class HttpError(RuntimeError):
    pass


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body


class TusConnection:
    """One keep-alive connection to a tus endpoint, e.g. ``http://127.0.0.1:1080/files/``.

    ``async with TusConnection(endpoint) as tus: path, offset = await tus.upload(data)``
    """

    def __init__(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http:// endpoint is needed, not {endpoint!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> TusConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | Path = b"",
    ) -> Response:
        """Send one request (a ``Path`` body is sent with sendfile) and read its response."""
        if self._reader is None or self._writer is None:
            raise RuntimeError("use the connection inside `async with`")
        length = body.stat().st_size if isinstance(body, Path) else len(body)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if isinstance(body, Path):
            self._writer.write(head)
            await self._writer.drain()
            with body.open("rb") as source:
                try:
                    await asyncio.get_running_loop().sendfile(self._writer.transport, source)
                except NotImplementedError:  # uvloop has no sendfile: plain writes instead
                    while piece := source.read(1024 * 1024):
                        self._writer.write(piece)
                        await self._writer.drain()
        else:
            self._writer.write(head + body)
            await self._writer.drain()
        return await self._response(head_only=method == "HEAD")

    async def _response(self, *, head_only: bool) -> Response:
        assert self._reader is not None
        status_line = await self._reader.readline()
        if not status_line:
            raise HttpError("connection closed before the response")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status in (204, 304) or 100 <= status < 200:
            return Response(status, headers, b"")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await self._reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while await self._reader.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                body += await self._reader.readexactly(size)
                await self._reader.readexactly(2)
            return Response(status, headers, bytes(body))
        length = int(headers.get("content-length", "0"))
        return Response(status, headers, await self._reader.readexactly(length))

    async def create(self, length: int, body: bytes | Path | None = None) -> Response:
        """Creation POST; with a ``body``, creation-with-upload (the bytes in the same POST)."""
        headers = {"Tus-Resumable": TUS_VERSION, "Upload-Length": str(length)}
        if body is None:
            response = await self.request("POST", self.path, headers)
        else:
            headers["Content-Type"] = OFFSET_STREAM
            response = await self.request("POST", self.path, headers, body)
        if response.status != 201 or "location" not in response.headers:
            raise HttpError(f"creation answered {response.status}: {response.body[:200]!r}")
        return response

    def upload_path(self, response: Response) -> str:
        """The path of the upload a creation response's ``Location`` names."""
        return urlsplit(response.headers["location"]).path

    async def patch(self, upload_path: str, offset: int, body: bytes | Path) -> int:
        """One PATCH from ``offset``; the server's new ``Upload-Offset``."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_STREAM,
        }
        response = await self.request("PATCH", upload_path, headers, body)
        if response.status != 204:
            raise HttpError(f"PATCH answered {response.status}: {response.body[:200]!r}")
        return int(response.headers["upload-offset"])

    async def offset(self, upload_path: str) -> int:
        """HEAD: the server's ``Upload-Offset`` of an upload."""
        response = await self.request("HEAD", upload_path, {"Tus-Resumable": TUS_VERSION})
        if response.status != 200:
            raise HttpError(f"HEAD answered {response.status}")
        return int(response.headers["upload-offset"])

    async def upload(self, body: bytes | Path, *, with_creation: bool = True) -> tuple[str, int]:
        """A whole upload: creation-with-upload (one POST) or creation then one PATCH.

        Returns the upload's path and the offset the server acknowledged.
        """
        length = body.stat().st_size if isinstance(body, Path) else len(body)
        if with_creation:
            response = await self.create(length, body)
            return self.upload_path(response), int(response.headers["upload-offset"])
        upload_path = self.upload_path(await self.create(length))
        return upload_path, await self.patch(upload_path, 0, body)
