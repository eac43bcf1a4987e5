"""The line-break index of a text resource, kept on disk beside its bytes.

Format: one fixed-width entry per complete line, the absolute offset just past its ``\\n`` as a
6-byte little-endian unsigned integer (files up to 256 TiB). Line ``i`` spans
``[end[i-1], end[i])`` with ``end[-1] = 0``, so any line is found with one positional read,
whatever its number. Entries of a whole data message are written with one system call; the index
is appended before the checkpoint that publishes the lines, so it is never behind a status.
"""

from __future__ import annotations

import os
from pathlib import Path

ENTRY_SIZE = 6
MAX_OFFSET = (1 << (8 * ENTRY_SIZE)) - 1


READ_PIECE = 4 * 1024 * 1024  # bytes read at a time when an index is made whole again


def encode(ends: list[int]) -> bytes:
    return b"".join(end.to_bytes(ENTRY_SIZE, "little") for end in ends)


def decode(raw: bytes) -> list[int]:
    return [
        int.from_bytes(raw[offset : offset + ENTRY_SIZE], "little")
        for offset in range(0, len(raw), ENTRY_SIZE)
    ]


class LineIndexWriter:
    """Appends the ends of complete lines; blocking, called from the upload's writer thread."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.count = os.fstat(self._fd).st_size // ENTRY_SIZE
        self.last_end = read_ends(path, self.count - 1, 1)[0] if self.count else 0

    def append(self, ends: list[int]) -> None:
        if not ends:
            return
        raw = encode(ends)
        view = memoryview(raw)
        while view:
            view = view[os.write(self._fd, view) :]
        self.count += len(ends)
        self.last_end = ends[-1]

    def sync(self) -> None:
        """Flush the entries written so far to stable storage."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_ends(path: Path, first: int, count: int) -> list[int]:
    """Line ends ``first .. first+count-1`` (fewer if the index is shorter)."""
    if count <= 0:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        raw = os.pread(fd, count * ENTRY_SIZE, first * ENTRY_SIZE)
    finally:
        os.close(fd)
    return decode(raw[: len(raw) - len(raw) % ENTRY_SIZE])


def entry_count(path: Path) -> int:
    try:
        return path.stat().st_size // ENTRY_SIZE
    except FileNotFoundError:
        return 0


def read_lines(
    data_path: Path,
    index_path: Path,
    start: int,
    count: int,
    total: int,
    size: int,
    max_bytes: int,
) -> list[bytes]:
    """Lines ``start .. start+count-1`` of a resource whose status says ``total`` lines and
    ``size`` bytes; the caller has checked the bounds. The reply holds at most ``max_bytes``
    (but always at least one line), so a large request is answered with fewer lines."""
    if count <= 0:
        return []
    first = start - 1 if start > 0 else 0
    ends = read_ends(index_path, first, count + (1 if start > 0 else 0))
    begin = ends.pop(0) if start > 0 else 0
    ends = ends[:count]
    if len(ends) < count and start + len(ends) < total:
        ends.append(size)  # the final line of an ended resource has no line break
    kept = 1
    while kept < len(ends) and ends[kept] - begin <= max_bytes:
        kept += 1
    ends = ends[:kept]
    fd = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, ends[-1] - begin, begin)
    finally:
        os.close(fd)
    lines, offset = [], 0
    for end in ends:
        lines.append(raw[offset : end - begin])
        offset = end - begin
    return lines


def final_line_count(index_path: Path, size: int) -> int:
    """Lines of an ended resource from its index: complete ones, plus a final unterminated one."""
    count = entry_count(index_path)
    last_end = read_ends(index_path, count - 1, 1)[0] if count else 0
    return count + (1 if size > last_end else 0)
