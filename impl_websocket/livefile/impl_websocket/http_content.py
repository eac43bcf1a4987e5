"""HTTP downloads of resources: whole files, byte ranges, and growing resources followed live.

Finished resources are plain HTTP downloads (Range, HEAD, ETag, If-Range, If-None-Match,
If-Modified-Since). A growing resource is served up to its published size, or followed until it
ends: a FAILED end aborts the connection so that a client like curl reports an error instead of
keeping a silently truncated file. Bytes are read with positional reads of 4 MiB in a worker
thread: small reads through Python are what make naive file responses slow.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceStatus, TransferStatus, WireModel
from livefile.impl_common.http_ranges import (
    Unsatisfiable,
    content_disposition,
    etag_matches,
    http_date,
    not_modified_since,
    parse_range,
    range_start,
)
from livefile.impl_server.manager import ResourceManager
from livefile.impl_websocket.access import ACCESS_RESPONSES, download_access

logger = logging.getLogger(__name__)
# Every route here reads the resource in its path.
router = APIRouter(dependencies=[Depends(download_access)], responses=ACCESS_RESPONSES)
READ_SIZE = 4 * 1024 * 1024
STATUS_HEADER = "X-Livefile-Transfer-Status"
SIZE_HEADER = "X-Livefile-Current-Size"


class FollowAborted(Exception):
    """A followed resource ended FAILED: the response must not end like a complete one."""


class ResourceBody(Response):
    """Bytes ``[start, stop)`` of a resource, or from ``start`` on following it (``stop=None``)."""

    def __init__(
        self,
        manager: ResourceManager,
        resource_id: str,
        start: int,
        stop: int | None,
        status_code: int,
        headers: Mapping[str, str],
        head_only: bool,
    ) -> None:
        super().__init__(status_code=status_code, headers=dict(headers))
        if "Content-Length" not in headers:
            # Response adds "content-length: 0" for its empty body; a followed body has none.
            self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._manager = manager
        self._resource_id = resource_id
        self._start = start
        self._stop = stop
        self._head_only = head_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not self._head_only:
            if self._stop is None:
                try:
                    await self._follow(send)
                except FollowAborted as exc:
                    # Returning without the final body message makes the server drop the
                    # connection without the last chunk: the client sees a broken transfer.
                    logger.warning("aborting a followed download: %s", exc)
                    return
            else:
                await self._send_range(send, self._start, self._stop)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_range(self, send: Send, start: int, stop: int) -> None:
        for offset in range(start, stop, READ_SIZE):
            data = await self._manager.read(
                self._resource_id, offset, min(stop, offset + READ_SIZE)
            )
            await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _follow(self, send: Send) -> None:
        subscription = await self._manager.subscribe(self._resource_id)
        if subscription is None:
            raise FollowAborted("resource vanished")
        sent = self._start
        try:
            async for current in subscription:
                if current.current_size > sent:
                    await self._send_range(send, sent, current.current_size)
                    sent = current.current_size
                if current.transfer_status is TransferStatus.FAILED:
                    raise FollowAborted(f"resource {self._resource_id} FAILED at {sent} bytes")
        finally:
            subscription.close()


def resource_headers(entry: CatalogEntry, current: ResourceStatus) -> dict[str, str]:
    headers = {
        "Content-Type": entry.metadata.mime_type,
        "Content-Disposition": content_disposition(entry.metadata.filename),
        "Accept-Ranges": "bytes",
        STATUS_HEADER: current.transfer_status.value,
        SIZE_HEADER: str(current.current_size),
        "Cache-Control": "no-cache",
    }
    if current.transfer_status is TransferStatus.COMPLETED:
        headers["Last-Modified"] = http_date(entry.updated_at)
        if entry.checksum:
            headers["ETag"] = f'"{entry.checksum}"'
    return headers


async def _entry_and_status(
    manager: ResourceManager, resource_id: str
) -> tuple[CatalogEntry, ResourceStatus]:
    entry = await manager.entry(resource_id)
    current = await manager.status(resource_id)
    if entry is None or current is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Unknown resource id")
    return entry, current


class ErrorBody(BaseModel):
    detail: str


class RangeNotSatisfiable(WireModel):
    detail: str
    current_size: int
    transfer_status: TransferStatus


def _header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_STRING: dict[str, Any] = {"type": "string"}
_STATUS_HEADERS = {
    STATUS_HEADER: _header(
        "The transfer status", {"type": "string", "enum": [s.value for s in TransferStatus]}, True
    ),
    SIZE_HEADER: _header("The published size", {"type": "integer", "minimum": 0}, True),
}
_VALIDATORS = {
    "ETag": _header("The checksum (COMPLETED only)", _STRING),
    "Last-Modified": _header("When it completed (COMPLETED only)", _STRING),
}
# The bytes come with the resource's own media type, whatever it is.
_BYTES = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The bytes (followed until the end for a growing resource)",
        "content": _BYTES,
        "headers": {**_STATUS_HEADERS, **_VALIDATORS},
    },
    206: {
        "description": "The requested range",
        "content": _BYTES,
        "headers": {
            **_STATUS_HEADERS,
            **_VALIDATORS,
            "Content-Range": _header("bytes a-b/size, or a-b/* while growing", _STRING, True),
        },
    },
    304: {
        "description": "The client's copy is current",
        "headers": {STATUS_HEADER: _STATUS_HEADERS[STATUS_HEADER], **_VALIDATORS},
    },
    404: {"model": ErrorBody, "description": "No resource with that id"},
    416: {
        "model": RangeNotSatisfiable,
        "description": "The range is not within the (published) size",
        "headers": {
            **_STATUS_HEADERS,
            "Content-Range": _header("bytes */size, or bytes */* while growing", _STRING, True),
        },
    },
}


# Two routes rather than one with methods=["GET", "HEAD"], which would give both operations of
# the OpenAPI description the same operationId.
@router.get(
    "/resources/{resource_id}/content",
    response_class=Response,
    responses=CONTENT_RESPONSES,
    tags=["resources"],
)
@router.head(
    "/resources/{resource_id}/content",
    response_class=Response,
    responses=CONTENT_RESPONSES,
    tags=["resources"],
)
async def get_content(
    resource_id: str,
    request: Request,
    follow: bool = Query(False, description="keep streaming a growing resource until it ends"),
    range_header: str | None = Header(
        None, alias="Range", description="one byte range, bytes=a-b, a- or -n (RFC 9110)"
    ),
    if_range: str | None = Header(None, description="the range applies only to this version"),
    if_none_match: str | None = Header(None, description="ETags the client has (304 if current)"),
    if_modified_since: str | None = Header(None, description="an HTTP date (304 if not newer)"),
) -> Response:
    """The bytes of a resource; a growing one is followed until it ends (see docs/protocol.md)."""
    manager: ResourceManager = request.app.state.manager
    entry, current = await _entry_and_status(manager, resource_id)
    headers = resource_headers(entry, current)
    head_only = request.method == "HEAD"
    size = current.current_size
    growing = not current.is_terminal
    etag = headers.get("ETag")

    if current.transfer_status is TransferStatus.COMPLETED and (
        (etag and etag_matches(if_none_match, etag))
        or (if_none_match is None and not_modified_since(if_modified_since, entry.updated_at))
    ):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=_conditional(headers))

    if if_range is not None and not _if_range_holds(if_range, headers):
        range_header = None
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        if growing and not follow:
            return _not_yet(headers, size)
        if not growing:
            return _unsatisfiable(
                headers, f"bytes */{size}", f"The range is not within the {size} bytes"
            )
        wanted = None  # follow from a start the resource has not reached yet
        start_beyond = range_start(range_header)
    else:
        start_beyond = None

    if growing and (follow or wanted is None):
        start = start_beyond if start_beyond is not None else (wanted.start if wanted else 0)
        headers.pop("Content-Length", None)
        headers["X-Accel-Buffering"] = "no"
        return ResourceBody(manager, resource_id, start, None, 200, headers, head_only)

    if wanted is None:
        headers["Content-Length"] = str(size)
        return ResourceBody(manager, resource_id, 0, size, 200, headers, head_only)
    total = "*" if growing else str(size)
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.stop - 1}/{total}"
    headers["Content-Length"] = str(wanted.length)
    return ResourceBody(manager, resource_id, wanted.start, wanted.stop, 206, headers, head_only)


def _conditional(headers: dict[str, str]) -> dict[str, str]:
    keep = ("ETag", "Last-Modified", "Cache-Control", STATUS_HEADER)
    return {key: value for key, value in headers.items() if key in keep}


def _if_range_holds(if_range: str, headers: dict[str, str]) -> bool:
    """RFC 9110 13.1.5: the range applies only if the validator still identifies the file."""
    etag = headers.get("ETag")
    if if_range.strip().startswith(('"', "W/")):
        return etag is not None and etag_matches(if_range, etag, weak=False)
    return if_range.strip() == headers.get("Last-Modified")


def _not_yet(headers: dict[str, str], size: int) -> Response:
    return _unsatisfiable(
        headers,
        "bytes */*",
        f"The resource is still growing: {size} bytes are readable so far;"
        " ask again later or add ?follow=true to wait for the bytes",
    )


def _unsatisfiable(headers: dict[str, str], content_range: str, detail: str) -> Response:
    headers["Content-Range"] = content_range
    body = {
        "detail": detail,
        "currentSize": int(headers[SIZE_HEADER]),
        "transferStatus": headers[STATUS_HEADER],
    }
    headers.pop("Content-Type", None)  # the body is JSON, not the resource
    headers.pop("Content-Disposition", None)
    return JSONResponse(body, status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE, headers=headers)


class LinesReply(WireModel):
    start: int
    lines: list[str]
    status: ResourceStatus


@router.get(
    "/resources/{resource_id}/lines",
    response_model=LinesReply,
    response_model_by_alias=True,
    responses={
        400: {"model": ErrorBody, "description": "Lines outside the available ones"},
        404: {"model": ErrorBody, "description": "No resource with that id"},
        409: {"model": ErrorBody, "description": "The resource has no line access"},
    },
    tags=["resources"],
)
async def get_lines(
    resource_id: str,
    request: Request,
    start: int = Query(0, ge=0),
    count: int = Query(100, ge=0),
) -> LinesReply:
    """Lines ``start .. start+count-1`` (with their line breaks) and the status they were read
    at; at most ~1 MiB of text per reply, so fewer lines may come back than were asked for."""
    manager: ResourceManager = request.app.state.manager
    _, current = await _entry_and_status(manager, resource_id)
    total = current.number_of_lines
    if total is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "The resource has no line access")
    if start + count > total:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"Requested lines [{start}, {start + count}) are not within [0, {total}]",
        )
    max_bytes = request.app.state.settings.max_lines_reply_bytes
    raw = await manager.read_lines(resource_id, current, start, count, max_bytes)
    lines = [line.decode("utf-8", errors="replace") for line in raw]
    return LinesReply(start=start, lines=lines, status=current)


@router.get(
    "/resources/{resource_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        404: {"model": ErrorBody, "description": "No resource with that id"},
    },
    tags=["resources"],
)
async def status_events(resource_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events ``status``: the current status at once, then every change; the stream
    ends after the terminal one."""
    manager: ResourceManager = request.app.state.manager
    subscription = await manager.subscribe(resource_id)
    if subscription is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Unknown resource id")

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for current in subscription:
                payload = current.model_dump_json(by_alias=True)
                yield f"event: status\ndata: {payload}\n\n".encode()
        finally:
            subscription.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
