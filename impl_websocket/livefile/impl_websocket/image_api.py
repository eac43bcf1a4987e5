"""The image routes: ``POST /resources/{id}/image`` (the image normalized to WebP, a derived
resource whose metadata carries its width, height and BlurHash) and ``POST /blurhashes`` (the
BlurHash, width and height of many resources at once, cached; see ``images/blurhashes.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import Field

from livefile.api.model import ResourceError, ResourceKind, WireModel
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.images.blurhashes import (
    MAX_RESOURCES_PER_LOOKUP,
    Blurhashes,
    BlurhashUnavailableError,
)
from livefile.impl_websocket.access import (
    ACCESS_RESPONSES,
    authorize_read,
    derive_access,
    grant_of,
)
from livefile.impl_websocket.counters import COUNTERS
from livefile.impl_websocket.http_api import (
    DERIVATION_RESPONSES,
    DerivationStarted,
    derivation_started,
)

router = APIRouter()


@router.post(
    "/resources/{resource_id}/image",
    response_model=DerivationStarted,
    response_model_by_alias=True,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(derive_access)],
    responses=DERIVATION_RESPONSES,
    tags=["resources"],
)
async def start_image(resource_id: str, request: Request) -> DerivationStarted:
    """Normalize the image to WebP, a new resource (stage ``waiting`` until the image is
    COMPLETED, then ``converting``) whose metadata carries ``width``, ``height`` and
    ``blurhash`` once it is COMPLETED; FAILED with ``unsupported_format``, ``image_too_large``
    or ``invalid_image`` when the image is refused (see docs/protocol.md)."""
    derivations: Derivations = request.app.state.derivations
    return await derivation_started(
        request, resource_id, ResourceKind.IMAGE, derivations.start_image
    )


class BlurhashRequest(WireModel):
    resources: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=MAX_RESOURCES_PER_LOOKUP
    )


class BlurhashResult(WireModel):
    """One resource's answer: its BlurHash, width and height, or the ``error`` saying why not."""

    id: str
    blurhash: str | None = None
    width: int | None = None
    height: int | None = None
    error: ResourceError | None = None


class BlurhashAnswer(WireModel):
    results: list[BlurhashResult]  # in the order asked


@router.post(
    "/blurhashes",
    response_model=BlurhashAnswer,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=ACCESS_RESPONSES,
    tags=["resources"],
)
async def blurhashes(body: BlurhashRequest, request: Request) -> BlurhashAnswer:
    """The BlurHash, width and height of each image resource (the size as shown: EXIF
    orientation applied). A resource that has none says why in its ``error`` (``not_found``,
    ``not_completed``, ``unsupported_format``, ``image_too_large``, ``invalid_image``). Needs
    read access to every resource asked for."""
    grant = grant_of(request)
    for resource_id in body.resources:
        await authorize_read(grant, request.app.state.manager, resource_id)
    lookups: Blurhashes = request.app.state.blurhashes
    results = []
    for resource_id in body.resources:
        try:
            lookup = await lookups.lookup(resource_id)
        except BlurhashUnavailableError as exc:
            error = ResourceError(code=exc.code, message=exc.message[:1000])
            results.append(BlurhashResult(id=resource_id, error=error))
            continue
        COUNTERS.blurhash_lookups[lookup.found] += 1
        summary = lookup.summary
        results.append(
            BlurhashResult(
                id=resource_id,
                blurhash=summary.blurhash,
                width=summary.width,
                height=summary.height,
            )
        )
    return BlurhashAnswer(results=results)
