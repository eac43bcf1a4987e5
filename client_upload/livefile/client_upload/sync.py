"""The blocking facade: the same upload client, run on a private event loop thread."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from livefile.client_upload.client import AsyncUploadClient
from livefile.client_upload.live_file import EndSignal
from livefile.client_upload.upload import AsyncUpload, Progress, UploadResult
from livefile.impl_common.sync_bridge import LoopThread


class Upload:
    """Blocking twin of ``AsyncUpload``; ``reference`` is known before any data is sent."""

    def __init__(self, thread: LoopThread, upload: AsyncUpload) -> None:
        self._thread = thread
        self._upload = upload

    @property
    def reference(self) -> str:
        return self._upload.reference

    @property
    def resource_id(self) -> str:
        return self._upload.resource_id

    def write(self, data: bytes) -> None:
        self._thread.run(self._upload.write(data))

    def finish(self) -> UploadResult:
        return self._thread.run(self._upload.finish())

    def abort(self, reason: str = "Upload aborted by the client") -> None:
        self._thread.run(self._upload.abort(reason))

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._thread.run(self._upload.__aexit__(exc_type, exc, traceback))


class UploadClient:
    """Blocking twin of ``AsyncUploadClient``: ``with UploadClient(url) as client:``.

    Callbacks (``on_reference``, ``progress``) run on the client's loop thread.
    """

    def __init__(
        self,
        server: str = "ws://127.0.0.1:8080",
        *,
        context_id: str | None = None,
        timeout: float = 30.0,
        message_size: int = 1024 * 1024,
    ) -> None:
        self._client = AsyncUploadClient(
            server, context_id=context_id, timeout=timeout, message_size=message_size
        )
        self._thread = LoopThread("livefile-upload")

    def close(self) -> None:
        self._thread.close()

    def __enter__(self) -> UploadClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(
        self,
        *,
        filename: str,
        mime_type: str,
        supports_line_access: bool = False,
        charset: str | None = None,
        progress: Progress | None = None,
    ) -> Upload:
        upload = self._thread.run(
            self._client.start(
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                charset=charset,
                progress=progress,
            )
        )
        return Upload(self._thread, upload)

    def upload_bytes(self, data: bytes, **options: Any) -> UploadResult:
        return self._thread.run(self._client.upload_bytes(data, **options))

    def upload_file(self, path: str | Path, **options: Any) -> UploadResult:
        return self._thread.run(self._client.upload_file(path, **options))

    def upload_stream(
        self, chunks: Iterable[bytes] | AsyncIterable[bytes], **options: Any
    ) -> UploadResult:
        return self._thread.run(self._client.upload_stream(chunks, **options))

    def upload_live_file(
        self, path: str | Path, *, until: EndSignal, **options: Any
    ) -> UploadResult:
        return self._thread.run(self._client.upload_live_file(path, until=until, **options))


__all__ = ["Upload", "UploadClient"]
