"""Finding the lines of a text resource that contain a piece of text, a bounded piece at a time.

A search reads the resource's bytes from a line on, in the order of its line index, and stops
after ``max_scan_bytes`` or ``limit`` matching lines, whichever comes first: one request does
bounded work whatever the resource's size, and says where the next one continues. The browser
page pages through a 10-million-line log this way without ever loading its lines.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from livefile.api.model import ResourceStatus
from livefile.impl_server.line_index import ENTRY_SIZE
from livefile.impl_server.reader import NoLineAccessError, Reader, check_lines

# How many index entries are read at a time (6 bytes each): 1.5 MiB.
INDEX_BATCH = 262_144


@dataclass(frozen=True)
class SearchPage:
    """Matching line numbers (from 0) among lines ``start .. next_start - 1``, read at
    ``status``."""

    start: int
    matches: list[int]
    next_start: int
    status: ResourceStatus

    @property
    def scanned_all(self) -> bool:
        """Whether the scan reached the last line published at ``status``."""
        return self.next_start >= (self.status.number_of_lines or 0)


class _Ends:
    """Line ends as the index stores them, decoded only when looked at: a scan bisects them
    (a few look-ups per match) instead of decoding every entry in Python."""

    def __init__(self, raw: bytes, final: int | None) -> None:
        self._raw = raw
        self._count = len(raw) // ENTRY_SIZE
        self._final = final  # the end of an ended resource's final line, which has no entry

    def __len__(self) -> int:
        return self._count + (self._final is not None)

    def __getitem__(self, i: int) -> int:
        if i == self._count and self._final is not None:
            return self._final
        return int.from_bytes(self._raw[i * ENTRY_SIZE : (i + 1) * ENTRY_SIZE], "little")


def find_lines(
    data_path: Path,
    index_path: Path,
    needle: bytes,
    start: int,
    total: int,
    size: int,
    limit: int,
    max_scan_bytes: int,
    ignore_case: bool,
) -> tuple[list[int], int]:
    """Lines from ``start`` (of ``total`` published, in ``size`` bytes) that contain
    ``needle``, at most ``limit`` of them, scanning at most ``max_scan_bytes`` (but always one
    line); and the line where the scan stopped. ``needle`` holds no line break and, with
    ``ignore_case``, is lower case already (ASCII letters are compared without case)."""
    matches: list[int] = []
    line = start
    budget = max_scan_bytes
    if line >= total:
        return matches, line
    with open(data_path, "rb", buffering=0) as data, open(index_path, "rb", buffering=0) as index:
        begin = 0
        if line > 0:
            entry = os.pread(index.fileno(), ENTRY_SIZE, (line - 1) * ENTRY_SIZE)
            begin = int.from_bytes(entry, "little")
        while line < total and len(matches) < limit:
            batch = min(INDEX_BATCH, total - line)
            raw = os.pread(index.fileno(), batch * ENTRY_SIZE, line * ENTRY_SIZE)
            short = len(raw) < batch * ENTRY_SIZE
            ends = _Ends(raw[: len(raw) - len(raw) % ENTRY_SIZE], size if short else None)
            # As many whole lines as the budget holds; at least one per call.
            fits = min(bisect_right(ends, begin + budget), batch)
            if fits == 0:
                if line > start:
                    break
                fits = 1
            chunk = os.pread(data.fileno(), ends[fits - 1] - begin, begin)
            budget -= len(chunk)
            if ignore_case:
                chunk = chunk.lower()
            scanned_to = line + fits
            position = chunk.find(needle)
            while position >= 0:
                within = bisect_right(ends, begin + position, 0, fits)
                matches.append(line + within)
                if len(matches) == limit:
                    scanned_to = line + within + 1
                    break
                # One match per line: go on from the next line's start.
                position = chunk.find(needle, ends[within] - begin)
            begin = ends[scanned_to - line - 1]
            line = scanned_to
    return matches, line


async def search_lines(
    reader: Reader,
    text: str,
    start: int,
    limit: int,
    max_scan_bytes: int,
    *,
    ignore_case: bool = True,
    status: ResourceStatus | None = None,
) -> SearchPage:
    """The lines from ``start`` on that contain ``text`` (one line, not empty), among the lines
    published at ``status`` (the newest if None). ``NoLineAccessError`` without a line index,
    ``RangeNotReadableError`` for a start beyond the published lines."""
    if not text or "\n" in text:
        raise ValueError("the text to find must be one line, not empty")
    status = status or await reader.status()
    total = status.number_of_lines
    if total is None:
        raise NoLineAccessError("The resource has no line access")
    check_lines(status, start, 0)
    needle = text.encode("utf-8")
    if ignore_case:
        needle = needle.lower()
    matches, next_start = await asyncio.to_thread(
        find_lines,
        reader.path,
        reader.index_path,
        needle,
        start,
        total,
        status.current_size,
        limit,
        max_scan_bytes,
        ignore_case,
    )
    return SearchPage(start, matches, next_start, status)
