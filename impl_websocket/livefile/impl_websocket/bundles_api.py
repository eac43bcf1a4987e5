"""``POST /bundles``: one ZIP of many resources, each under its path (``bundle_job.py``).

Everything that can be refused is refused here, before the bundle exists: too many members,
unsafe or duplicate paths (checked as the repack engine checks entry names), members the token
may not read (the same 403 whether they exist or not), unknown or FAILED members, bundles as
members, and finished members already larger than the size limit. The bundle is then a
resource like any other, followed and downloaded through its reference.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from livefile.api.errors import JobRefusedError, ResourceNotFoundError
from livefile.api.model import (
    Filename,
    ResourceKind,
    ResourceMetadata,
    ResourceReference,
    TransferStatus,
    WireModel,
)
from livefile.impl_server.bundle.layout import MANIFEST_NAME
from livefile.impl_server.bundle_job import BundleSettings
from livefile.impl_server.derivations import ZIP_MIME_TYPE, Derivations
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.repack import RepackError
from livefile.impl_server.repack.names import NameRegistry, safe_entry_name
from livefile.impl_server.transfer_guard import TransferError
from livefile.impl_server.transfer_http import check_url
from livefile.impl_server.transfer_job import filename_of, start_transfer
from livefile.impl_websocket.access import (
    ACCESS_RESPONSES,
    Credentials,
    QueryToken,
    authorize_read,
    grant_of,
)
from livefile.impl_websocket.download_links import DownloadLinks

router = APIRouter(tags=["bundles"])
MAX_PATH_BYTES = 1024  # the repack engine's default for entry names


class BundleMemberSpec(WireModel):
    """One member: a resource or a URL (fetched by a transfer), and its path inside the ZIP."""

    resource: str | None = Field(default=None, description="the id of a resource")
    url: str | None = Field(
        default=None, description="an http(s) URL the server fetches (a transfer) into the ZIP"
    )
    path: str = Field(description="where it goes in the ZIP: relative, '/'-separated")


class BundleRequest(WireModel):
    filename: Filename = Field(description="the bundle's file name, e.g. build.zip")
    members: list[BundleMemberSpec] = Field(min_length=1)


class BundleCreated(WireModel):
    """A bundle the server has begun to produce."""

    id: str
    kind: ResourceKind
    reference: ResourceReference
    members: int


class ErrorBody(BaseModel):
    detail: str


class Refusal(BaseModel):
    """A refused member or path (``detail`` says which), or a body that is not a bundle
    request at all (FastAPI's list of validation errors)."""

    detail: str | list[dict[str, Any]]


def _fetched_metadata(url: str, path: str) -> ResourceMetadata:
    """A URL member's transfer: named after its path in the bundle (or the URL's own name)."""
    filename = path.rsplit("/", 1)[-1] or filename_of(url)
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return ResourceMetadata(filename=filename, mime_type=guessed or "application/octet-stream")


def _refuse(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail)


def _checked_paths(members: list[BundleMemberSpec], limit: int) -> list[tuple[str, str]]:
    """``(resource or URL, safe path)`` of each member, or a 422 saying which member is
    wrong (a URL member: 400 unless it is an http(s) URL without credentials)."""
    if len(members) > limit:
        raise _refuse(f"A bundle holds at most {limit} members, not {len(members)}")
    names = NameRegistry()
    names.claim(MANIFEST_NAME)  # the bundle's own last entry
    checked = []
    for number, member in enumerate(members):
        if (member.resource is None) == (member.url is None):
            raise _refuse(f"member {number}: give either a resource id or a URL")
        if member.url is not None:
            try:
                check_url(member.url)
            except TransferError as exc:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST, f"member {number}: {exc.code}: {exc.message}"
                ) from None
        try:
            path = safe_entry_name(member.path, MAX_PATH_BYTES)
            if path == MANIFEST_NAME:
                raise _refuse(f"member {number}: {MANIFEST_NAME} is the bundle's own manifest")
            names.claim(path)
        except RepackError as exc:
            raise _refuse(f"member {number}: {exc.message}") from None
        checked.append((member.resource or member.url or "", path))
    return checked


@router.post(
    "/bundles",
    response_model=BundleCreated,
    response_model_by_alias=True,
    status_code=status.HTTP_201_CREATED,
    responses={
        **ACCESS_RESPONSES,
        400: {"model": ErrorBody, "description": "A URL member a transfer refuses at once"},
        404: {"model": ErrorBody, "description": "A member does not exist"},
        422: {"model": Refusal, "description": "A member or path is refused (detail: which)"},
        503: {"model": ErrorBody, "description": "The job queue is full: try again later"},
    },
)
async def create_bundle(
    body: BundleRequest, request: Request, _bearer: Credentials, _token: QueryToken
) -> BundleCreated:
    """One ZIP of the members, each under its path, with MANIFEST.json last; a live resource
    (see docs/protocol.md). Needs upload scope and read access to every member."""
    grant = grant_of(request)
    grant.authorize_upload(None)
    settings: BundleSettings = request.app.state.settings.bundle_settings()
    members = _checked_paths(body.members, settings.max_members)
    urls = {spec.url for spec in body.members if spec.url is not None}
    manager: ResourceManager = request.app.state.manager
    sources = list(dict.fromkeys(resource for resource, _ in members if resource not in urls))
    for resource in sources:
        await authorize_read(grant, manager, resource)
    finished_bytes = 0
    for resource in sources:
        entry = await manager.entry(resource)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Unknown resource {resource[:64]}")
        if entry.kind is ResourceKind.BUNDLE:
            # A finished bundle's bytes are composed from its members' files, not its own.
            raise _refuse(f"member {resource} is a bundle: bundle its members instead")
        current = await manager.status(resource) or entry.status
        if current.transfer_status is TransferStatus.FAILED:
            raise _refuse(f"member {resource} is FAILED: it cannot be bundled")
        finished_bytes += current.current_size
    if finished_bytes > settings.max_bytes:
        raise _refuse(
            f"The members hold {finished_bytes} bytes, more than a bundle's limit of"
            f" {settings.max_bytes}"
        )
    derivations: Derivations = request.app.state.derivations
    try:
        # Every other member is checked: each URL becomes a transfer, a member still growing.
        fetched = {}
        for url in urls:
            path = next(p for member, p in members if member == url)
            started = await start_transfer(derivations, url, _fetched_metadata(url, path))
            fetched[url] = started.resource_id
        members = [(fetched.get(member, member), path) for member, path in members]
        sources = list(dict.fromkeys(resource for resource, _ in members))
        bundle_id = await derivations.start(
            ResourceKind.BUNDLE,
            ResourceMetadata(filename=body.filename, mime_type=ZIP_MIME_TYPE),
            sources=tuple(sources),
            params={
                "filename": body.filename,
                "members": [{"resource": r, "path": p} for r, p in members],
            },
        )
    except ResourceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except JobRefusedError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    app_settings = request.app.state.settings
    links = DownloadLinks(
        request, request.app.state.token_authority, app_settings.reference_token_ttl
    )
    return BundleCreated(
        id=bundle_id,
        kind=ResourceKind.BUNDLE,
        reference=ResourceReference(uri=links.uri(bundle_id)),
        members=len(members),
    )
