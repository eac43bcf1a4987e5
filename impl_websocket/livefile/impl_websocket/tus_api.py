"""The tus 1.0 endpoint (default ``/files/``) and, experimental, the IETF draft "Resumable Uploads
for HTTP" on the same uploads: the HTTP side of ``livefile.impl_server.tus``.

tus 1.0: core (HEAD, PATCH, OPTIONS), creation, creation-with-upload, creation-defer-length,
termination, checksum (sha1, md5, sha256, crc32c), expiration, concatenation (with
concatenation-unfinished). A request carrying ``Upload-Draft-Interop-Version`` 5 or 6 (what
tus-js-client's ``protocol: 'ietf-draft-03'`` / ``'ietf-draft-05'`` sends) speaks the draft
instead: no ``Tus-Resumable``, ``Upload-Complete: ?1`` marks the request that ends the upload,
HEAD answers ``Upload-Offset`` and ``Upload-Complete``.

Every request but OPTIONS needs upload scope when access control is on (creation, PATCH, HEAD and
DELETE alike; OPTIONS any valid token), and a token bound to an upload context reaches only that
context's uploads. The creation answer names the livefile resource (``X-Livefile-Resource-Id``)
and its download reference (``X-Livefile-Reference``, with a download token when the server
signs), so the upload can be watched from its first byte.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from livefile.api.errors import (
    AccessDeniedError,
    PolicyViolationError,
    QuotaExceededError,
    ServerError,
)
from livefile.api.model import ResourceMetadata
from livefile.impl_common.references import CONTEXT_PARAMETER
from livefile.impl_server.access import Grant
from livefile.impl_server.tus import (
    CHECKSUMS,
    FINAL,
    PARTIAL,
    WHOLE_MOST,
    BodyInterrupted,
    TusError,
    TusUpload,
    TusUploads,
)
from livefile.impl_websocket.access import ACCESS_RESPONSES, grant_of
from livefile.impl_websocket.download_links import DownloadLinks
from livefile.impl_websocket.route_urls import url_for_id

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,"
    "concatenation,concatenation-unfinished"
)
OFFSET_STREAM = "application/offset+octet-stream"
IETF_VERSIONS = frozenset({"5", "6"})  # Upload-Draft-Interop-Version: drafts -03 and -05
DEFAULT_FILENAME = "tus-upload"
DEFAULT_TYPE = "application/octet-stream"
UPLOAD_ROUTE = "tus_upload"


class _Exchange:
    """One request's dialect (tus 1.0 or the IETF draft) and the headers every answer carries."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.ietf_version = request.headers.get("upload-draft-interop-version")
        self.ietf = self.ietf_version is not None
        if self.ietf and self.ietf_version not in IETF_VERSIONS:
            raise TusError(400, f"Upload-Draft-Interop-Version {self.ietf_version} is not spoken")
        if not self.ietf and request.headers.get("tus-resumable") != TUS_VERSION:
            raise TusError(412, f"Tus-Resumable must be {TUS_VERSION}")

    def headers(self) -> dict[str, str]:
        if self.ietf:
            return {"Upload-Draft-Interop-Version": str(self.ietf_version)}
        return {"Tus-Resumable": TUS_VERSION}

    def int_header(self, name: str) -> int | None:
        raw = self.request.headers.get(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise TusError(400, f"{name} must be a non-negative integer, not {raw[:40]!r}")
        return int(raw)

    def upload_complete(self) -> bool:
        """The IETF draft's ``Upload-Complete``: ``?1`` when this request ends the upload."""
        raw = self.request.headers.get("upload-complete")
        if raw not in (None, "?0", "?1"):
            raise TusError(400, "Upload-Complete must be ?0 or ?1")
        return raw == "?1"

    def checksum(self) -> tuple[str, bytes] | None:
        raw = self.request.headers.get("upload-checksum")
        if raw is None:
            return None
        algorithm, _, encoded = raw.strip().partition(" ")
        if algorithm not in CHECKSUMS:
            raise TusError(400, f"Checksum algorithm {algorithm[:20]!r} is not supported")
        try:
            return algorithm, base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise TusError(400, "Upload-Checksum's value is not base64") from None

    def has_body(self) -> bool:
        if self.request.headers.get("transfer-encoding", "").lower() == "chunked":
            return True
        return (self.int_header("content-length") or 0) > 0

    def check_body_size(self, length: int | None) -> None:
        """A creation-with-upload whose body is longer than the upload is refused (413) before
        anything is created."""
        size = self.int_header("content-length")
        if length is not None and size is not None and size > length:
            raise TusError(413, f"The body reaches past the upload's length ({length})")

    def check_body_type(self) -> None:
        """tus PATCHes (and creation-with-upload) carry ``application/offset+octet-stream``."""
        if not self.ietf and self.request.headers.get("content-type") != OFFSET_STREAM:
            raise TusError(415, f"Content-Type must be {OFFSET_STREAM}")

    async def whole_body(self) -> bytes:
        """The request's body, read whole (it said how long it is)."""
        return b"".join([piece async for piece in self.body()])

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self.request.stream():
                if piece:
                    yield piece
        except ClientDisconnect:
            raise BodyInterrupted() from None


# One tus request's handling, once its dialect is known and its token has upload scope.
_Handler = Callable[[_Exchange, Grant, TusUploads, str | None], Awaitable[Response]]


def parse_metadata(raw: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs with unique keys."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, _, encoded = item.partition(" ")
        if not key or key in pairs or not key.isascii() or " " in encoded.strip():
            raise TusError(400, f"Upload-Metadata pair {item[:60]!r} is malformed")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise TusError(400, f"Upload-Metadata value of {key[:40]!r} is not base64") from None
    return pairs


def resource_metadata(pairs: dict[str, str]) -> ResourceMetadata:
    """The resource's metadata from tus's ``filename`` and ``filetype`` (``name`` and ``type``,
    as Uppy sends them, too)."""
    filename = pairs.get("filename") or pairs.get("name") or DEFAULT_FILENAME
    mime_type = pairs.get("filetype") or pairs.get("type") or DEFAULT_TYPE
    try:
        return ResourceMetadata(filename=filename, mime_type=mime_type)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise TusError(400, f"Upload-Metadata: {problem['loc'][0]}: {problem['msg']}") from None


def _expires(upload: TusUpload) -> str:
    return email.utils.formatdate(upload.state.expires_at, usegmt=True)


def _upload_id_of(url: str) -> str:
    """The upload id in one of ``Upload-Concat: final;<url> <url>``'s URLs."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


# What a tus request may be refused with (a text/plain reason), besides access control's answers.
TUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ACCESS_RESPONSES,
    400: _text("Malformed tus headers, an unknown checksum algorithm or draft version"),
    404: _text("No tus upload with that id"),
    409: _text("Upload-Offset is not the upload's offset (the draft: with the right one)"),
    410: _text("The upload has ended FAILED (terminated, expired)"),
    412: _text("Tus-Resumable is not 1.0.0 (answered with Tus-Version)"),
    413: _text("Above Tus-Max-Size, or the body reaches past Upload-Length"),
    415: _text("A tus body without Content-Type: application/offset+octet-stream"),
    423: _text("Another request or process is writing the upload: retry"),
    460: _text("Checksum mismatch: the PATCH's bytes were discarded"),
    503: _text("The server cannot store the upload now (storage, catalog)"),
}


def tus_router(path: str) -> APIRouter:
    """The tus endpoint at ``path`` (e.g. ``/files``): creation there, uploads below it."""
    base = "/" + path.strip("/")
    router = APIRouter(tags=["tus"], default_response_class=Response)

    def uploads(request: Request) -> TusUploads:
        tus: TusUploads = request.app.state.tus
        return tus

    async def guarded(request: Request, upload_id: str | None, handle: _Handler) -> Response:
        exchange = None
        extra: dict[str, str] = {}
        try:
            exchange = _Exchange(request)
            grant = grant_of(request)
            grant.authorize_upload(None)  # upload scope before anything about the upload
            return await handle(exchange, grant, uploads(request), upload_id)
        except AccessDeniedError:
            raise  # answered by the app's handler (401/403 with WWW-Authenticate)
        except TusError as exc:
            status, reason = exc.status, str(exc)
            if status == 409 and exchange is not None and upload_id is not None:
                # The draft lets a client resume from the offset a conflict names.
                offset = await _current_offset(uploads(request), upload_id)
                if offset is not None:
                    extra["Upload-Offset"] = str(offset)
        except BodyInterrupted:
            status, reason = 400, "The request body ended early"  # nobody reads it
        except QuotaExceededError as exc:
            status, reason = 413, str(exc)
        except PolicyViolationError as exc:
            status, reason = 403, str(exc)
        except ServerError as exc:
            status, reason = 503, str(exc)
        headers = exchange.headers() if exchange else {"Tus-Version": TUS_VERSION}
        return Response(reason, status, {**headers, **extra}, media_type="text/plain")

    @router.options(base + "/", status_code=204, responses=ACCESS_RESPONSES)
    @router.options(base + "/{upload_id}", status_code=204, include_in_schema=False)
    async def tus_options(request: Request) -> Response:
        """What this tus server speaks (any valid token: it says nothing about uploads)."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        }
        if (limit := uploads(request).max_size) is not None:
            headers["Tus-Max-Size"] = str(limit)
        return Response(status_code=204, headers=headers)

    @router.post(base + "/", status_code=201, responses=TUS_RESPONSES)
    async def tus_create(request: Request) -> Response:
        """tus creation (with upload, deferred length, concatenation); the answer names the
        livefile resource (``X-Livefile-Resource-Id``, ``X-Livefile-Reference``)."""
        return await guarded(request, None, _create)

    @router.head(base + "/{upload_id}", name=UPLOAD_ROUTE, responses=TUS_RESPONSES)
    async def tus_head(request: Request, upload_id: str) -> Response:
        """The upload's offset (tus ``Upload-Offset``; draft: also ``Upload-Complete``)."""
        return await guarded(request, upload_id, _head)

    @router.patch(base + "/{upload_id}", status_code=204, responses=TUS_RESPONSES)
    async def tus_patch(request: Request, upload_id: str) -> Response:
        """Append at ``Upload-Offset`` (checksum-verified with ``Upload-Checksum``)."""
        return await guarded(request, upload_id, _patch)

    @router.delete(base + "/{upload_id}", status_code=204, responses=TUS_RESPONSES)
    async def tus_delete(request: Request, upload_id: str) -> Response:
        """tus termination: the resource ends FAILED (``terminated``)."""
        return await guarded(request, upload_id, _delete)

    @router.post(
        base + "/{upload_id}",
        status_code=204,
        responses={**TUS_RESPONSES, 405: _text("No X-HTTP-Method-Override: PATCH or DELETE")},
    )
    async def tus_override(request: Request, upload_id: str) -> Response:
        """``X-HTTP-Method-Override: PATCH`` or ``DELETE`` for clients that cannot send them."""
        method = request.headers.get("x-http-method-override", "").upper()
        handlers = {"PATCH": _patch, "DELETE": _delete, "HEAD": _head}
        if method not in handlers:
            return Response("POST here needs X-HTTP-Method-Override", 405, media_type="text/plain")
        return await guarded(request, upload_id, handlers[method])

    return router


async def _current_offset(tus: TusUploads, upload_id: str) -> int | None:
    try:
        return (await tus.describe(upload_id)).offset
    except TusError:
        return None


async def _authorized(grant: Grant, tus: TusUploads, upload_id: str) -> TusUpload:
    upload = await tus.describe(upload_id)
    grant.authorize_upload(upload.context_id)  # a context-bound token: its context's only
    return upload


async def _create(
    exchange: _Exchange, grant: Grant, tus: TusUploads, upload_id: str | None
) -> Response:
    request = exchange.request
    context_id = grant.authorize_upload(request.query_params.get(CONTEXT_PARAMETER) or None)
    raw_metadata = request.headers.get("upload-metadata", "")
    metadata = resource_metadata(parse_metadata(raw_metadata))
    concat = request.headers.get("upload-concat")
    length = exchange.int_header("upload-length")
    deferred = request.headers.get("upload-defer-length")
    if deferred not in (None, "1"):
        raise TusError(400, "Upload-Defer-Length must be 1")
    complete = exchange.upload_complete()
    with_body = exchange.has_body()
    checksum = exchange.checksum()  # refused before anything is created
    if concat is not None and concat.startswith(FINAL + ";"):
        if with_body:
            raise TusError(400, "A final upload takes no body")
        parts = []
        for url in concat[len(FINAL) + 1 :].split():
            parts.append(await _authorized(grant, tus, _upload_id_of(url)))
        if not parts:
            raise TusError(400, "Upload-Concat: final names no partial upload")
        upload = await tus.create_final(metadata, context_id, parts, raw_metadata)
    else:
        if concat not in (None, PARTIAL):
            raise TusError(400, "Upload-Concat must be partial or final;<urls>")
        if exchange.ietf:
            if complete and length is None:
                length = exchange.int_header("content-length")
        elif (length is None) == (deferred is None):
            raise TusError(400, "Give either Upload-Length or Upload-Defer-Length: 1")
        if with_body:
            exchange.check_body_type()
            exchange.check_body_size(length)  # before the upload exists
        size = exchange.int_header("content-length")
        if with_body and length == size and size is not None and size <= WHOLE_MOST:
            # The body is the whole upload: read first, then stored and completed in one go.
            upload = await tus.create_whole(
                metadata,
                context_id,
                await exchange.whole_body(),
                raw_metadata,
                checksum=checksum,
                partial=concat == PARTIAL,
            )
        else:
            upload = await tus.create(
                metadata, context_id, length, raw_metadata, partial=concat == PARTIAL
            )
        if (with_body or complete) and not upload.complete:
            body = exchange.body() if with_body else _nothing()
            upload = await tus.write(
                upload.resource_id,
                0,
                body,
                checksum=checksum,
                last=complete,
                size=size,
            )
    settings = request.app.state.settings
    links = DownloadLinks(request, request.app.state.token_authority, settings.reference_token_ttl)
    headers = {
        **exchange.headers(),
        "Location": url_for_id(request, UPLOAD_ROUTE, "upload_id", upload.resource_id),
        "Upload-Expires": _expires(upload),
        "X-Livefile-Resource-Id": upload.resource_id,
        "X-Livefile-Reference": links.uri(upload.resource_id),
    }
    if upload.state.concat != FINAL:
        headers["Upload-Offset"] = str(upload.offset)
    return Response(status_code=201, headers=headers)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _head(
    exchange: _Exchange, grant: Grant, tus: TusUploads, upload_id: str | None
) -> Response:
    assert upload_id is not None
    upload = await _authorized(grant, tus, upload_id)
    headers = {**exchange.headers(), "Cache-Control": "no-store"}
    state = upload.state
    if state.concat != FINAL or upload.complete:
        headers["Upload-Offset"] = str(upload.offset)
    if exchange.ietf:
        headers["Upload-Complete"] = "?1" if upload.complete else "?0"
        return Response(status_code=204, headers=headers)
    if state.length is not None:
        headers["Upload-Length"] = str(state.length)
    elif state.concat != FINAL:
        headers["Upload-Defer-Length"] = "1"
    if state.metadata:
        headers["Upload-Metadata"] = state.metadata
    if state.concat == PARTIAL:
        headers["Upload-Concat"] = PARTIAL
    elif state.concat == FINAL:
        base = exchange.request.url.path.rsplit("/", 1)[0]
        headers["Upload-Concat"] = "final;" + " ".join(f"{base}/{part}" for part in state.parts)
    if not upload.complete:
        headers["Upload-Expires"] = _expires(upload)
    return Response(status_code=200, headers=headers)


async def _patch(
    exchange: _Exchange, grant: Grant, tus: TusUploads, upload_id: str | None
) -> Response:
    assert upload_id is not None
    await _authorized(grant, tus, upload_id)
    exchange.check_body_type()
    offset = exchange.int_header("upload-offset")
    if offset is None:
        raise TusError(400, "Upload-Offset is missing")
    upload = await tus.write(
        upload_id,
        offset,
        exchange.body(),
        checksum=exchange.checksum(),
        length=exchange.int_header("upload-length"),
        last=exchange.upload_complete(),
        size=exchange.int_header("content-length"),
    )
    headers = {**exchange.headers(), "Upload-Offset": str(upload.offset)}
    if not upload.complete:
        headers["Upload-Expires"] = _expires(upload)
    if exchange.ietf:
        headers["Upload-Complete"] = "?1" if upload.complete else "?0"
    return Response(status_code=204, headers=headers)


async def _delete(
    exchange: _Exchange, grant: Grant, tus: TusUploads, upload_id: str | None
) -> Response:
    assert upload_id is not None
    await _authorized(grant, tus, upload_id)
    await tus.terminate(upload_id)
    return Response(status_code=204, headers=exchange.headers())
