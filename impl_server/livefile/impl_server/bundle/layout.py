"""The fixed layout of a bundle of finished members: every byte of the ZIP placed before the
first is sent, so that any range is answered without producing the bytes before it.

Every member is a STORED entry with its size and CRC-32 in its local header (Zip64 fields where
needed), so headers never depend on bytes still to come: the ZIP is a list of pieces, each
either bytes held here (a local header; the MANIFEST.json entry; the central directory and end
records) or a slice of one member's file. ``pieces(start, end)`` says which, by bisection. No
library does this: zipstream-ng (the Python streamed-ZIP library that predicts a length) puts a
data descriptor after every entry and can only produce its output from the start (its issue
#19); the records' bytes come from ``zipformat.py``, shared with the repack writer.

MANIFEST.json is the last entry: the same place in a bundle whose members grow, where the sizes
and checksums are known only at the end (``bundle_job.py``).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import crc32c
from zlib_ng import zlib_ng

from livefile.impl_server.bundle.crc import crc32c_combine
from livefile.impl_server.zipformat import (
    STORED,
    ZIP64_LIMIT,
    ZipRecord,
    central_header,
    end_records,
    local_header,
)

MANIFEST_NAME = "MANIFEST.json"


@dataclass(frozen=True)
class BundleMember:
    """One finished member as the layout needs it."""

    path: str
    resource: str
    size: int
    crc32: int  # zlib's CRC-32, which the ZIP headers carry
    crc32c: int  # of its bytes too: the bundle's checksum is combined from them
    mtime: float
    checksum: str | None  # the member's own checksum, as its resource shows it

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "resource": self.resource,
            "status": "COMPLETED",
            "size": self.size,
            "checksum": self.checksum,
            "crc32": f"{self.crc32:08x}",
        }


def manifest_bytes(filename: str, entries: Sequence[dict[str, Any]]) -> bytes:
    """MANIFEST.json: every member with its size and checksum (and, in a FAILED bundle, which
    member failed and which were never written)."""
    # One member per line, written by json's C encoder (``indent`` takes its slow pure-Python
    # path: 1.5 s for 10,000 members).
    lines = ",\n  ".join(json.dumps(entry, ensure_ascii=False) for entry in entries)
    head = json.dumps(filename, ensure_ascii=False)
    return f'{{"bundle": {head},\n "members": [\n  {lines}\n ]\n}}\n'.encode()


# A piece is bytes held here, or the index of the member whose whole file it is.
Piece = bytes | int


class BundleLayout:
    """The ZIP of ``members`` (in order) and MANIFEST.json, as pieces."""

    def __init__(self, filename: str, members: Sequence[BundleMember]) -> None:
        self.filename = filename
        self.members = list(members)
        self.last_modified = max((m.mtime for m in self.members), default=0.0)
        self._starts: list[int] = []
        self._pieces: list[Piece] = []
        self._lengths: list[int] = []
        records: list[ZipRecord] = []
        offset = 0

        def put(piece: Piece, length: int) -> None:
            nonlocal offset
            self._starts.append(offset)
            self._pieces.append(piece)
            self._lengths.append(length)
            offset += length

        for index, member in enumerate(self.members):
            record = self._record(member.path, member.mtime, offset, member.size, member.crc32)
            header = local_header(record)
            put(header, len(header))
            put(index, member.size)
            records.append(record)
        manifest = manifest_bytes(filename, [m.manifest_entry() for m in self.members])
        record = self._record(
            MANIFEST_NAME, self.last_modified, offset, len(manifest), zlib_ng.crc32(manifest)
        )
        put(local_header(record) + manifest, len(local_header(record)) + len(manifest))
        records.append(record)
        directory_start = offset
        directory = b"".join(central_header(r) for r in records)
        tail = directory + end_records(len(records), len(directory), directory_start)
        put(tail, len(tail))
        self.size = offset

    @staticmethod
    def _record(name: str, mtime: float, offset: int, size: int, crc: int) -> ZipRecord:
        record = ZipRecord.new(name, mtime, STORED, offset, zip64=size >= ZIP64_LIMIT)
        record.crc, record.size, record.compressed_size = crc, size, size
        return record

    def pieces(self, start: int, end: int) -> Iterator[tuple[Piece, int, int]]:
        """What bytes ``[start, end)`` are made of: ``(piece, offset in it, count)`` in order."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"[{start}, {end}) is not within the bundle's {self.size} bytes")
        index = bisect.bisect_right(self._starts, start) - 1
        position = start
        while position < end:
            piece_start = self._starts[index]
            inside = position - piece_start
            count = min(self._lengths[index] - inside, end - position)
            if count > 0:
                yield self._pieces[index], inside, count
            position += count
            index += 1

    def crc32c(self) -> int:
        """The CRC-32C of the whole ZIP: the held bytes' CRC-32C combined with the members'."""
        crc = 0
        for piece, length in zip(self._pieces, self._lengths, strict=True):
            if isinstance(piece, bytes):
                crc = crc32c.crc32c(piece, crc)
            else:
                crc = crc32c_combine(crc, self.members[piece].crc32c, length)
        return crc

    def to_json(self) -> dict[str, Any]:
        return {"filename": self.filename, "members": [asdict(m) for m in self.members]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleLayout:
        return cls(str(data["filename"]), [BundleMember(**m) for m in data["members"]])
