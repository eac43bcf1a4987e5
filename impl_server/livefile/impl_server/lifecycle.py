"""The lifecycle settings of resources: how long a deletion's tombstone is kept, when an
unfinished upload expires, how long finished resources are kept, and the total storage quota."""

from __future__ import annotations

from dataclasses import dataclass

from livefile.api.model import ResourceError

DAY = 86400.0


@dataclass(frozen=True)
class Lifecycle:
    tombstone_seconds: float = DAY  # 410 Gone this long after a deletion, then 404
    upload_expiry: float | None = DAY  # an upload unfinished this long after its creation FAILS
    retention: float | None = None  # a finished resource is deleted this long after its end
    max_storage_bytes: int | None = None  # no new resource while the data holds this many
    sweep_interval: float = 60.0  # seconds between two sweeps


def expired_error(limit: float) -> ResourceError:
    return ResourceError(
        code="expired", message=f"the upload was not finished within {limit:g} s of its start"
    )
