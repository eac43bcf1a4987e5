"""The WebSocket protocol's control messages (JSON text messages typed by the ``"@"`` property).

Data never travels in these: binary WebSocket messages are always data, text messages are always
one of the messages below. ``parse_message`` turns a text message into a typed message or raises
``ProtocolError`` with a reason fit to send back to the peer.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, ClassVar, Literal

from pydantic import AliasChoices, Field, StrictBool, StrictInt, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from livefile.api.errors import ProtocolError, UnknownMessageTypeError
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceKind,
    ResourceMetadata,
    ResourceReference,
    ResourceStatus,
    WireModel,
)


class Message(WireModel):
    """Base of every control message; ``to_json`` gives the text message to send."""

    # Fields left out of the message while they are None: livefile's later additions, which
    # a message without them must look exactly as before.
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_wire(self) -> dict[str, object]:
        data = super().to_wire()
        for name in self.OMITTED_WHEN_NONE:
            alias = to_camel(name)
            if data.get(alias) is None:
                data.pop(alias, None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)


# --- upload connection -------------------------------------------------------------------------


class StartUpload(Message):
    kind: Literal["StartUpload"] = Field(default="StartUpload", alias="@")
    metadata: ResourceMetadata
    # How FinishUpload's checksum is computed; step-streaming's clients name none and send MD5.
    checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5
    # Ask the server to keep the connection open after UploadAcknowledged, awaiting the next
    # StartUpload: many small uploads then cost no new TCP connection and handshake each.
    keep_open: StrictBool = False
    # Also produce the archive repacked into a normalized ZIP, live, as a derived resource.
    repack: StrictBool = False


class DerivedReference(WireModel):
    """A resource the server derives from the upload, announced in ``ReadyForUpload``."""

    id: str
    kind: ResourceKind
    reference: ResourceReference


class ReadyForUpload(Message):
    OMITTED_WHEN_NONE = frozenset({"derived"})

    kind: Literal["ReadyForUpload"] = Field(default="ReadyForUpload", alias="@")
    reference: ResourceReference
    resource_id: str
    derived: list[DerivedReference] | None = None  # what StartUpload asked to derive


class FinishUpload(Message):
    kind: Literal["FinishUpload"] = Field(default="FinishUpload", alias="@")
    checksum: str


class UploadAcknowledged(Message):
    kind: Literal["UploadAcknowledged"] = Field(default="UploadAcknowledged", alias="@")
    size: int
    checksum: str
    checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5
    # step-streaming's Java server spells it "numberOflines"; accept both, send the right one.
    number_of_lines: int | None = Field(
        default=None,
        validation_alias=AliasChoices("numberOfLines", "numberOflines", "number_of_lines"),
    )


# --- download connection (StatusChanged also reaches uploaders at each checkpoint) -------------


class StatusChanged(Message):
    kind: Literal["StatusChanged"] = Field(default="StatusChanged", alias="@")
    resource_status: ResourceStatus


class RequestChunk(Message):
    """Ask for bytes ``[start_offset, end_offset)``; answered by binary messages adding up to
    exactly ``end_offset - start_offset`` bytes (one empty message for an empty range)."""

    kind: Literal["RequestChunk"] = Field(default="RequestChunk", alias="@")
    start_offset: StrictInt
    end_offset: StrictInt
    request_id: str | int | None = None


class RequestLines(Message):
    kind: Literal["RequestLines"] = Field(default="RequestLines", alias="@")
    starting_line_index: StrictInt
    lines_count: StrictInt
    request_id: str | int | None = None


class Lines(Message):
    """The reply to ``RequestLines``: ``lines`` from ``starting_line_index`` (0-based).

    The other fields are livefile's (left out while None, so that the plain message stays
    step-streaming's): ``next_line_index`` is where the next page starts; ``number_of_lines``
    the lines published when the page was read; ``more`` whether lines from
    ``next_line_index`` on can be asked for now; ``growing`` whether the resource had not
    ended then, so that lines may still come after the last published one."""

    OMITTED_WHEN_NONE = frozenset(
        {"starting_line_index", "next_line_index", "number_of_lines", "more", "growing"}
    )

    kind: Literal["Lines"] = Field(default="Lines", alias="@")
    lines: list[str]
    request_id: str | int | None = None
    starting_line_index: int | None = None
    next_line_index: int | None = None
    number_of_lines: int | None = None
    more: bool | None = None
    growing: bool | None = None


class Error(Message):
    """A request could not be served; the connection stays usable."""

    kind: Literal["Error"] = Field(default="Error", alias="@")
    code: str
    message: str
    request_id: str | int | None = None


AnyMessage = Annotated[
    StartUpload
    | ReadyForUpload
    | FinishUpload
    | UploadAcknowledged
    | StatusChanged
    | RequestChunk
    | RequestLines
    | Lines
    | Error,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)
MESSAGE_TYPES = (
    "StartUpload",
    "ReadyForUpload",
    "FinishUpload",
    "UploadAcknowledged",
    "StatusChanged",
    "RequestChunk",
    "RequestLines",
    "Lines",
    "Error",
)


def parse_message(text: str) -> AnyMessage:
    """Parse one text message. Raises ``ProtocolError`` with a short, peer-safe reason."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"Malformed JSON: {exc}") from None
    except ValueError:  # an integer literal beyond Python's conversion limit
        raise ProtocolError(
            f"Malformed JSON: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"A message must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("@")
    if kind is None:
        raise ProtocolError('Missing message type property "@"')
    if kind not in MESSAGE_TYPES:
        unknown = UnknownMessageTypeError if isinstance(kind, str) else ProtocolError
        raise unknown(f"Unknown message type {str(kind)[:40]!r}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(f"Invalid {kind}: {_summarize(exc)}") from None


def _summarize(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        location = ".".join(str(item) for item in error["loc"][1:]) or "message"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
