"""The async upload client: bytes, files, streams and live files, each on its own connection."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from livefile.api.model import ResourceMetadata
from livefile.client_upload.live_file import EndSignal, follow_file
from livefile.client_upload.upload import AsyncUpload, Progress, UploadResult
from livefile.impl_common.references import CONTEXT_PARAMETER, UPLOAD_PATH, ws_base_url

ReferenceCallback = Callable[[str], None]
DEFAULT_MESSAGE_SIZE = 1024 * 1024
FILE_READ_SIZE = 4 * 1024 * 1024


def guess_mime_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


class AsyncUploadClient:
    """Uploads to one livefile server: ``async with AsyncUploadClient(url) as client:``.

    The client holds configuration only; every upload is its own WebSocket connection.
    """

    def __init__(
        self,
        server: str = "ws://127.0.0.1:8080",
        *,
        context_id: str | None = None,
        timeout: float = 30.0,
        message_size: int = DEFAULT_MESSAGE_SIZE,
    ) -> None:
        self.server = ws_base_url(server)
        self.context_id = context_id
        self.timeout = timeout
        self.message_size = message_size

    @property
    def upload_uri(self) -> str:
        uri = f"{self.server}{UPLOAD_PATH}"
        if self.context_id:
            uri += f"?{CONTEXT_PARAMETER}={quote(self.context_id, safe='')}"
        return uri

    async def __aenter__(self) -> AsyncUploadClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def start(
        self,
        *,
        filename: str,
        mime_type: str,
        supports_line_access: bool = False,
        charset: str | None = None,
        progress: Progress | None = None,
    ) -> AsyncUpload:
        """Open an upload; its ``reference`` is known when this returns, before any data.

        ``charset``: the text is in that charset and is stored as UTF-8 (a contradicting
        byte-order mark raises ``TranscodingError``).
        """
        metadata = ResourceMetadata(
            filename=filename, mime_type=mime_type, supports_line_access=supports_line_access
        )
        return await AsyncUpload.start(
            self.upload_uri,
            metadata,
            message_size=self.message_size,
            timeout=self.timeout,
            progress=progress,
            charset=charset,
        )

    async def upload_bytes(
        self,
        data: bytes,
        *,
        filename: str,
        mime_type: str = "application/octet-stream",
        supports_line_access: bool = False,
        charset: str | None = None,
        on_reference: ReferenceCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        return await self.upload_stream(
            [data],
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            charset=charset,
            on_reference=on_reference,
            progress=progress,
        )

    async def upload_file(
        self,
        path: str | Path,
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        supports_line_access: bool = False,
        charset: str | None = None,
        on_reference: ReferenceCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Upload a file that is complete (for one still being written, see upload_live_file)."""
        path = Path(path)
        return await self.upload_live_file(
            path,
            until=lambda: True,
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            charset=charset,
            on_reference=on_reference,
            progress=progress,
        )

    async def upload_stream(
        self,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        *,
        filename: str,
        mime_type: str = "application/octet-stream",
        supports_line_access: bool = False,
        charset: str | None = None,
        on_reference: ReferenceCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Upload what an iterator (sync or async) of bytes yields, until it is exhausted."""
        upload = await self.start(
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            charset=charset,
            progress=progress,
        )
        async with upload:
            if on_reference is not None:
                on_reference(upload.reference)
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    await upload.write(chunk)
            elif isinstance(chunks, list | tuple):
                for chunk in chunks:
                    await upload.write(chunk)
            else:
                # next() of a sync iterator may block (it may read a pipe): keep it off the loop.
                iterator = iter(chunks)
                while (item := await asyncio.to_thread(_next_or_none, iterator)) is not None:
                    await upload.write(item)
            return await upload.finish()

    async def upload_live_file(
        self,
        path: str | Path,
        *,
        until: EndSignal,
        filename: str | None = None,
        mime_type: str | None = None,
        supports_line_access: bool = False,
        charset: str | None = None,
        poll_interval: float = 0.05,
        on_reference: ReferenceCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Upload a file another process is still writing: follow it (polling every
        ``poll_interval`` seconds) until ``until`` says the writer is done, then send what is
        left and finish. ``until``: a callable returning bool, or an asyncio/threading Event.
        """
        path = Path(path)
        name = filename or path.name
        upload = await self.start(
            filename=name,
            mime_type=mime_type or guess_mime_type(name),
            supports_line_access=supports_line_access,
            charset=charset,
            progress=progress,
        )
        async with upload:
            if on_reference is not None:
                on_reference(upload.reference)
            async for chunk in follow_file(path, until, poll_interval, FILE_READ_SIZE):
                await upload.write(chunk)
            return await upload.finish()


def _next_or_none(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)
