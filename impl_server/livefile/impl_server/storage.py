"""Filesystem storage: one append-only file per resource under the data directory.

Layout: ``<root>/<id[0:2]>/<id[2:4]>/<id>.bin``. Ids are validated before a path is built, so no
name from a client ever becomes a path. Writes go straight to the file descriptor (no user-space
buffer), so once ``write`` returns the bytes are in the page cache and readable by any process.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

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

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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

    def create(self, resource_id: str) -> FileWriter:
        path = self.path(resource_id)
        path.parent.mkdir(parents=True, exist_ok=True)
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
