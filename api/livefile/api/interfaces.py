"""The narrow interfaces of livefile's pluggable backends (storage, catalog, status bus).

Each backend is a small module behind one of these protocols, so that the resource manager can be
assembled from an embedded set (filesystem, SQLite, in-process) or a shared one (Redis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from livefile.api.model import ResourceMetadata, ResourceStatus


class StorageWriter(Protocol):
    """Appends one resource's bytes. Blocking; the manager calls it off the event loop."""

    def write(self, data: bytes) -> None:
        """Append ``data``; once it returns, the bytes are readable by any process."""

    def close(self) -> None: ...


class Storage(Protocol):
    """Where the bytes of resources live."""

    def create(self, resource_id: str) -> StorageWriter:
        """Create the empty resource and return its writer."""

    def size(self, resource_id: str) -> int:
        """Bytes stored (0 when nothing is stored)."""

    def read(self, resource_id: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``. Blocking."""

    def path(self, resource_id: str) -> Path:
        """The file holding the resource (for zero-copy file responses)."""

    def index_path(self, resource_id: str) -> Path:
        """The line-break index of a text resource."""


@dataclass(frozen=True)
class CatalogEntry:
    resource_id: str
    metadata: ResourceMetadata
    status: ResourceStatus
    upload_context_id: str | None
    checksum: str | None
    created_at: float
    updated_at: float


class Catalog(Protocol):
    """Metadata and durable statuses of resources; survives restarts."""

    async def create(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        upload_context_id: str | None,
        status: ResourceStatus,
    ) -> None: ...

    async def get(self, resource_id: str) -> CatalogEntry | None: ...

    async def set_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> None:
        """Persist ``status``. Terminal statuses already stored are never overwritten."""

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

    async def close(self) -> None: ...
