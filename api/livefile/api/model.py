"""The data model shared by every part of livefile: metadata, statuses, references, contexts.

Field names are snake_case in Python and camelCase on the wire (step-streaming's names);
``model_dump(by_alias=True)`` gives the wire form and both forms are accepted when parsing.
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    model_serializer,
)
from pydantic.alias_generators import to_camel

MAX_FILENAME_BYTES = 255
# RFC 6838 restricted-name characters; parameters such as "; charset=" are not part of a MIME type
# here (step-streaming's rule), the charset of text resources is always UTF-8 once stored.
# Matched with fullmatch: "$" would also accept a final "\n", which in a MIME type becomes an
# invalid Content-Type header and breaks every HTTP download of the resource.
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")
_RESOURCE_ID = re.compile(r"[0-9a-f]{32}")
# Characters that reorder how the rest of a name is displayed: "invoice\u202etxt.exe" shows as
# "invoiceexe.txt" in a download dialog (CVE-2021-42574's trick applied to names). The marks,
# embeddings, overrides and isolates of Unicode's bidirectional algorithm (UAX #9).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class WireModel(BaseModel):
    """Base of every model that travels as JSON: camelCase aliases, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def to_wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="json")


class ChecksumAlgorithm(enum.StrEnum):
    """How the uploader and the server checksum an upload (``StartUpload.checksumAlgorithm``)."""

    MD5 = "md5"  # step-streaming's; assumed when a client names none
    SHA256 = "sha256"
    CRC32 = "crc32"
    CRC32C = "crc32c"  # Castagnoli, computed in hardware: the SDK's default


class TransferStatus(enum.StrEnum):
    INITIATED = "INITIATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (TransferStatus.COMPLETED, TransferStatus.FAILED)


class ResourceError(WireModel):
    """Why a resource ended FAILED, for machines (``code``) and for people (``message``).

    Codes are short snake_case words: ``checksum_mismatch``, ``quota_exceeded``,
    ``disconnected``, ``source_failed``, ``encrypted_archive``, ``worker_lost``, … (the full
    list is in docs/protocol.md)."""

    code: str = Field(min_length=1, max_length=64)
    message: str = Field(default="", max_length=1024)


# Fields a status carries only when they say something: a plain upload has no stage, percent
# or error, and its status on the wire stays what step-streaming's clients know.
_OPTIONAL_STATUS_FIELDS = ("stage", "percent", "error")


