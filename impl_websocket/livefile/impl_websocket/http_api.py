"""The HTTP routes: resource descriptions, upload contexts and their event streams, health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from livefile.api.errors import JobRefusedError, ResourceNotFoundError
from livefile.api.model import (
    ResourceInfo,
    ResourceKind,
    ResourceReference,
    UploadContextInfo,
    WireModel,
)
from livefile.impl_server.contexts import QueueingContextListener, UnknownContextError
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.manager import ResourceManager
from livefile.impl_websocket.access import (
    ACCESS_RESPONSES,
    admin_access,
    context_access,
    derive_access,
    download_access,
)
from livefile.impl_websocket.download_links import DownloadLinks

router = APIRouter()
SSE_KEEPALIVE_SECONDS = 15.0


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str


def _manager(request: Request) -> ResourceManager:
    manager: ResourceManager = request.app.state.manager
    return manager


@router.get("/healthz", response_model=Health, tags=["service"])
async def healthz() -> Health:
    """Liveness: the server answers."""
    return Health(status="ok")


@router.get(
    "/resources/{resource_id}",
    response_model=ResourceInfo,
    response_model_by_alias=True,
    dependencies=[Depends(download_access)],
    responses={
        **ACCESS_RESPONSES,
        404: {"model": ErrorBody, "description": "No resource with that id"},
    },
    tags=["resources"],
)
async def get_resource(resource_id: str, request: Request) -> ResourceInfo:
    """The metadata and current status of a resource."""
    info = await _manager(request).info(resource_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Unknown resource id")
    return info


class DerivationStarted(WireModel):
    """A derived resource the server has begun to produce."""

    id: str
    kind: ResourceKind
    reference: ResourceReference
    source: str


@router.post(
    "/resources/{resource_id}/repack",
    response_model=DerivationStarted,
    response_model_by_alias=True,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(derive_access)],
    responses={
        **ACCESS_RESPONSES,
        404: {"model": ErrorBody, "description": "No resource with that id"},
        503: {"model": ErrorBody, "description": "The job queue is full: try again later"},
    },
    tags=["resources"],
)
async def start_repack(resource_id: str, request: Request) -> DerivationStarted:
    """Repack the archive into one normalized ZIP, a new resource that grows while the archive
    (which may still be uploading) is read; follow it like any resource (see docs/protocol.md)."""
    derivations: Derivations = request.app.state.derivations
    try:
        derived_id = await derivations.start_repack(resource_id)
    except ResourceNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Unknown resource id") from None
    except JobRefusedError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    settings = request.app.state.settings
    links = DownloadLinks(request, request.app.state.token_authority, settings.reference_token_ttl)
    uri = links.uri(derived_id)
    return DerivationStarted(
        id=derived_id,
        kind=ResourceKind.REPACK,
        reference=ResourceReference(uri=uri),
        source=resource_id,
    )


NOT_OPEN = "No open context with that id (the detail says whether it was closed)"


@router.post(
    "/contexts",
    response_model=UploadContextInfo,
    response_model_by_alias=True,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(admin_access)],
    responses=ACCESS_RESPONSES,
    tags=["contexts"],
)
async def open_context(request: Request) -> UploadContextInfo:
    """Open an upload context; uploads join it with ``?streamingUploadContextId=<contextId>``."""
    context_id = await _manager(request).contexts.open()
    return UploadContextInfo(context_id=context_id)


@router.get(
    "/contexts/{context_id}",
    response_model=UploadContextInfo,
    response_model_by_alias=True,
    dependencies=[Depends(context_access)],
    responses={
        **ACCESS_RESPONSES,
        404: {"model": ErrorBody, "description": NOT_OPEN},
    },
    tags=["contexts"],
)
async def describe_context(context_id: str, request: Request) -> UploadContextInfo:
    """An open upload context and how many resources were created in it."""
    count = await _manager(request).contexts.resource_count(context_id)
    if count is None:
        raise await _not_open(request, context_id)
    return UploadContextInfo(context_id=context_id, resource_count=count)


async def _not_open(request: Request, context_id: str) -> HTTPException:
    """404 for a context that is not open, saying whether it was closed."""
    closed = await _manager(request).contexts.was_closed(context_id)
    detail = "Upload context is closed" if closed else "Unknown upload context"
    return HTTPException(status.HTTP_404_NOT_FOUND, detail)


@router.delete(
    "/contexts/{context_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(admin_access)],
    responses={
        **ACCESS_RESPONSES,
        404: {"model": ErrorBody, "description": NOT_OPEN},
    },
    tags=["contexts"],
)
async def close_context(context_id: str, request: Request) -> None:
    """Close an upload context: new uploads to it are refused, its event streams end."""
    try:
        await _manager(request).contexts.close(context_id)
    except UnknownContextError:
        raise await _not_open(request, context_id) from None


@router.get(
    "/contexts/{context_id}/events",
    response_class=StreamingResponse,
    dependencies=[Depends(context_access)],
    responses={
        **ACCESS_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        404: {"model": ErrorBody, "description": NOT_OPEN},
    },
    tags=["contexts"],
)
async def context_events(context_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events of a context: ``resourceCreated``, ``statusChanged``,
    ``creationRefused``, and ``contextClosed`` (the last event)."""
    contexts = _manager(request).contexts
    listener = QueueingContextListener()
    try:
        await contexts.add_listener(context_id, listener)
    except UnknownContextError:
        raise await _not_open(request, context_id) from None

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": livefile upload context events\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(listener.events.get(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    return
                payload = json.dumps(event.data, separators=(",", ":"))
                yield f"event: {event.kind}\ndata: {payload}\n\n".encode()
                if listener.overflowed:
                    yield b"event: overflow\ndata: {}\n\n"
                    return
        finally:
            contexts.remove_listener(context_id, listener)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
