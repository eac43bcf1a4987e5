"""The async upload client: bytes, files, streams and live files, reusing idle connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from livefile.api.errors import ConnectionLostError
from livefile.api.messages import DerivedReference
from livefile.api.model import ChecksumAlgorithm, ResourceMetadata
from livefile.api.transfers import TransferRequest, TransferStarted
from livefile.client_upload.connection import bearer_headers
from livefile.client_upload.live_file import (
    EndSignal,
    FollowedFile,
    Rotation,
    RotationCallback,
    RotationKind,
    follow_file,
)
from livefile.client_upload.pool import DEFAULT_MAX_IDLE, DEFAULT_MAX_IDLE_TIME, ConnectionPool
from livefile.client_upload.upload import (
    DEFAULT_RESUME_BUFFER,
    DEFAULT_RESUME_FOR,
    KEEPALIVE_INTERVAL,
    AsyncUpload,
    Data,
    Progress,
    ResumePolicy,
    UploadResult,
)
from livefile.impl_common.close_reason import error_for_http_status
from livefile.impl_common.references import (
    CONTEXT_PARAMETER,
    DEFAULT_SERVER,
    UPLOAD_PATH,
    parse_reference,
    reference_or_id,
    ws_base_url,
)

logger = logging.getLogger("livefile.client_upload")

ReferenceCallback = Callable[[str], None]
"""``on_reference(reference_uri)``: called once, as soon as the server sent the reference."""
DerivedCallback = Callable[[DerivedReference], None]
"""``on_derived(derived)``: called once for each resource the server derives from the upload
(``repack=True``, ``image=True``), right after ``on_reference``."""

DEFAULT_MESSAGE_SIZE = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
# Files are read in pieces this large (a few messages each): fewer thread hops than reading
# one message at a time, and memory stays bounded whatever the file's size.
FILE_READ_SIZE = 4 * 1024 * 1024
FALLBACK_MIME_TYPE = "application/octet-stream"


def guess_mime_type(filename: str) -> str:
    """The MIME type of ``filename`` from its extension, without parameters; else
    ``application/octet-stream``."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed.split(";", 1)[0].strip() if guessed else FALLBACK_MIME_TYPE


