"""The embedded catalog: resource metadata and durable statuses in SQLite in the data directory.

Only transitions are persisted (creation and the terminal status), not every checkpoint: the live
status of a running upload is held by the process taking it, and after a crash the bytes on disk
say how far it got. SQLite runs in WAL mode with ``synchronous=NORMAL``; a terminal status is
committed with ``synchronous=FULL`` when the catalog is durable (the default), so an
acknowledged upload's end survives a power loss. Calls are short and made on the event loop. The
catalog shares the data directory's disk: a write refused because that disk is full raises a
``ServerError`` that says so, and the caller decides whether to retry.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from livefile.api.errors import ServerError
from livefile.api.interfaces import CatalogEntry, CatalogPage, Cursor, PageQuery
from livefile.api.model import (
    ResourceError,
    ResourceKind,
    ResourceMetadata,
    ResourceStatus,
    TransferStatus,
)

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
-- (upload_context_id) alone is served by resources_context_created: one index less to keep
-- up to date on every creation.
DROP INDEX IF EXISTS resources_context;
CREATE TABLE IF NOT EXISTS derivations (
    source TEXT NOT NULL,
    derived TEXT NOT NULL,
    PRIMARY KEY (source, derived)
);
CREATE INDEX IF NOT EXISTS resources_created ON resources (created_at, id);
CREATE INDEX IF NOT EXISTS resources_context_created
    ON resources (upload_context_id, created_at, id);
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,
    deleted_at REAL NOT NULL
);
"""
_UNFINISHED = frozenset({TransferStatus.INITIATED, TransferStatus.IN_PROGRESS})
# Columns added after the first release; an older catalog gets them on open.
_ADDED_COLUMNS = {
    "revision": "INTEGER",
    "stage": "TEXT",
    "percent": "REAL",
    "error": "TEXT",  # the JSON of ResourceError
    "kind": "TEXT NOT NULL DEFAULT 'upload'",
    "sources": "TEXT NOT NULL DEFAULT ''",  # space-separated ids
    "description": "TEXT",  # the JSON of the server-described metadata fields, if any
}
_COLUMNS = (
    "id, filename, mime_type, supports_line_access, upload_context_id, transfer_status,"
    " current_size, number_of_lines, checksum, created_at, updated_at, revision, stage, percent,"
    " error, kind, sources, description"
)
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

    def __init__(self, path: Path, durable: bool = True) -> None:
        self._durable = durable
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(resources)")}
        for column, declaration in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE resources ADD COLUMN {column} {declaration}")

    async def create(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        upload_context_id: str | None,
        status: ResourceStatus,
        kind: ResourceKind = ResourceKind.UPLOAD,
        sources: tuple[str, ...] = (),
        owned: bool = True,  # one process: it produces everything
    ) -> None:
        now = time.time()
        row = (
            resource_id,
            metadata.filename,
            metadata.mime_type,
            int(metadata.supports_line_access),
            upload_context_id,
            *_status_columns(status),
            None,
            now,
            now,
            kind.value,
            " ".join(sources),
        )
        insert = (
            "INSERT INTO resources (id, filename, mime_type, supports_line_access,"
            " upload_context_id, transfer_status, current_size, number_of_lines,"
            " revision, stage, percent, error, checksum, created_at, updated_at, kind,"
            " sources) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        if not sources:  # one statement is a transaction of its own (autocommit)
            with _writing():
                self._db.execute(insert, row)
            return
        with _writing():
            self._db.execute("BEGIN")
            try:
                self._db.execute(insert, row)
                self._db.executemany(
                    "INSERT OR IGNORE INTO derivations VALUES (?, ?)",
                    [(source, resource_id) for source in sources],
                )
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (a full disk) may have rolled back already.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    async def get(self, resource_id: str) -> CatalogEntry | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM resources WHERE id = ?", (resource_id,)
        ).fetchone()
        return _entry(row) if row else None

    async def set_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> None:
        self._update_status(resource_id, status, checksum)

    def _update_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None
    ) -> bool:
        """Whether ``status`` replaced the entry's. The WHERE clause keeps terminal statuses
        final even if two paths race to end a resource, and never lets an older revision
        replace a newer one."""
        with _writing():
            cursor = self._db.execute(
                "UPDATE resources SET transfer_status = ?, current_size = ?, number_of_lines = ?,"
                " revision = ?, stage = ?, percent = ?, error = ?,"
                " checksum = COALESCE(?, checksum), updated_at = ?"
                " WHERE id = ? AND transfer_status NOT IN (?, ?)"
                " AND (revision IS NULL OR ? IS NULL OR revision < ?)",
                (
                    *_status_columns(status),
                    checksum,
                    time.time(),
                    resource_id,
                    *_TERMINAL,
                    status.revision,
                    status.revision,
                ),
            )
        return cursor.rowcount == 1

    async def record_end(
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None = None,
        *,
        reaping: bool = False,
    ) -> ResourceStatus | None:
        # One process owns this catalog: no lease to check when reaping.
        if self._durable:
            self._db.execute("PRAGMA synchronous=FULL")  # this commit reaches the disk
        try:
            if self._update_status(resource_id, status, checksum) and status.is_terminal:
                return status  # it stands: no need to read it back
        finally:
            if self._durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
        entry = await self.get(resource_id)
        if entry is None or not entry.status.is_terminal:
            return None
        return entry.status

    async def restore(self, entry: CatalogEntry) -> None:
        if await self.deleted_at(entry.resource_id) is not None:
            return  # deleted: a record a racing writer left behind must not bring it back
        row = (
            entry.resource_id,
            entry.metadata.filename,
            entry.metadata.mime_type,
            int(entry.metadata.supports_line_access),
            entry.upload_context_id,
            *_status_columns(entry.status),
            entry.checksum,
            entry.created_at,
            entry.updated_at,
            entry.kind.value,
            " ".join(entry.sources),
            _description_column(entry.metadata),
        )
        with _writing():
            self._db.execute(
                "INSERT OR IGNORE INTO resources (id, filename, mime_type, supports_line_access,"
                " upload_context_id, transfer_status, current_size, number_of_lines,"
                " revision, stage, percent, error, checksum, created_at, updated_at, kind,"
                " sources, description)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO derivations VALUES (?, ?)",
                [(source, entry.resource_id) for source in entry.sources],
            )

    async def describe(self, resource_id: str, description: dict[str, Any]) -> None:
        with _writing():
            self._db.execute(
                "UPDATE resources SET description = ? WHERE id = ?",
                (json.dumps(description) if description else None, resource_id),
            )

    async def derived_from(self, resource_id: str) -> list[tuple[str, ResourceKind]]:
        rows = self._db.execute(
            "SELECT r.id, r.kind FROM derivations d JOIN resources r ON r.id = d.derived"
            " WHERE d.source = ? ORDER BY r.created_at",
            (resource_id,),
        ).fetchall()
        return [(rid, ResourceKind(kind)) for rid, kind in rows]

    async def adopt(self, resource_id: str) -> bool:
        entry = await self.get(resource_id)
        return entry is not None and not entry.status.is_terminal

    async def unfinished(self) -> list[CatalogEntry]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM resources"
            " WHERE transfer_status IN ('INITIATED', 'IN_PROGRESS')"
        ).fetchall()
        return [_entry(row) for row in rows]

    async def count_in_context(self, upload_context_id: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM resources WHERE upload_context_id = ?", (upload_context_id,)
        ).fetchone()
        return int(row[0])

    async def page(self, query: PageQuery) -> CatalogPage:
        after, limit, context_id = query.after, query.limit, query.context_id
        statuses, newest_first = query.statuses, query.newest_first
        conditions: list[str] = []
        values: list[object] = []
        if context_id is not None:
            conditions.append("upload_context_id = ?")
            values.append(context_id)
        if statuses is not None:
            # The stored status of an unfinished resource is its first one (only ends are
            # written): either unfinished status asks for both.
            wanted = set(statuses) | (_UNFINISHED if statuses & _UNFINISHED else set())
            conditions.append(f"transfer_status IN ({', '.join('?' * len(wanted))})")
            values.extend(sorted(status.value for status in wanted))
        if query.created_before is not None:
            conditions.append("created_at < ?")
            values.append(query.created_before)
        if after is not None:
            beyond = "<" if newest_first else ">"
            conditions.append(f"(created_at {beyond} ? OR (created_at = ? AND id {beyond} ?))")
            values.extend([after.created_at, after.created_at, after.resource_id])
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        order = "DESC" if newest_first else "ASC"
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM resources{where}"
            f" ORDER BY created_at {order}, id {order} LIMIT ?",
            (*values, limit + 1),
        ).fetchall()
        entries = [_entry(row) for row in rows[:limit]]
        more = len(rows) > limit
        return CatalogPage(entries, Cursor.of(entries[-1]) if more and entries else None)

    async def delete(
        self, resource_id: str, status: ResourceStatus, deleted_at: float
    ) -> CatalogEntry | None:
        entry = await self.get(resource_id)
        if entry is None:
            return None
        with _writing():
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM resources WHERE id = ?", (resource_id,))
                self._db.execute(
                    "DELETE FROM derivations WHERE source = ? OR derived = ?",
                    (resource_id, resource_id),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO tombstones VALUES (?, ?)", (resource_id, deleted_at)
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return entry

    async def deleted_at(self, resource_id: str) -> float | None:
        row = self._db.execute(
            "SELECT deleted_at FROM tombstones WHERE id = ?", (resource_id,)
        ).fetchone()
        return float(row[0]) if row else None

    async def purge_tombstones(self, deleted_before: float) -> list[str]:
        with _writing():
            rows = self._db.execute(
                "DELETE FROM tombstones WHERE deleted_at < ? RETURNING id", (deleted_before,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    async def claim_sweep(self, seconds: float) -> bool:
        return True  # one process owns this catalog

    async def close(self) -> None:
        self._db.close()


def _description_column(metadata: ResourceMetadata) -> str | None:
    description = metadata.description()
    return json.dumps(description) if description else None


def _status_columns(status: ResourceStatus) -> tuple[object, ...]:
    return (
        status.transfer_status.value,
        status.current_size,
        status.number_of_lines,
        status.revision,
        status.stage,
        status.percent,
        status.error.model_dump_json() if status.error else None,
    )


def _entry(row: tuple[Any, ...]) -> CatalogEntry:
    (rid, filename, mime, lines_ok, ctx, transfer, size, lines, checksum, created, updated,
     revision, stage, percent, error, kind, sources, description) = row  # fmt: skip
    return CatalogEntry(
        resource_id=rid,
        # Stored metadata was validated when it arrived; do not validate it again on every read.
        metadata=ResourceMetadata.model_construct(
            filename=filename,
            mime_type=mime,
            supports_line_access=bool(lines_ok),
            **(json.loads(description) if description else {}),
        ),
        status=ResourceStatus(
            transfer_status=TransferStatus(transfer),
            current_size=size,
            number_of_lines=lines,
            revision=revision,
            stage=stage,
            percent=percent,
            error=ResourceError.model_validate_json(error) if error else None,
        ),
        upload_context_id=ctx,
        checksum=checksum,
        created_at=created,
        updated_at=updated,
        kind=ResourceKind(kind),
        sources=tuple(sources.split()),
    )
