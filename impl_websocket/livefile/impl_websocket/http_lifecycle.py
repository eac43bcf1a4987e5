"""The HTTP routes of a resource's lifecycle: ``DELETE /resources/{id}``, and the listings
``GET /resources`` and ``GET /contexts/{id}/resources`` (newest first, cursor paging). Also the
answer every route gives for a resource that is not there: 410 while its tombstone is kept,
404 otherwise."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from livefile.api.errors import AuthorizationError
from livefile.api.interfaces import CatalogEntry, Cursor, PageQuery
from livefile.api.model import (
    ResourcePage,
    ResourceSummary,
    TransferStatus,
    is_valid_id,
)
from livefile.impl_server.access import Scope
from livefile.impl_server.manager import ResourceManager
from livefile.impl_websocket.access import (
    ACCESS_RESPONSES,
    Credentials,
    QueryToken,
    context_access,
    grant_of,
)

router = APIRouter()
MAX_PAGE = 1000  # a larger limit is capped to this
GONE_DETAIL = "Resource deleted"


class ErrorBody(BaseModel):
    detail: str


NOT_THERE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No resource with that id"},
    410: {"model": ErrorBody, "description": "The resource was deleted (for a while; then 404)"},
}


async def not_there(manager: ResourceManager, resource_id: str) -> HTTPException:
    """410 for a resource deleted lately (its tombstone is kept), else 404."""
    if await manager.gone(resource_id):
        return HTTPException(status.HTTP_410_GONE, GONE_DETAIL)
    return HTTPException(status.HTTP_404_NOT_FOUND, "Unknown resource id")


def _manager(request: Request) -> ResourceManager:
    manager: ResourceManager = request.app.state.manager
    return manager


async def delete_access(
    resource_id: str, request: Request, _bearer: Credentials, _token: QueryToken
) -> None:
    """Deleting: admins, and the token that uploaded the resource while its upload runs. The
    refusal is the same whether the resource exists or not."""
    grant = grant_of(request)
    if grant.is_admin:
        return
    if Scope.UPLOAD in grant.scopes and grant.token_id is not None:
        manager = _manager(request)
        if await manager.uploader(resource_id) == grant.token_id:
            current = await manager.status(resource_id)
            if current is not None and not current.is_terminal:
                return
    raise AuthorizationError(
        "deleting a resource needs admin scope, or the token that uploaded it while it runs"
    )


@router.delete(
    "/resources/{resource_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(delete_access)],
    responses={**ACCESS_RESPONSES, **NOT_THERE},
    tags=["resources"],
)
async def delete_resource(resource_id: str, request: Request) -> None:
    """Delete a resource: its watchers get a FAILED status with ``error.code`` ``deleted`` and
    are closed, a running upload of it is ended, then its bytes, line index and catalog entry
    go. Later requests get 410 while its tombstone is kept, then 404."""
    manager = _manager(request)
    if not is_valid_id(resource_id) or await manager.delete(resource_id) is None:
        raise await not_there(manager, resource_id)


def encode_cursor(cursor: Cursor) -> str:
    text = f"{cursor.created_at!r} {cursor.resource_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        created_at, resource_id = raw.split(" ")
        cursor = Cursor(float(created_at), resource_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        cursor = None
    if cursor is None or not is_valid_id(cursor.resource_id):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Invalid cursor: pass nextCursor as is")
    return cursor


CursorQuery = Annotated[
    str | None, Query(description="nextCursor of the previous page; none for the first page")
]
LimitQuery = Annotated[
    int, Query(ge=1, description=f"resources per page at most (capped at {MAX_PAGE})")
]
StatusQuery = Annotated[
    list[TransferStatus] | None,
    Query(alias="status", description="only resources in these statuses (repeatable)"),
]


async def _page(
    request: Request,
    context_id: str | None,
    statuses: list[TransferStatus] | None,
    cursor: str | None,
    limit: int,
) -> ResourcePage:
    query = PageQuery(
        after=decode_cursor(cursor) if cursor else None,
        limit=min(limit, MAX_PAGE),
        context_id=context_id,
        statuses=frozenset(statuses) if statuses else None,
    )
    page = await _manager(request).page(query)
    return ResourcePage(
        resources=[_summary(entry) for entry in page.entries],
        next_cursor=encode_cursor(page.next) if page.next is not None else None,
    )


def _summary(entry: CatalogEntry) -> ResourceSummary:
    return ResourceSummary(
        id=entry.resource_id,
        metadata=entry.metadata,
        status=entry.status,
        upload_context_id=entry.upload_context_id,
        kind=entry.kind,
        sources=list(entry.sources),
        created_at=entry.created_at,
    )


LISTING_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ACCESS_RESPONSES,
    400: {"model": ErrorBody, "description": "An invalid cursor"},
}


@router.get(
    "/resources",
    response_model=ResourcePage,
    response_model_by_alias=True,
    responses=LISTING_RESPONSES,
    tags=["resources"],
)
async def list_resources(
    request: Request,
    _bearer: Credentials,
    _token: QueryToken,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
    context: Annotated[str | None, Query(description="only this upload context's")] = None,
    statuses: StatusQuery = None,
) -> ResourcePage:
    """Resources, newest first, one page at a time. Every resource needs admin scope; those
    of one ``context``, that context's access."""
    grant = grant_of(request)
    if context is None:
        grant.authorize_admin()
    else:
        grant.authorize_context(context)
    return await _page(request, context, statuses, cursor, limit)


@router.get(
    "/contexts/{context_id}/resources",
    response_model=ResourcePage,
    response_model_by_alias=True,
    dependencies=[Depends(context_access)],
    responses=LISTING_RESPONSES,
    tags=["contexts"],
)
async def list_context_resources(
    context_id: str,
    request: Request,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
    statuses: StatusQuery = None,
) -> ResourcePage:
    """The resources of an upload context (open or closed), newest first, one page at a time."""
    return await _page(request, context_id, statuses, cursor, limit)