class ResourceStatus(WireModel):
    """What a watcher knows about a resource: its transfer status and its readable size.

    ``current_size`` is the checkpointed size: every byte below it can be read.
    ``number_of_lines`` is None for resources without line access.
    ``revision`` orders the statuses of one resource: each new status has a higher one, so a
    change that keeps the size (a new ``stage``, a ``percent``) is still news. None only in
    statuses from a peer that has no revisions (a step-streaming server).
    ``stage`` and ``percent`` (0 to 100, never decreasing within a stage) describe how far a
    server-produced resource has got; ``error`` says why a FAILED resource failed.
    """

    transfer_status: TransferStatus
    current_size: int = Field(ge=0)
    number_of_lines: int | None = Field(default=None, ge=0)
    revision: int | None = Field(default=None, ge=0)
    stage: str | None = Field(default=None, max_length=64)
    percent: float | None = Field(default=None, ge=0, le=100)
    error: ResourceError | None = None

    @model_serializer(mode="wrap")
    def _without_empty_extras(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in _OPTIONAL_STATUS_FIELDS:
                if data.get(name) is None:
                    data.pop(name, None)
            if data.get("revision") is None:
                data.pop("revision", None)
        return data

    @property
    def is_terminal(self) -> bool:
        return self.transfer_status.is_terminal

    def is_newer_than(self, other: ResourceStatus) -> bool:
        """Whether this status may follow ``other`` (statuses never go backwards).

        Terminal statuses are final. Otherwise the revision decides; statuses without one (a
        step-streaming peer) are ordered by size and then by transfer status."""
        if other.is_terminal:
            return False
        if self.is_terminal:
            return True
        if self.revision is not None and other.revision is not None:
            return self.revision > other.revision
        return (self.current_size, _rank(self.transfer_status)) > (
            other.current_size,
            _rank(other.transfer_status),
        )

    def step_streaming(self) -> ResourceStatus:
        """This status with step-streaming's fields only (what its clients know)."""
        return ResourceStatus(
            transfer_status=self.transfer_status,
            current_size=self.current_size,
            number_of_lines=self.number_of_lines,
        )

    def same_state(self, other: ResourceStatus) -> bool:
        """Whether both say the same, whatever their revisions."""
        return self.model_copy(update={"revision": None}) == other.model_copy(
            update={"revision": None}
        )


def _rank(status: TransferStatus) -> int:
    return list(TransferStatus).index(status)


def _check_filename(name: str) -> str:
    if not name:
        raise ValueError("filename must not be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style JSON escape
        raise ValueError("filename must be valid Unicode (no lone surrogates)") from None
    if size > MAX_FILENAME_BYTES:
        raise ValueError(f"filename must be at most {MAX_FILENAME_BYTES} bytes in UTF-8")
    if "/" in name or "\\" in name:
        raise ValueError("filename must not contain path separators")
    if name in (".", ".."):
        raise ValueError("filename must not be '.' or '..'")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name):
        raise ValueError("filename must not contain control characters")
    if bidi := next((ch for ch in name if ch in _BIDI_CONTROLS), None):
        raise ValueError(
            f"filename must not contain bidirectional control characters (U+{ord(bidi):04X})"
        )
    return name


def _check_mime_type(mime_type: str) -> str:
    if not _MIME_TYPE.fullmatch(mime_type):
        raise ValueError(f"invalid MIME type {mime_type[:80]!r}: expected type/subtype")
    return mime_type


Filename = Annotated[str, AfterValidator(_check_filename)]
MimeType = Annotated[str, AfterValidator(_check_mime_type)]


class ResourceMetadata(WireModel):
    """What the uploader says about a resource. Filename and MIME type are required."""

    filename: Filename
    mime_type: MimeType
    supports_line_access: StrictBool = False  # "yes" or 1 is refused, not guessed


class ResourceReference(WireModel):
    """Where a resource can be downloaded: an absolute ws:// or wss:// URI."""

    uri: str


class ResourceKind(enum.StrEnum):
    """Who produced a resource: a client's upload, or the server from other resources."""

    UPLOAD = "upload"
    REPACK = "repack"  # an archive repacked into a normalized ZIP
    IMAGE = "image"  # an image normalized to WebP, with its BlurHash
    BUNDLE = "bundle"  # one ZIP of many resources (and URLs)
    TRANSFER = "transfer"  # a file the server fetched from a URL


class DerivedResource(WireModel):
    """A resource the server produces from another one, as its source lists it."""

    id: str
    kind: ResourceKind


class ResourceInfo(WireModel):
    """A resource as ``GET /resources/{id}`` describes it."""

    id: str
    metadata: ResourceMetadata
    status: ResourceStatus
    upload_context_id: str | None = None
    checksum: str | None = None  # hex digest, once COMPLETED
    checksum_algorithm: ChecksumAlgorithm | None = None
    kind: ResourceKind = ResourceKind.UPLOAD
    sources: list[str] = Field(default_factory=list)  # what a derived resource is made from
    derived: list[DerivedResource] = Field(default_factory=list)  # made from this one


class UploadContextInfo(WireModel):
    """An upload context as ``POST /contexts`` and ``GET /contexts/{id}`` describe it."""

    context_id: str
    resource_count: int = 0


def new_resource_id() -> str:
    """A fresh resource id: 32 lowercase hex digits (a UUID4 without dashes)."""
    return uuid.uuid4().hex


def new_context_id() -> str:
    return uuid.uuid4().hex


def is_valid_id(value: str) -> bool:
    """Whether ``value`` has the form of a server-generated id; checked before any path is built."""
    return bool(_RESOURCE_ID.fullmatch(value))
