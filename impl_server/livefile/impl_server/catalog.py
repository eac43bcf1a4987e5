"""The embedded catalog: resource metadata and durable statuses in SQLite in the data directory.

Only transitions are persisted (creation and the terminal status), not every checkpoint: the live
status of a running upload is held by the process taking it, and after a crash the bytes on disk
say how far it got. SQLite runs in WAL mode; calls are short and made on the event loop. The
catalog shares the data directory's disk: a write refused because that disk is full raises a
``ServerError`` that says so, and the caller decides whether to retry.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from livefile.api.errors import ServerError
from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceMetadata, ResourceStatus, TransferStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    supports_line_access INTEGER NOT NULL,
    upload_context_id TEXT,
    transfer_status TEXT NOT NULL,
    current_size INTEGER NOT NULL,
    number_of_lines INTEGER,
    checksum TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_unfinished ON resources (transfer_status)
    WHERE transfer_status IN ('INITIATED', 'IN_PROGRESS');
CREATE INDEX IF NOT EXISTS resources_context ON resources (upload_context_id);
"""
_TERMINAL = (TransferStatus.COMPLETED.value, TransferStatus.FAILED.value)


@contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
            raise ServerError(f"Storage full: the catalog cannot be written ({exc})") from exc
        raise


class SqliteCatalog:
    """A catalog that survives restarts, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    async def create(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        upload_context_id: str | None,
        status: ResourceStatus,
    ) -> None:
        now = time.time()
        row = (
            resource_id,
            metadata.filename,
            metadata.mime_type,
            int(metadata.supports_line_access),
            upload_context_id,
            status.transfer_status.value,
            status.current_size,
            status.number_of_lines,
            now,
            now,
        )
        with _writing():
            self._db.execute(
                "INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)", row
            )

    async def get(self, resource_id: str) -> CatalogEntry | None:
        row = self._db.execute("SELECT * FROM resources WHERE id = ?", (resource_id,)).fetchone()
        return _entry(row) if row else None

    async def set_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> None:
        # The WHERE clause keeps terminal statuses final even if two paths race to end an upload.
        with _writing():
            self._db.execute(
                "UPDATE resources SET transfer_status = ?, current_size = ?, number_of_lines = ?,"
                " checksum = COALESCE(?, checksum), updated_at = ?"
                " WHERE id = ? AND transfer_status NOT IN (?, ?)",
                (
                    status.transfer_status.value,
                    status.current_size,
                    status.number_of_lines,
                    checksum,
                    time.time(),
                    resource_id,
                    *_TERMINAL,
                ),
            )

    async def unfinished(self) -> list[CatalogEntry]:
        rows = self._db.execute(
            "SELECT * FROM resources WHERE transfer_status IN ('INITIATED', 'IN_PROGRESS')"
        ).fetchall()
        return [_entry(row) for row in rows]

    async def count_in_context(self, upload_context_id: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM resources WHERE upload_context_id = ?", (upload_context_id,)
        ).fetchone()
        return int(row[0])

    async def close(self) -> None:
        self._db.close()


def _entry(row: tuple[Any, ...]) -> CatalogEntry:
    (rid, filename, mime, lines_ok, ctx, transfer, size, lines, checksum, created, updated) = row
    return CatalogEntry(
        resource_id=rid,
        # Stored metadata was validated when it arrived; do not validate it again on every read.
        metadata=ResourceMetadata.model_construct(
            filename=filename, mime_type=mime, supports_line_access=bool(lines_ok)
        ),
        status=ResourceStatus(
            transfer_status=TransferStatus(transfer), current_size=size, number_of_lines=lines
        ),
        upload_context_id=ctx,
        checksum=checksum,
        created_at=created,
        updated_at=updated,
    )
