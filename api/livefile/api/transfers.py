"""What ``POST /transfers`` takes and answers: the server fetches a URL into a new resource."""

from __future__ import annotations

from pydantic import Field, StrictBool

from livefile.api.messages import DerivedReference
from livefile.api.model import Filename, MimeType, ResourceKind, ResourceReference, WireModel

MAX_URL_LENGTH = 8192


class TransferRequest(WireModel):
    """The URL to fetch and what to call and make of it.

    ``filename`` defaults to the URL path's last segment, ``mime_type`` to the type that name
    suggests, ``supports_line_access`` to whether that type is ``text/*``: the resource and
    its metadata exist before the remote server has answered. ``repack`` and ``image`` start
    those derivations on the transfer at once; they read it while it arrives."""

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    filename: Filename | None = None
    mime_type: MimeType | None = None
    supports_line_access: StrictBool | None = None
    repack: StrictBool = False
    image: StrictBool = False


class TransferStarted(WireModel):
    """The transfer the server has begun (and the resources derived from it)."""

    id: str
    kind: ResourceKind = ResourceKind.TRANSFER
    reference: ResourceReference
    url: str
    derived: list[DerivedReference] = Field(default_factory=list)