class AsyncUploadClient:
    """Uploads to one livefile server: ``async with AsyncUploadClient(url) as client:``.

    ``server`` may be ``ws://``, ``wss://``, ``http://``, ``https://`` or ``host:port``.
    Every upload has a WebSocket connection to itself while it runs, so one client may run many
    uploads at once. A connection whose upload succeeded is kept open for the next upload
    (``keepOpen``): at most ``max_idle_connections`` wait (0: none, every upload opens and
    closes its own), none longer than ``idle_connection_timeout`` seconds. ``async with`` or
    ``aclose()`` closes them; the client stays usable. ``timeout`` bounds every wait: the
    connection, the
    reference, each data message being taken by the transport, and the acknowledgement.
    Messages carry at most ``message_size`` bytes of data. ``token`` is the access token
    (JWT) when the server has access control on; references then carry their own token.
    ``checksum_algorithm`` is how client and server check the bytes end to end: CRC-32C by
    default (computed in hardware, about 13 GB/s), CRC-32 (zlib's), SHA-256 for a
    cryptographic digest, MD5 as step-streaming does.

    An upload whose connection is lost — or whose server restarts — resumes on a new one: it
    reconnects with backoff for up to ``resume_for`` seconds (0: it fails at once, as before)
    and sends again what the server lacks, keeping for that at most ``resume_buffer`` bytes
    sent since the server's last checkpoint (a writer waits for the next one beyond).
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
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if message_size <= 0:
            raise ValueError(f"message_size must be positive, not {message_size}")
        self.server = ws_base_url(server)
        self.context_id = context_id
        self.timeout = timeout
        self.message_size = message_size
        self.token = token
        self.checksum_algorithm = ChecksumAlgorithm(checksum_algorithm)
        if resume_for < 0 or resume_buffer <= 0:
            raise ValueError("resume_for must be >= 0 and resume_buffer positive")
        self.resume_for = resume_for
        self.resume_buffer = resume_buffer
        self._pool = ConnectionPool(max_idle_connections, idle_connection_timeout)
        # A client dropped without aclose(): its idle connections go with it.
        weakref.finalize(self, self._pool.abandon)

    @property
    def upload_uri(self) -> str:
        uri = f"{self.server}{UPLOAD_PATH}"
        if self.context_id:
            uri += f"?{CONTEXT_PARAMETER}={quote(self.context_id, safe='')}"
        return uri

    @property
    def _resume(self) -> ResumePolicy | None:
        if self.resume_for == 0:
            return None
        return ResumePolicy(self.upload_uri, self.token, self.resume_for, self.resume_buffer)

    @property
    def idle_connections(self) -> int:
        """How many connections wait for the next upload now."""
        return self._pool.idle

    async def repack(self, resource: str) -> DerivedReference:
        """Ask the server to repack an existing resource (a reference or an id on this server;
        it may still be uploading) into one normalized ZIP: a new resource, returned at once,
        which grows as the archive is read (``POST /resources/{id}/repack``). Needs a token
        with upload scope that can also read the resource, when access control is on."""
        return await self._derive(resource, "repack")

    async def image(self, resource: str) -> DerivedReference:
        """Ask the server to normalize an existing image resource to WebP: a new resource,
        returned at once, produced once the image is COMPLETED, whose metadata then carries its
        ``width``, ``height`` and ``blurhash`` (``POST /resources/{id}/image``). Same token as
        ``repack``."""
        return await self._derive(resource, "image")

    async def _derive(self, resource: str, what: str) -> DerivedReference:
        parsed = parse_reference(reference_or_id(resource, self.server))
        # The client's own token first: deriving needs upload scope, which a reference's token
        # (download, for that resource alone) never has.
        token = self.token or parsed.token
        url = f"{parsed.http_base}/resources/{parsed.resource_id}/{what}"
        body = await asyncio.to_thread(_post, url, token, self.timeout)
        return DerivedReference.model_validate(body)

    async def fetch(
        self,
        url: str,
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        supports_line_access: bool | None = None,
        repack: bool = False,
        image: bool = False,
    ) -> TransferStarted:
        """Ask the server to fetch ``url`` into a new resource (``POST /transfers``), returned
        at once: follow its reference while it arrives (stage ``downloading``). ``repack`` and
        ``image`` also derive from it at once (``TransferStarted.derived``). Unset names and
        types are the server's choice (the URL's last segment, the type that name suggests).
        Needs a token with upload scope when access control is on."""
        request = TransferRequest(
            url=url,
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            repack=repack,
            image=image,
        )
        body = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        scheme, rest = self.server.split("://", 1)
        base = f"{'https' if scheme == 'wss' else 'http'}://{rest}"
        answer = await asyncio.to_thread(_post, f"{base}/transfers", self.token, self.timeout, body)
        return TransferStarted.model_validate(answer)

    async def aclose(self) -> None:
        """Close the idle connections. Running uploads go on; the client stays usable."""
        await self._pool.aclose()

    async def __aenter__(self) -> AsyncUploadClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(
        self,
        *,
        filename: str,
        mime_type: str,
        supports_line_access: bool = False,
        charset: str | None = None,
        progress: Progress | None = None,
        repack: bool = False,
        image: bool = False,
    ) -> AsyncUpload:
        """Open an upload; its ``reference`` is known when this returns, before any data.

        ``charset``: the text is in that charset and is stored as UTF-8 (a contradicting
        byte-order mark raises ``TranscodingError``). Invalid metadata (e.g. a MIME type with
        parameters) raises ``ValueError`` before anything is sent.
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
            token=self.token,
            checksum_algorithm=self.checksum_algorithm,
            pool=self._pool,
            repack=repack,
            image=image,
            resume=self._resume,
        )

    async def upload_bytes(
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
        """Upload ``data`` (sent in messages of at most ``message_size`` bytes).

        All of it is at hand, so ``StartUpload``, the data and ``FinishUpload`` are sent without
        waiting for the reference: one round trip less per upload. ``on_reference`` is then
        called once the server's reference arrives, after the data went out (with a
        ``charset``, the data goes after the reference, as in ``upload_stream``).
        """
        if charset is None:
            metadata = ResourceMetadata(
                filename=filename, mime_type=mime_type, supports_line_access=supports_line_access
            )
            result = await AsyncUpload.send_whole(
                self.upload_uri,
                metadata,
                data,
                message_size=self.message_size,
                timeout=self.timeout,
                progress=progress,
                token=self.token,
                checksum_algorithm=self.checksum_algorithm,
                pool=self._pool,
                on_reference=on_reference,
                repack=repack,
                image=image,
                resume=self._resume,
            )
            if on_derived is not None:
                for derived in result.derived:
                    on_derived(derived)
            return result
        return await self.upload_stream(
            [data],
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            charset=charset,
            on_reference=on_reference,
            progress=progress,
            repack=repack,
            image=image,
            on_derived=on_derived,
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
        repack: bool = False,
        image: bool = False,
        on_derived: DerivedCallback | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Upload a complete file (for one still being written, see ``upload_live_file``).

        ``filename`` defaults to the file's name, ``mime_type`` to the type guessed from it.
        """
        return await self.upload_live_file(
            path,
            until=_already_ended,
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            charset=charset,
            on_reference=on_reference,
            progress=progress,
            repack=repack,
            image=image,
            on_derived=on_derived,
        )

    async def upload_stream(
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
        """Upload what an iterator (sync or async) of bytes yields, until it is exhausted.

        The iterator is advanced only as fast as the server takes the data, and not at all
        once the server ended the upload (e.g. a quota). A sync iterator's ``next`` runs in a
        thread of its own, since it may block (reading a pipe, say). While the iterator yields
        nothing the upload is kept alive, and an end decided by the server is raised at once
        (``AsyncUpload.send_from``), not when the iterator next yields.
        """
        upload = await self.start(
            filename=filename,
            mime_type=mime_type,
            supports_line_access=supports_line_access,
            charset=charset,
            progress=progress,
            repack=repack,
            image=image,
        )
        async with upload:
            if on_reference is not None:
                on_reference(upload.reference)
            _announce_derived(upload, on_derived)
            if isinstance(chunks, list | tuple):
                for chunk in chunks:
                    await upload.write(chunk)
            elif isinstance(chunks, AsyncIterable):
                await upload.send_from(chunks)
            else:
                await upload.send_from(_advanced_in_threads(iter(chunks)))
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
        repack: bool = False,
        image: bool = False,
        on_derived: DerivedCallback | None = None,
        progress: Progress | None = None,
        on_rotation: RotationCallback | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
    ) -> UploadResult:
        """Upload a file another process is still writing: follow it, polling every
        ``poll_interval`` seconds at its end, until ``until`` says the writer is done; then
        send what is left and finish.

        While the file does not grow the upload is kept alive (an empty message every
        ``keepalive_interval`` seconds, so the server's idle timeout does not end it), and an
        end decided by the server (its shutdown, a limit, the connection lost) is raised at
        once, not when the file next grows.

        ``until``: a callable returning bool (checked on the event loop, so it must be quick),
        or an ``asyncio.Event`` / ``threading.Event`` that is set. The file is opened before
        the upload starts, so a missing file raises ``FileNotFoundError`` and creates nothing.

        Log rotation is followed as ``tail -F`` does: when the file is truncated
        (``copytruncate``) or replaced (renamed and re-created), its new content is uploaded
        from its start after what was sent of the old, and ``on_rotation(Rotation)`` is
        called; without ``on_rotation`` a warning is logged (logger
        ``livefile.client_upload``).
        """
        path = Path(path)
        name = filename or path.name
        source = await asyncio.to_thread(FollowedFile, path)
        try:
            upload = await self.start(
                filename=name,
                mime_type=mime_type or guess_mime_type(name),
                supports_line_access=supports_line_access,
                charset=charset,
                progress=progress,
                repack=repack,
                image=image,
            )

            def rotated(kind: RotationKind) -> None:
                rotation = Rotation(str(path), kind, upload.sent)
                if on_rotation is not None:
                    on_rotation(rotation)
                else:
                    logger.warning("%s", rotation.describe())

            async with upload:
                if on_reference is not None:
                    on_reference(upload.reference)
                _announce_derived(upload, on_derived)
                chunks = follow_file(source, until, poll_interval, FILE_READ_SIZE, rotated)
                await upload.send_from(chunks, keepalive_interval)
                return await upload.finish()
        finally:
            await asyncio.to_thread(source.close)


def _announce_derived(upload: AsyncUpload, on_derived: DerivedCallback | None) -> None:
    if on_derived is not None:
        for derived in upload.derived:
            on_derived(derived)


def _post(
    url: str, token: str | None, timeout: float, body: dict[str, object] | None = None
) -> dict[str, object]:
    headers = bearer_headers(token) or {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail)["detail"]
        raise error_for_http_status(exc.code, str(detail)) from None
    except OSError as exc:
        raise ConnectionLostError(f"Cannot reach {url}: {exc}") from exc


def _already_ended() -> bool:
    return True


async def _advanced_in_threads(iterator: Iterator[Data]) -> AsyncIterator[Data]:
    """What a sync iterator yields, each ``next`` run in a daemon thread: it may block (a quiet
    pipe) as long as it likes, and an upload that ends meanwhile does not wait for it — nor
    does the interpreter's exit, as it would for a thread of the loop's default executor."""
    loop = asyncio.get_running_loop()
    while True:
        future: asyncio.Future[Data | None] = loop.create_future()

        def advance(future: asyncio.Future[Data | None] = future) -> None:
            try:
                item, error = next(iterator, None), None
            except Exception as exc:
                item, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, item, error)

        threading.Thread(target=advance, name="livefile-upload-source", daemon=True).start()
        item = await future
        if item is None:
            return
        yield item


def _settle(
    future: asyncio.Future[Data | None], item: Data | None, error: Exception | None
) -> None:
    if future.done():  # cancelled: the upload ended while the iterator was blocked
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(item)
