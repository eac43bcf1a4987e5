"""The blocking facade: the same upload client, run on a private event loop thread."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from types import TracebackType

from livefile.api.messages import DerivedReference
from livefile.api.model import ChecksumAlgorithm
from livefile.api.transfers import TransferStarted
from livefile.client_upload.client import (
    DEFAULT_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
    FALLBACK_MIME_TYPE,
    AsyncUploadClient,
    DerivedCallback,
    ReferenceCallback,
)
from livefile.client_upload.live_file import EndSignal, RotationCallback
from livefile.client_upload.pool import DEFAULT_MAX_IDLE, DEFAULT_MAX_IDLE_TIME
from livefile.client_upload.upload import (
    DEFAULT_RESUME_BUFFER,
    DEFAULT_RESUME_FOR,
    KEEPALIVE_INTERVAL,
    AsyncUpload,
    Data,
    Progress,
    UploadResult,
)
from livefile.impl_common.references import DEFAULT_SERVER
from livefile.impl_common.sync_bridge import LoopThread


class Upload:
    """Blocking twin of ``AsyncUpload``; ``reference`` is known before any data is sent.

    As a context manager: a block that raises aborts the upload, a block that ends normally
    finishes it unless it was finished or aborted inside.
    """

    def __init__(self, thread: LoopThread, upload: AsyncUpload) -> None:
        self._thread = thread
        self._upload = upload

    @property
    def reference(self) -> str:
        return self._upload.reference

    @property
    def resource_id(self) -> str:
        return self._upload.resource_id

    @property
    def sent(self) -> int:
        return self._upload.sent

    @property
    def acknowledged(self) -> int:
        return self._upload.acknowledged

    @property
    def ended(self) -> bool:
        return self._upload.ended

    @property
    def resumes(self) -> int:
        """How many times the upload resumed on a new connection."""
        return self._upload.resumes

    @property
    def derived(self) -> tuple[DerivedReference, ...]:
        """Resources the server derives from this one (``repack=True``, ``image=True``), known
        with the reference."""
        return self._upload.derived

    @property
    def result(self) -> UploadResult | None:
        """The result, once finished."""
        return self._upload.result

    def write(self, data: Data) -> None:
        self._thread.run(self._upload.write(data))

    def keep_alive(self) -> None:
        """See ``AsyncUpload.keep_alive``: the upload goes on though no data comes."""
        self._thread.run(self._upload.keep_alive())

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

    Every call runs the async client on one private event loop thread, which ``close()`` (or
    the end of the ``with`` block) stops after closing the idle connections. Callbacks
    (``on_reference``, ``progress``, a callable ``until``) run on that thread; ``until`` is
    typically a ``threading.Event``.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        context_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        message_size: int = DEFAULT_MESSAGE_SIZE,
        token: str | None = None,
        checksum_algorithm: ChecksumAlgorithm | str = ChecksumAlgorithm.CRC32C,
        max_idle_connections: int = DEFAULT_MAX_IDLE,
        idle_connection_timeout: float = DEFAULT_MAX_IDLE_TIME,
        resume_for: float = DEFAULT_RESUME_FOR,
        resume_buffer: int = DEFAULT_RESUME_BUFFER,
    ) -> None:
        self._client = AsyncUploadClient(
            server,
            context_id=context_id,
            timeout=timeout,
            message_size=message_size,
            token=token,
            checksum_algorithm=checksum_algorithm,
            max_idle_connections=max_idle_connections,
            idle_connection_timeout=idle_connection_timeout,
            resume_for=resume_for,
            resume_buffer=resume_buffer,
        )
        self._thread = LoopThread("livefile-upload")

    @property
    def server(self) -> str:
        return self._client.server

    @property
    def upload_uri(self) -> str:
        return self._client.upload_uri

    @property
    def idle_connections(self) -> int:
        return self._client.idle_connections

    def close(self) -> None:
        """Close the idle connections and stop the event loop thread."""
        if not self._thread.loop.is_closed():
            self._thread.run(self._client.aclose())
        self._thread.close()

    def repack(self, resource: str) -> DerivedReference:
        """See ``AsyncUploadClient.repack``: the server repacks an existing resource (a
        reference or an id on this server; it may still be uploading) into one normalized ZIP,
        a new resource returned at once, which grows as the archive is read."""
        return self._thread.run(self._client.repack(resource))

    def image(self, resource: str) -> DerivedReference:
        """See ``AsyncUploadClient.image``: the server normalizes an existing image resource
        to WebP, a new resource returned at once, produced once the image is COMPLETED, whose
        metadata then carries its ``width``, ``height`` and ``blurhash``."""
        return self._thread.run(self._client.image(resource))

    def fetch(
        self,
        url: str,
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        supports_line_access: bool | None = None,
        repack: bool = False,
        image: bool = False,
    ) -> TransferStarted:
        """See ``AsyncUploadClient.fetch``: the server fetches ``url`` into a new resource."""
        return self._thread.run(
            self._client.fetch(
                url,
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                repack=repack,
                image=image,
            )
        )

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
        repack: bool = False,
        image: bool = False,
    ) -> Upload:
        upload = self._thread.run(
            self._client.start(
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                charset=charset,
                progress=progress,
                repack=repack,
                image=image,
            )
        )
        return Upload(self._thread, upload)

    def upload_bytes(
        self,
        data: Data,
        *,
        filename: str,
        mime_type: str = FALLBACK_MIME_TYPE,
        supports_line_access: bool = False,
        charset: str | None = None,
        on_reference: ReferenceCallback | None = None,
        repack: bool = False,
        image: bool = False,
        on_derived: DerivedCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        return self._thread.run(
            self._client.upload_bytes(
                data,
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                charset=charset,
                on_reference=on_reference,
                repack=repack,
                image=image,
                on_derived=on_derived,
                progress=progress,
            )
        )

    def upload_file(
        self,
        path: str | Path,
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        supports_line_access: bool = False,
        charset: str | None = None,
        on_reference: ReferenceCallback | None = None,
        repack: bool = False,
        image: bool = False,
        on_derived: DerivedCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        return self._thread.run(
            self._client.upload_file(
                path,
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                charset=charset,
                on_reference=on_reference,
                repack=repack,
                image=image,
                on_derived=on_derived,
                progress=progress,
            )
        )

    def upload_stream(
        self,
        chunks: Iterable[Data] | AsyncIterable[Data],
        *,
        filename: str,
        mime_type: str = FALLBACK_MIME_TYPE,
        supports_line_access: bool = False,
        charset: str | None = None,
        on_reference: ReferenceCallback | None = None,
        repack: bool = False,
        image: bool = False,
        on_derived: DerivedCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        return self._thread.run(
            self._client.upload_stream(
                chunks,
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                charset=charset,
                on_reference=on_reference,
                repack=repack,
                image=image,
                on_derived=on_derived,
                progress=progress,
            )
        )

    def upload_live_file(
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
        repack: bool = False,
        image: bool = False,
        on_derived: DerivedCallback | None = None,
        progress: Progress | None = None,
        on_rotation: RotationCallback | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
    ) -> UploadResult:
        return self._thread.run(
            self._client.upload_live_file(
                path,
                until=until,
                filename=filename,
                mime_type=mime_type,
                supports_line_access=supports_line_access,
                charset=charset,
                poll_interval=poll_interval,
                on_reference=on_reference,
                repack=repack,
                image=image,
                on_derived=on_derived,
                progress=progress,
                on_rotation=on_rotation,
                keepalive_interval=keepalive_interval,
            )
        )


__all__ = ["Upload", "UploadClient"]
