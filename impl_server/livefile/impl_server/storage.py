"""Filesystem storage: one append-only file per resource under the data directory.

Layout: ``<root>/<id[0:2]>/<id[2:4]>/<id>.bin``. Ids are validated before a path is built, so no
name from a client ever becomes a path. Writes go straight to the file descriptor (no user-space
buffer), so once ``write`` returns the bytes are in the page cache and readable by any process;
``sync`` makes them durable (``fsync``) before an upload is acknowledged.

Beside the bytes, ``<id>.meta.json`` holds the resource's metadata and, once it has ended, its
terminal status and checksum: what is needed to rebuild its catalog entry when the catalog lost
it (Redis restarted empty). It is replaced atomically (a temporary file renamed over it), and,
when durable, fsync'd together with its directory (which holds the bytes' entry too).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any

from livefile.api.errors import ServerError
from livefile.api.model import is_valid_id

_FULL = (errno.ENOSPC, errno.EDQUOT)


def storage_error(exc: OSError) -> ServerError:
    """The error an uploader is closed with when storing its bytes failed; a full disk (or
    quota) is named as such, since it is the one failure the operator can fix at once."""
    if exc.errno in _FULL:
        return ServerError(f"Storage full: {os.strerror(exc.errno)}")
    return ServerError(f"Storage failure: {exc}")


class FileWriter:
    """Appends to one resource file."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync(self) -> None:
        """Flush the bytes written so far to stable storage."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def sync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStorage:
    """Resource bytes as files below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, resource_id: str) -> Path:
        if not is_valid_id(resource_id):
            raise ValueError(f"invalid resource id {resource_id[:40]!r}")
        return self.root / resource_id[0:2] / resource_id[2:4] / f"{resource_id}.bin"

    def index_path(self, resource_id: str) -> Path:
        """The line-break index of a text resource, beside its bytes."""
        return self.path(resource_id).with_suffix(".idx")

    def meta_path(self, resource_id: str) -> Path:
        """The metadata and terminal-status record, beside the bytes."""
        return self.path(resource_id).with_suffix(".meta.json")

    def write_meta(self, resource_id: str, record: dict[str, Any], durable: bool) -> None:
        """Replace the record atomically; ``durable``: fsync'd with its directory first."""
        path = self.meta_path(resource_id)
        temporary = path.with_suffix(f".{os.getpid()}-{secrets.token_hex(4)}.tmp")
        data = json.dumps(record, separators=(",", ":")).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)  # e.g. a full disk: leave no half-written file
            raise
        if durable:
            sync_directory(path.parent)

    def read_meta(self, resource_id: str) -> dict[str, Any] | None:
        """The record, or None when there is none (or it cannot be read)."""
        try:
            record = json.loads(self.meta_path(resource_id).read_bytes())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def create(self, resource_id: str) -> FileWriter:
        path = self.path(resource_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileWriter(path)

    def reopen(self, resource_id: str) -> FileWriter:
        """Append to an existing resource's bytes (``FileNotFoundError`` when there are none)."""
        path = self.path(resource_id)
        if not path.is_file():
            raise FileNotFoundError(path)
        return FileWriter(path)

    def size(self, resource_id: str) -> int:
        try:
            return self.path(resource_id).stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, resource_id: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        fd = os.open(self.path(resource_id), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            offset = start
            while offset < end:
                data = os.pread(fd, end - offset, offset)
                if not data:
                    raise OSError(f"resource {resource_id} is shorter than {end} bytes")
                chunks.append(data)
                offset += len(data)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)
