"""A tiny uploader speaking the raw upload protocol with ``websockets``.

For tests of the download side that must not depend on the upload SDK:

    async with RawUpload(server.ws_url) as upload:   # StartUpload → ReadyForUpload
        upload.reference                              # the download URI
        await upload.write(data)                      # binary messages of at most 256 KiB
        ack = await upload.finish()                   # FinishUpload → UploadAcknowledged
    # or: await upload.drop() — the TCP connection ends without a close frame (FAILED)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.wire import LIVEFILE

PIECE = 256 * 1024  # below the server's 1 MiB limit on binary messages
WAIT = 30.0


class RawUpload:
    """One upload connection; the resource exists (INITIATED) once the context is entered."""

    def __init__(
        self,
        ws_url: str,
        *,
        filename: str = "data.bin",
        mime_type: str = "application/octet-stream",
        supports_line_access: bool = False,
        options: dict[str, Any] | None = None,
        token: str | None = None,
        context_id: str | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.context_id = context_id
        self.options = options or {}  # more StartUpload fields, e.g. {"repack": True}
        self.ready: dict[str, Any] = {}
        self.token = token
        self.metadata = {
            "filename": filename,
            "mimeType": mime_type,
            "supportsLineAccess": supports_line_access,
        }
        self.reference = ""
        self.resource_id = ""
        self._ws: ClientConnection | None = None
        self._md5 = hashlib.md5()
        self._acknowledged: asyncio.Future[dict[str, Any]] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RawUpload:
        joins = f"?streamingUploadContextId={self.context_id}" if self.context_id else ""
        self._ws = await connect(
            f"{self.ws_url}/ws/streaming/upload{joins}",
            compression=None,
            subprotocols=LIVEFILE,
            open_timeout=WAIT,
            close_timeout=5,
            additional_headers={"Authorization": f"Bearer {self.token}"} if self.token else None,
        )
        start = {"@": "StartUpload", "metadata": self.metadata, **self.options}
        await self._ws.send(json.dumps(start))
        ready = self.ready = json.loads(await asyncio.wait_for(self._ws.recv(), WAIT))
        assert ready["@"] == "ReadyForUpload", ready
        self.reference = ready["reference"]["uri"]
        self.resource_id = ready["resourceId"]
        self._acknowledged = asyncio.get_running_loop().create_future()
        # Statuses reach the uploader too: read them all, so that the server is never held
        # up by an uploader that does not read.
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._connection.close()
        if self._reader is not None:
            await self._reader

    @property
    def _connection(self) -> ClientConnection:
        assert self._ws is not None, "use RawUpload as an async context manager"
        return self._ws

    async def write(self, data: bytes) -> None:
        """Send ``data`` as binary messages of at most ``PIECE`` bytes."""
        self._md5.update(data)
        for offset in range(0, len(data), PIECE):
            await self._connection.send(data[offset : offset + PIECE])

    async def trickle(self, data: bytes, seconds: float, pieces: int = 20) -> None:
        """Send ``data`` in ``pieces`` writes spread over about ``seconds``."""
        step = -(-len(data) // pieces)
        for offset in range(0, len(data), step):
            await self.write(data[offset : offset + step])
            await asyncio.sleep(seconds / pieces)  # pacing the producer

    async def finish(self) -> dict[str, Any]:
        """Send FinishUpload with the MD5 of everything written; returns UploadAcknowledged."""
        checksum = self._md5.hexdigest()
        await self._connection.send(json.dumps({"@": "FinishUpload", "checksum": checksum}))
        assert self._acknowledged is not None
        return await asyncio.wait_for(asyncio.shield(self._acknowledged), WAIT)

    async def drop(self) -> None:
        """End the TCP connection at once, as a crashed uploader would: no close frame, no
        FinishUpload. The server keeps the bytes and marks the resource FAILED."""
        self._connection.transport.abort()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self._acknowledged is not None
        try:
            async for message in self._connection:
                if isinstance(message, str) and json.loads(message)["@"] == "UploadAcknowledged":
                    self._acknowledged.set_result(json.loads(message))
        except ConnectionClosed:
            pass
        finally:
            if not self._acknowledged.done():
                code, reason = self._connection.close_code, self._connection.close_reason
                self._acknowledged.set_exception(
                    ConnectionError(f"upload closed with {code} {reason!r}, not acknowledged")
                )
                # Nobody may ask for the acknowledgement (a dropped upload): mark it seen.
                self._acknowledged.exception()


async def upload(ws_url: str, data: bytes, **metadata: Any) -> str:
    """Upload ``data`` whole; returns the reference of the COMPLETED resource."""
    async with RawUpload(ws_url, **metadata) as raw:
        await raw.write(data)
        ack = await raw.finish()
        assert ack["size"] == len(data), ack
        return raw.reference
