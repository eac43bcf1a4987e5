"""The WebSocket protocol's control messages (JSON text messages typed by the ``"@"`` property).

Data never travels in these: binary WebSocket messages are always data, text messages are always
one of the messages below. ``parse_message`` turns a text message into a typed message or raises
``ProtocolError`` with a reason fit to send back to the peer.
"""

from __future__ import annotations

import enum
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

# The WebSocket subprotocol (``Sec-WebSocket-Protocol``) with which a client asks for livefile's
# extensions of step-streaming's protocol. A connection that names none speaks step-streaming's
# protocol exactly (``STEP_STREAMING``): what step-streaming's own Java clients accept.
SUBPROTOCOL = "livefile.v1"


class Dialect(enum.Enum):
    """Which protocol a connection speaks, as its client chose in the handshake."""

    LIVEFILE = "livefile"  # the client sent SUBPROTOCOL: every extension
    STEP_STREAMING = "step-streaming"  # the client named no subprotocol: step-streaming's format

    @classmethod
    def of(cls, subprotocols: list[str] | tuple[str, ...]) -> Dialect:
        return cls.LIVEFILE if SUBPROTOCOL in subprotocols else cls.STEP_STREAMING


class Message(WireModel):
    """Base of every control message; ``to_json`` gives the text message to send."""

    # Fields left out of the message while they are None: livefile's later additions, which
    # a message without them must look exactly as before.
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()
    # step-streaming's form of the message: the wire names it has, in its order, each mapped
    # to its spelling there. None: the message is the same in both dialects.
    STEP_STREAMING_FIELDS: ClassVar[tuple[tuple[str, str], ...] | None] = None

    def to_wire(self) -> dict[str, object]:
        data = super().to_wire()
        for name in self.OMITTED_WHEN_NONE:
            alias = to_camel(name)
            if data.get(alias) is None:
                data.pop(alias, None)
        return data

    def to_json(self, dialect: Dialect = Dialect.LIVEFILE) -> str:
        wire = self.to_wire() if dialect is Dialect.LIVEFILE else self.step_streaming_wire()
        return json.dumps(wire, separators=(",", ":"), ensure_ascii=False)

    def step_streaming_wire(self) -> dict[str, object]:
        """The message as step-streaming's peers know it: its fields only (Jackson refuses any
        other), in its spelling, nulls written out."""
        data = self.model_dump(by_alias=True, mode="json")
        if self.STEP_STREAMING_FIELDS is None:
            return data
        fields = {theirs: data.get(ours) for ours, theirs in self.STEP_STREAMING_FIELDS}
        return {"@": data["@"], **fields}


# --- upload connection -------------------------------------------------------------------------


class StartUpload(Message):
    OMITTED_WHEN_NONE = frozenset({"repack", "image", "resumable"})

    kind: Literal["StartUpload"] = Field(default="StartUpload", alias="@")
    metadata: ResourceMetadata
    # How FinishUpload's checksum is computed; step-streaming's clients name none and send MD5.
    checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.MD5
    # Ask the server to keep the connection open after UploadAcknowledged, awaiting the next
    # StartUpload: many small uploads then cost no new TCP connection and handshake each.
    keep_open: StrictBool = False
    # Also produce the archive repacked into a normalized ZIP, live, as a derived resource
    # (None, left out of the message, is no).
    repack: StrictBool | None = None
    # Also produce the image normalized to WebP, with its size and BlurHash in its metadata, as
    # a derived resource once the upload is COMPLETED (None, left out, is no).
    image: StrictBool | None = None
    # Keep the upload resumable when its connection is lost (ReadyForUpload then carries a
    # resume token); None, left out of the message, is no: it FAILS at once, as before.
    resumable: StrictBool | None = None


class DerivedReference(WireModel):
    """A resource the server derives from the upload, announced in ``ReadyForUpload``."""

    id: str
    kind: ResourceKind
    reference: ResourceReference


class ReadyForUpload(Message):
    OMITTED_WHEN_NONE = frozenset({"derived", "resume_token"})
    STEP_STREAMING_FIELDS = (("reference", "reference"),)

    kind: Literal["ReadyForUpload"] = Field(default="ReadyForUpload", alias="@")
    reference: ResourceReference
    resource_id: str
    derived: list[DerivedReference] | None = None  # what StartUpload asked to derive
    # The secret that lets this uploader, and nobody else, resume the upload on a new
    # connection (``ResumeUpload``); None when the server keeps no upload resumable.
    resume_token: str | None = None


class ResumeUpload(Message):
    """Continue an upload whose connection was lost, instead of ``StartUpload``: answered by
    ``UploadResumed`` with the offset to send from, or by ``UploadAcknowledged`` when the
    upload had already completed."""

    kind: Literal["ResumeUpload"] = Field(default="ResumeUpload", alias="@")
    resource_id: str
    resume_token: str


class UploadResumed(Message):
    """The server's answer to ``ResumeUpload``: it has stored ``offset`` bytes, and the client
    sends its data again from there."""

    kind: Literal["UploadResumed"] = Field(default="UploadResumed", alias="@")
    resource_id: str
    offset: int


class FinishUpload(Message):
    kind: Literal["FinishUpload"] = Field(default="FinishUpload", alias="@")
    checksum: str


class UploadAcknowledged(Message):
    # Spelt "numberOflines" by step-streaming's Java server, and so sent to its clients.
    STEP_STREAMING_FIELDS = (
        ("size", "size"),
        ("checksum", "checksum"),
        ("numberOfLines", "numberOflines"),
    )

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

    def step_streaming_wire(self) -> dict[str, object]:
        status = self.resource_status.step_streaming().model_dump(by_alias=True, mode="json")
        return {"@": self.kind, "resourceStatus": status}


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
    STEP_STREAMING_FIELDS = (("lines", "lines"),)

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
    | ResumeUpload
    | UploadResumed
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
    "ResumeUpload",
    "UploadResumed",
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
