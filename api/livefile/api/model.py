"""The data model shared by every part of livefile: metadata, statuses, references, contexts.

Field names are snake_case in Python and camelCase on the wire (step-streaming's names);
``model_dump(by_alias=True)`` gives the wire form and both forms are accepted when parsing.
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

MAX_FILENAME_BYTES = 255
# RFC 6838 restricted-name characters; parameters such as "; charset=" are not part of a MIME type
# here (step-streaming's rule), the charset of text resources is always UTF-8 once stored.
# Matched with fullmatch: "$" would also accept a final "\n", which in a MIME type becomes an
# invalid Content-Type header and breaks every HTTP download of the resource.
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")
_RESOURCE_ID = re.compile(r"[0-9a-f]{32}")


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


class ResourceStatus(WireModel):
    """What a watcher knows about a resource: its transfer status and its readable size.

    ``current_size`` is the checkpointed size: every byte below it can be read.
    ``number_of_lines`` is None for resources without line access.
    """

    transfer_status: TransferStatus
    current_size: int = Field(ge=0)
    number_of_lines: int | None = Field(default=None, ge=0)

    @property
    def is_terminal(self) -> bool:
        return self.transfer_status.is_terminal

    def is_newer_than(self, other: ResourceStatus) -> bool:
        """Whether this status may follow ``other`` (statuses never go backwards)."""
        if other.is_terminal:
            return False
        if self.is_terminal:
            return True
        return (self.current_size, _rank(self.transfer_status)) > (
            other.current_size,
            _rank(other.transfer_status),
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
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise ValueError("filename must not contain control characters")
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


class ResourceInfo(WireModel):
    """A resource as ``GET /resources/{id}`` describes it."""

    id: str
    metadata: ResourceMetadata
    status: ResourceStatus
    upload_context_id: str | None = None
    checksum: str | None = None  # hex digest, once COMPLETED
    checksum_algorithm: ChecksumAlgorithm | None = None


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
