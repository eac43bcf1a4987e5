"""The record kept beside a resource's bytes (``<id>.meta.json``): enough to rebuild its catalog
entry when the catalog lost it — Redis restarted without persistence, or flushed.

It is written when the resource is created (metadata, INITIATED) and again with its terminal
status and checksum once that status is decided, before an upload is acknowledged; so whatever
was acknowledged can be served again from the shared volume alone, and a resource that never
ended is found unfinished (and then failed like any orphan).
"""

from __future__ import annotations

from typing import Any

from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceKind, ResourceMetadata, ResourceStatus

FORMAT = 1


def record_of(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "id": entry.resource_id,
        "metadata": entry.metadata.model_dump(by_alias=True, mode="json"),
        "uploadContextId": entry.upload_context_id,
        "kind": entry.kind.value,
        "sources": list(entry.sources),
        "createdAt": entry.created_at,
        "updatedAt": entry.updated_at,
        "status": entry.status.model_dump(by_alias=True, mode="json"),
        "checksum": entry.checksum,
    }


def entry_of(record: dict[str, Any]) -> CatalogEntry | None:
    """The entry a record describes; None for a record that cannot be read."""
    try:
        return CatalogEntry(
            resource_id=str(record["id"]),
            metadata=ResourceMetadata.model_validate(record["metadata"]),
            status=ResourceStatus.model_validate(record["status"]),
            upload_context_id=record.get("uploadContextId"),
            checksum=record.get("checksum"),
            created_at=float(record["createdAt"]),
            updated_at=float(record.get("updatedAt") or record["createdAt"]),
            kind=ResourceKind(record.get("kind") or ResourceKind.UPLOAD.value),
            sources=tuple(record.get("sources") or ()),
        )
    except (KeyError, TypeError, ValueError):
        return None
