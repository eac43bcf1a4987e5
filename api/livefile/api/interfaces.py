"""The narrow interfaces of livefile: its pluggable backends (storage, catalog, status bus) and
the seam every producer and every reader of a resource goes through.

Each backend is a small module behind one of these protocols, so that the resource manager can be
assembled from an embedded set (filesystem, SQLite, in-process) or a shared one (Redis).

**The seam.** Whatever makes a resource's bytes — a client's WebSocket upload, the repack of an
archive, later images, bundles, transfers and tus — writes through one ``ResourceWriter``
(append, progress, complete, fail); whatever reads them — WebSocket download sessions, the HTTP
routes, the SSE stream, a producer reading its source — goes through one ``ResourceReader``,
which is bounded by the published status in one place. A new capability is one new producer or
reader on this seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceKind,
    ResourceMetadata,
    ResourceStatus,
)


class StorageWriter(Protocol):
    """Appends one resource's bytes. Blocking; the manager calls it off the event loop."""

    def write(self, data: bytes) -> None:
        """Append ``data``; once it returns, the bytes are readable by any process."""

    def sync(self) -> None:
        """Flush what was appended to stable storage (``fsync``)."""

    def close(self) -> None: ...


class Storage(Protocol):
    """Where the bytes of resources live."""

    def create(self, resource_id: str) -> StorageWriter:
        """Create the empty resource and return its writer."""

    def reopen(self, resource_id: str) -> StorageWriter:
        """Open an existing resource's bytes for appending after its last byte."""

    def size(self, resource_id: str) -> int:
        """Bytes stored (0 when nothing is stored)."""

    def read(self, resource_id: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``. Blocking."""

    def path(self, resource_id: str) -> Path:
        """The file holding the resource (for zero-copy file responses)."""

    def index_path(self, resource_id: str) -> Path:
        """The line-break index of a text resource."""

    def write_meta(self, resource_id: str, record: dict[str, Any], durable: bool) -> None:
        """Replace the resource's metadata and terminal-status record beside its bytes,
        atomically (and, when ``durable``, on stable storage before it returns). Blocking."""

    def read_meta(self, resource_id: str) -> dict[str, Any] | None:
        """The record written last, or None. Blocking."""


@dataclass(frozen=True)
class CatalogEntry:
    resource_id: str
    metadata: ResourceMetadata
    status: ResourceStatus
    upload_context_id: str | None
    checksum: str | None
    created_at: float
    updated_at: float
    kind: ResourceKind = ResourceKind.UPLOAD
    sources: tuple[str, ...] = field(default=())


class Catalog(Protocol):
    """Metadata and durable statuses of resources; survives restarts."""

    async def create(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        upload_context_id: str | None,
        status: ResourceStatus,
        kind: ResourceKind = ResourceKind.UPLOAD,
        sources: tuple[str, ...] = (),
    ) -> None: ...

    async def get(self, resource_id: str) -> CatalogEntry | None: ...

    async def set_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> None:
        """Persist ``status`` (every field of it). Terminal statuses already stored are never
        overwritten, nor a status by an older revision."""

    async def record_end(
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None = None,
        *,
        reaping: bool = False,
    ) -> ResourceStatus | None:
        """Record the terminal ``status`` unless the resource has already ended, in one atomic
        write; returns the terminal status that stands (``status``, or the one recorded before
        it). None when nothing was recorded: the entry is missing, or it is owned by another
        live process (``reaping``: its lease is held; else: another process owns it). Raises
        when the catalog cannot be reached in time."""

    async def restore(self, entry: CatalogEntry) -> None:
        """Put back an entry the catalog lost (e.g. rebuilt from its record beside the bytes);
        an entry still present is left as it is."""

    async def derived_from(self, resource_id: str) -> list[tuple[str, ResourceKind]]:
        """The resources made from ``resource_id``, oldest first."""

    async def unfinished(self) -> list[CatalogEntry]:
        """Entries still INITIATED or IN_PROGRESS (after a crash: their uploads are gone)."""

    async def count_in_context(self, upload_context_id: str) -> int: ...

    async def close(self) -> None: ...


class StatusSubscription(Protocol):
    """The statuses of one resource, newest wins: may skip intermediate ones, never goes back."""

    def __aiter__(self) -> AsyncIterator[ResourceStatus]: ...

    def close(self) -> None: ...


class StatusBus(Protocol):
    """Who hears about a status."""

    def publish(self, resource_id: str, status: ResourceStatus) -> None: ...

    async def subscribe(self, resource_id: str, current: ResourceStatus) -> StatusSubscription:
        """Subscribe, starting from ``current`` or anything newer published meanwhile."""

    def latest(self, resource_id: str) -> ResourceStatus | None:
        """The newest status of ``resource_id`` this process's subscribers have, if any."""

    async def close(self) -> None: ...


class ResourceWriter(Protocol):
    """How a producer makes a resource: bytes in order, progress, and one end.

    Appends are stored in order off the event loop; checkpoints publish what is stored at the
    checkpoint interval (the first bytes and the end at once), each status with a new revision.
    """

    @property
    def resource_id(self) -> str: ...

    @property
    def status(self) -> ResourceStatus:
        """The newest status published."""

    @property
    def ended(self) -> bool: ...

    @property
    def checksum_algorithm(self) -> ChecksumAlgorithm: ...

    async def append(self, data: bytes) -> None:
        """Queue ``data`` behind what was appended before (bounded: waits while the queue is
        full). Raises ``ServerError`` once storing has failed."""

    def progress(self, stage: str | None, percent: float | None = None) -> None:
        """Say how far production has got; published with the next checkpoint (a new stage at
        once). ``percent`` never goes down within a stage."""

    async def flush(self) -> str:
        """Wait until everything appended is stored; the checksum of all of it (hex)."""

    async def complete(self) -> ResourceStatus:
        """Store what is queued and end COMPLETED."""

    async def fail(self, error: ResourceError) -> ResourceStatus:
        """Store what is queued and end FAILED with ``error``: every byte stays readable."""


class ResourceReader(Protocol):
    """How anything reads a resource: never beyond its published status."""

    @property
    def resource_id(self) -> str: ...

    async def status(self) -> ResourceStatus: ...

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, which must lie within the published size
        (``RangeNotReadableError`` otherwise)."""

    def follow(self, start: int = 0) -> AsyncIterator[bytes]:
        """Every byte from ``start`` on as it is published, until the resource ends;
        ``ResourceFailedError`` after the last byte of a FAILED resource."""
