"""HTTP downloads of resources: whole files, byte ranges, and growing resources followed live.

Finished resources are plain HTTP downloads (Range, HEAD, ETag, If-Range, If-None-Match,
If-Modified-Since). A growing resource is followed until it ends, and a FAILED end, or a FAILED
resource, drops the connection before the answer's end, so that no client (curl, wget, aria2c)
keeps a wrong or truncated file as if it were complete. What to answer is decided by
``content_plan.plan_content``; the bytes come through the resource's ``Reader``, in pieces of
4 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from livefile.api.errors import RangeNotReadableError, ResourceFailedError
from livefile.api.model import ResourceStatus, TransferStatus, WireModel
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.reader import NoLineAccessError, Reader
from livefile.impl_websocket.access import ACCESS_RESPONSES, download_access
from livefile.impl_websocket.content_plan import (
    NEXT_LINE_HEADER,
    SIZE_HEADER,
    STATUS_HEADER,
    ContentPlan,
    ContentRequest,
    ResourceFacts,
    plan_content,
)
from livefile.impl_websocket.http_lifecycle import NOT_THERE, not_there
from livefile.impl_websocket.presentation import Disposition
from livefile.impl_websocket.zero_copy import HTTP_ABORT_EXTENSION

logger = logging.getLogger(__name__)
# Every route here reads the resource in its path.
router = APIRouter(dependencies=[Depends(download_access)], responses=ACCESS_RESPONSES)


class ResourceBody(Response):
    """Delivers a ``ContentPlan``'s bytes: ``[start, stop)`` at once, or as they are published
    (``waits``), or from ``start`` on following the resource until it ends.

    An answer that cannot be finished truthfully — the resource FAILED, or ended before the
    bytes the answer promised — is dropped without its final message: the connection is cut
    without the last chunk (or short of the ``Content-Length``), and the client sees a broken
    transfer instead of a complete-looking file. A client that leaves while waiting for bytes
    ends the answer at once: it must not hold its subscription until the upload ends."""

    def __init__(self, reader: Reader, plan: ContentPlan) -> None:
        super().__init__(status_code=plan.status, headers=plan.headers())
        if plan.follows:
            # Response adds "content-length: 0" for its empty body; a followed body has none.
            self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._reader = reader
        self._plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plan = self._plan
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not plan.head_only:
            if plan.waits:
                finished = await _until_disconnect(receive, self._send_as_published(send))
                if finished is None:
                    return  # the client went away: nothing to finish, nothing to report
                if not finished:
                    await _abort(scope)
                    return
            else:
                assert plan.stop is not None
                async for data in self._reader.iter_published(plan.start, plan.stop):
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_as_published(self, send: Send) -> bool:
        """Send the plan's bytes as they are published; False when the answer must be dropped
        unfinished."""
        plan = self._plan
        sent = plan.start
        try:
            following = cast(AsyncGenerator[bytes], self._reader.follow(plan.start))
            async with aclosing(following) as pieces:
                async for data in pieces:
                    if plan.stop is not None:
                        data = data[: plan.stop - sent]
                    sent += len(data)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    if plan.stop is not None and sent >= plan.stop:
                        return True
        except ResourceFailedError as exc:
            logger.warning("dropping an unfinished download: %s", exc)
            return False
        final = await self._reader.status()
        if final.current_size < (plan.stop if plan.stop is not None else plan.start):
            logger.warning(
                "dropping an unfinished download: %s ended at %d bytes, short of the range",
                self._reader.resource_id,
                final.current_size,
            )
            return False
        return True


class CutShortProblem(Response):
    """A problem's JSON body sent without the body's end (see ``ContentPlan.cut_short``)."""

    def __init__(self, plan: ContentPlan) -> None:
        super().__init__(status_code=plan.status, headers=plan.headers())
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-type", b"application/json"))
        self._body = json.dumps(plan.problem).encode()
        self._head_only = plan.head_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self._head_only:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.body", "body": self._body, "more_body": True})
        await _abort(scope)  # the connection ends without the body's end


async def _until_disconnect(receive: Receive, sending: Awaitable[bool]) -> bool | None:
    """``sending``'s result, or None when the client disconnected first (``sending`` is then
    cancelled)."""

    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(sending)
    watching = asyncio.ensure_future(disconnect())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if pumping.cancelled():
        return None
    return pumping.result()


async def _abort(scope: Scope) -> None:
    """End the connection without the response's end, so that the client sees a broken
    transfer (curl exits 18). Under ``livefile serve`` the TCP connection is aborted first: the
    server then takes the unfinished response for a disconnect, not for an application error.
    Under other servers, returning without the final body message does the same, with their
    log."""
    abort = scope.get("extensions", {}).get(HTTP_ABORT_EXTENSION)
    if abort is not None:
        abort()
        await asyncio.sleep(0)  # the loop runs connection_lost, scheduled by abort


async def _reader_and_status(
    manager: ResourceManager, resource_id: str
) -> tuple[Reader, ResourceStatus]:
    reader = await manager.reader(resource_id)
    if reader is None:
        raise await not_there(manager, resource_id)
    return reader, await reader.status()


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
        "description": "The requested range (waited for, on a growing resource)",
        "content": _BYTES,
        "headers": {
            **_STATUS_HEADERS,
            **_VALIDATORS,
            "Content-Range": _header("bytes a-b/size, or a-b/* while growing", _STRING, True),
        },
    },
    409: {
        "model": RangeNotSatisfiable,
        "description": "The resource FAILED (its bytes: ?partial=true); the connection is dropped"
        " after this body, without its end, so that no client takes it for the file",
        "headers": _STATUS_HEADERS,
    },
    304: {
        "description": "The client's copy is current",
        "headers": {STATUS_HEADER: _STATUS_HEADERS[STATUS_HEADER], **_VALIDATORS},
    },
    **NOT_THERE,
    416: {
        "model": RangeNotSatisfiable,
        "description": "The range is not within the (published) size",
        "headers": {
            **_STATUS_HEADERS,
            "Content-Range": _header("bytes */size, or bytes */* while growing", _STRING, True),
        },
    },
}


DISPOSITION_DESCRIPTION = (
    "Content-Disposition to send: inline (shown by a browser) or attachment (saved); by"
    " default inline for text, images and PDF, attachment otherwise"
)


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
    partial: bool = Query(
        False,
        description="a FAILED resource's bytes, or a growing one's published bytes without"
        " waiting (the answer may not be the whole file)",
    ),
    range_header: str | None = Header(
        None, alias="Range", description="one byte range, bytes=a-b, a- or -n (RFC 9110)"
    ),
    if_range: str | None = Header(None, description="the range applies only to this version"),
    if_none_match: str | None = Header(None, description="ETags the client has (304 if current)"),
    if_modified_since: str | None = Header(None, description="an HTTP date (304 if not newer)"),
    disposition: Annotated[Disposition | None, Query(description=DISPOSITION_DESCRIPTION)] = None,
) -> Response:
    """The bytes of a resource; a growing one is followed until it ends (see docs/protocol.md)."""
    reader, current = await _reader_and_status(request.app.state.manager, resource_id)
    plan = plan_content(
        ResourceFacts.of(reader.entry, current),
        ContentRequest(
            head_only=request.method == "HEAD",
            follow=follow,
            partial=partial,
            range=range_header,
            if_range=if_range,
            if_none_match=if_none_match,
            if_modified_since=if_modified_since,
            disposition=disposition,
        ),
    )
    if plan.cut_short:
        return CutShortProblem(plan)
    if plan.problem is not None:
        return JSONResponse(plan.problem, status_code=plan.status, headers=plan.headers())
    if plan.status == status.HTTP_304_NOT_MODIFIED:
        return Response(status_code=plan.status, headers=plan.headers())
    return ResourceBody(reader, plan)


class LinesReply(WireModel):
    """One page of lines and where the next one starts."""

    start: int = Field(description="the first line's number (lines are numbered from 0)")
    lines: list[str] = Field(description="the lines, each with its line break")
    next_start: int = Field(description="where the next page starts: start + len(lines)")
    more: bool = Field(description="lines from nextStart on can be read now")
    growing: bool = Field(
        description="the resource had not ended: lines may still come after the last one"
    )
    status: ResourceStatus = Field(description="the status the lines were read at")


_NEXT_LINE = _header("Where the next page starts (nextStart)", {"type": "integer"}, True)


@router.get(
    "/resources/{resource_id}/lines",
    response_model=LinesReply,
    response_model_by_alias=True,
    responses={
        200: {
            "description": "A page of lines",
            "headers": {
                NEXT_LINE_HEADER: _NEXT_LINE,
                "Link": _header(
                    '<…/lines?start=N&count=M>; rel="next" while a next page can exist', _STRING
                ),
            },
        },
        400: {"model": ErrorBody, "description": "A start beyond the published lines"},
        **NOT_THERE,
        409: {"model": ErrorBody, "description": "The resource has no line access"},
    },
    tags=["resources"],
)
async def get_lines(
    resource_id: str,
    request: Request,
    response: Response,
    start: int = Query(
        0,
        ge=0,
        description="the first line, numbered from 0; at most the number of published lines",
    ),
    count: int = Query(
        100, ge=0, description="how many lines at most; fewer at the end or past ~1 MiB"
    ),
) -> LinesReply:
    """Lines ``start .. start+count-1`` (numbered from 0, each with its line break) and the
    status they were read at. A page ends at the last published line and holds at most ~1 MiB
    of text, so fewer lines may come back than were asked for: ``nextStart`` (and the
    ``X-Livefile-Next-Line`` header) says where the next page starts, ``more`` whether lines
    from there can be read now, ``growing`` whether the resource may still get more."""
    reader, current = await _reader_and_status(request.app.state.manager, resource_id)
    max_bytes = request.app.state.settings.max_lines_reply_bytes
    try:
        page = await reader.read_lines(start, count, max_bytes, clamp=True, status=current)
    except NoLineAccessError:
        raise HTTPException(status.HTTP_409_CONFLICT, "The resource has no line access") from None
    except RangeNotReadableError as exc:
        total = current.number_of_lines
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{exc}: start must be at most {total} (lines are numbered from 0)",
        ) from None
    response.headers[NEXT_LINE_HEADER] = str(page.next_start)
    if page.more or page.growing:
        # Relative (RFC 8288 resolves it against the request's URL): right behind a proxy too.
        following = request.url.include_query_params(start=page.next_start, count=count)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    lines = [line.decode("utf-8", errors="replace") for line in page.lines]
    return LinesReply(
        start=page.start,
        lines=lines,
        next_start=page.next_start,
        more=page.more,
        growing=page.growing,
        status=current,
    )


@router.get(
    "/resources/{resource_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        **NOT_THERE,
    },
    tags=["resources"],
)
async def status_events(resource_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events ``status``: the current status at once, then every change; the stream
    ends after the terminal one."""
    manager: ResourceManager = request.app.state.manager
    subscription = await manager.subscribe(resource_id)
    if subscription is None:
        raise await not_there(manager, resource_id)

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
