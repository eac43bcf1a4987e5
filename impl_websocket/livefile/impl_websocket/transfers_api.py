"""``POST /transfers``: the server fetches a URL into a live resource (``transfer_job.py``)."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, HTTPException, Request, status

from livefile.api.errors import JobRefusedError
from livefile.api.messages import DerivedReference
from livefile.api.model import ResourceMetadata, ResourceReference
from livefile.api.transfers import TransferRequest, TransferStarted
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.transfer_guard import TransferError
from livefile.impl_server.transfer_http import check_url
from livefile.impl_server.transfer_job import (
    DerivationUnavailableError,
    filename_of,
    start_transfer,
)
from livefile.impl_websocket.access import ACCESS_RESPONSES, Credentials, QueryToken, grant_of
from livefile.impl_websocket.download_links import DownloadLinks
from livefile.impl_websocket.http_api import ErrorBody

router = APIRouter()
TEXT_TYPE_PREFIX = "text/"
FALLBACK_MIME_TYPE = "application/octet-stream"
LOG_SUFFIX = ".log"


def metadata_of(body: TransferRequest) -> ResourceMetadata:
    """The transfer's metadata, decided before the remote server answers (the resource exists
    from the 202 on): the name given or the URL's, the type given or the name's, line access
    given or for ``text/*`` types."""
    filename = body.filename or filename_of(body.url)
    mime_type = body.mime_type or _guessed_type(filename)
    lines = body.supports_line_access
    if lines is None:
        lines = mime_type.startswith(TEXT_TYPE_PREFIX)
    return ResourceMetadata(filename=filename, mime_type=mime_type, supports_line_access=lines)


def _guessed_type(filename: str) -> str:
    if filename.lower().endswith(LOG_SUFFIX):  # not in the mimetypes tables, yet the common case
        return "text/plain"
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or FALLBACK_MIME_TYPE


@router.post(
    "/transfers",
    response_model=TransferStarted,
    response_model_by_alias=True,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **ACCESS_RESPONSES,
        400: {"model": ErrorBody, "description": "Not an http(s) URL without credentials"},
        501: {"model": ErrorBody, "description": "A derivation this server does not produce"},
        503: {"model": ErrorBody, "description": "The job queue is full: try again later"},
    },
    tags=["transfers"],
)
async def start(
    body: TransferRequest, request: Request, _bearer: Credentials, _token: QueryToken
) -> TransferStarted:
    """Fetch ``url`` into a new resource, followed like any other while it arrives (stage
    ``downloading``, ``percent`` from the ``Content-Length``); ``repack`` and ``image`` derive
    from it at once. Needs upload scope. See docs/protocol.md, "Remote transfers"."""
    grant_of(request).authorize_upload(None)
    try:
        check_url(body.url)
    except TransferError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{exc.code}: {exc.message}") from None
    derivations: Derivations = request.app.state.derivations
    try:
        started = await start_transfer(
            derivations,
            body.url,
            metadata_of(body),
            repack=body.repack,
            image=body.image,
        )
    except DerivationUnavailableError as exc:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from None
    except JobRefusedError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    settings = request.app.state.settings
    links = DownloadLinks(request, request.app.state.token_authority, settings.reference_token_ttl)
    return TransferStarted(
        id=started.resource_id,
        reference=ResourceReference(uri=links.uri(started.resource_id)),
        url=body.url,
        derived=[
            DerivedReference(
                id=derived_id, kind=kind, reference=ResourceReference(uri=links.uri(derived_id))
            )
            for derived_id, kind in started.derived
        ],
    )
