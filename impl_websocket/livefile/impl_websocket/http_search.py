"""``GET /resources/{id}/search``: the numbers of the lines that contain a text, page by page.

Each request scans a bounded piece of the resource (``SEARCH_SCAN_BYTES``) and returns where the
next one continues, so that a search through a huge log is many short requests, none of which
holds the server for long.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from livefile.api.errors import RangeNotReadableError
from livefile.api.model import ResourceStatus, WireModel
from livefile.impl_server.line_search import search_lines
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.reader import NoLineAccessError
from livefile.impl_websocket.access import ACCESS_RESPONSES, download_access

# What one request reads of the resource at most: 16 MiB took ~75 ms on a busy 2-core machine
# (measured by hand: find_lines over a million 17-byte lines, without a match).
SEARCH_SCAN_BYTES = 16 * 1024 * 1024
MAX_MATCHES = 1000
MAX_QUERY_CHARS = 1000

router = APIRouter(dependencies=[Depends(download_access)], responses=ACCESS_RESPONSES)


class ErrorBody(BaseModel):
    detail: str


class SearchReply(WireModel):
    """The matching lines among ``start .. nextStart - 1``."""

    query: str = Field(description="the text searched for")
    start: int = Field(description="the first line scanned (numbered from 0)")
    matches: list[int] = Field(description="numbers of the lines that contain the text, in order")
    next_start: int = Field(description="where the next request continues the scan")
    scanned_all: bool = Field(
        description="the scan reached the last line published at `status`: nothing more to"
        " find until the resource grows"
    )
    growing: bool = Field(description="the resource had not ended: more lines may come")
    status: ResourceStatus = Field(description="the status the lines were scanned at")


@router.get(
    "/resources/{resource_id}/search",
    response_model=SearchReply,
    response_model_by_alias=True,
    responses={
        400: {"model": ErrorBody, "description": "A start beyond the published lines"},
        404: {"model": ErrorBody, "description": "No resource with that id"},
        409: {"model": ErrorBody, "description": "The resource has no line access"},
    },
    tags=["resources"],
)
async def search(
    resource_id: str,
    request: Request,
    q: str = Query(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        pattern=r"^[^\n]*$",
        description="the text to find within a line (ASCII letters match either case)",
    ),
    start: int = Query(0, ge=0, description="the line to start the scan at (nextStart)"),
    limit: int = Query(
        100, ge=1, le=MAX_MATCHES, description="how many matching lines at most in one answer"
    ),
    case_sensitive: bool = Query(False, alias="caseSensitive"),
) -> SearchReply:
    """Lines from ``start`` on that contain ``q``. One answer scans at most 16 MiB of text and
    returns at most ``limit`` matches; ``nextStart`` says where to continue, ``scannedAll``
    whether the scan reached the last published line."""
    manager: ResourceManager = request.app.state.manager
    reader = await manager.reader(resource_id)
    if reader is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Unknown resource id")
    current = await reader.status()
    try:
        page = await search_lines(
            reader,
            q,
            start,
            limit,
            SEARCH_SCAN_BYTES,
            ignore_case=not case_sensitive,
            status=current,
        )
    except NoLineAccessError:
        raise HTTPException(status.HTTP_409_CONFLICT, "The resource has no line access") from None
    except RangeNotReadableError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"start {start} is beyond the {current.number_of_lines} published lines",
        ) from None
    return SearchReply(
        query=q,
        start=page.start,
        matches=page.matches,
        next_start=page.next_start,
        scanned_all=page.scanned_all,
        growing=not page.status.is_terminal,
        status=page.status,
    )
