"""The bytes of a ZIP's records (APPNOTE 6.3.x), shared by every ZIP the server writes: the
repack engine's streaming writer (``repack/zipout.py``) and the bundles' fixed layout
(``bundle/layout.py``). Pure functions of an entry's ``ZipRecord``: no I/O, no state.

Each entry carries the DOS time (local time, 2 s steps, clamped to 1980..2107) and an extended
timestamp (``UT``) with the exact UTC second where it fits 32 bits. Zip64 fields are written
where a size, an offset or the entry count needs them.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

ZIP64_LIMIT = 0xFFFFFFFF
COUNT_LIMIT = 0xFFFF
FLAG_DATA_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800
STORED = 0
DEFLATED = 8
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = (3 << 8) | _VERSION_ZIP64
_REGULAR_FILE_ATTR = (0o100644 << 16) & 0xFFFFFFFF
_DOS_EPOCH = (0, (1 << 5) | 1)  # 1980-01-01 00:00:00
_DOS_LAST = ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31)  # 2107-12-31 23:59:58


def dos_time(mtime: float) -> tuple[int, int]:
    """``(time, date)`` in DOS form, clamped to what it can say."""
    try:
        t = time.localtime(mtime)
    except (OverflowError, OSError, ValueError):
        return _DOS_EPOCH if mtime < 0 else _DOS_LAST
    if t.tm_year < 1980:
        return _DOS_EPOCH
    if t.tm_year > 2107:
        return _DOS_LAST
    return (
        (t.tm_hour << 11) | (t.tm_min << 5) | (min(t.tm_sec, 59) // 2),
        ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday,
    )


def timestamp_extra(mtime: float) -> bytes:
    seconds = int(mtime)
    if not 0 <= seconds < 2**31:
        return b""
    return struct.pack("<HHBI", 0x5455, 5, 1, seconds)


@dataclass(slots=True)
class ZipRecord:
    """What the headers of one entry say (slots: a writer keeps one per entry)."""

    name: bytes
    flags: int
    method: int
    dos_time: int
    dos_date: int
    crc: int
    compressed_size: int
    size: int
    offset: int
    timestamp: bytes
    zip64: bool
    """Zip64 sizes from the local header on (otherwise only where a size needs them)."""

    @classmethod
    def new(cls, name: str, mtime: float, method: int, offset: int, *, zip64: bool) -> ZipRecord:
        """An entry named ``name`` starting at ``offset``, sizes and CRC still zero."""
        flags = 0 if name.isascii() else FLAG_UTF8
        when, date = dos_time(mtime)
        return cls(
            name.encode("utf-8"), flags, method, when, date, 0, 0, 0, offset,
            timestamp_extra(mtime), zip64,
        )  # fmt: skip


def local_header(record: ZipRecord) -> bytes:
    """The local file header; a streamed entry's (data descriptor flag) has zero sizes."""
    extra = record.timestamp
    if record.zip64:
        # Sizes live in the Zip64 field; a streamed entry's are zero here and follow in its
        # 64-bit data descriptor.
        known = not record.flags & FLAG_DATA_DESCRIPTOR
        extra = (
            struct.pack(
                "<HHQQ",
                0x0001,
                16,
                record.size if known else 0,
                record.compressed_size if known else 0,
            )
            + extra
        )
        size32 = compressed32 = ZIP64_LIMIT
    else:
        size32, compressed32 = record.size, record.compressed_size
    head = struct.pack(
        "<IHHHHHIIIHH",
        0x04034B50,
        _VERSION_ZIP64 if record.zip64 else _VERSION_DEFAULT,
        record.flags,
        record.method,
        record.dos_time,
        record.dos_date,
        record.crc,
        compressed32,
        size32,
        len(record.name),
        len(extra),
    )
    return head + record.name + extra


def data_descriptor(record: ZipRecord) -> bytes:
    """What follows a streamed entry's data: 64-bit when its local header had Zip64 sizes or
    a size needs them."""
    if record.zip64 or record.size >= ZIP64_LIMIT or record.compressed_size >= ZIP64_LIMIT:
        return struct.pack("<IIQQ", 0x08074B50, record.crc, record.compressed_size, record.size)
    return struct.pack("<IIII", 0x08074B50, record.crc, record.compressed_size, record.size)


def central_header(record: ZipRecord) -> bytes:
    """The entry's central directory header."""
    zip64_fields: list[int] = []
    size32, compressed32, offset32 = record.size, record.compressed_size, record.offset
    # An entry whose local header has Zip64 sizes gets them here too, so both agree.
    if record.zip64 or record.size >= ZIP64_LIMIT or record.compressed_size >= ZIP64_LIMIT:
        zip64_fields += [record.size, record.compressed_size]
        size32 = compressed32 = ZIP64_LIMIT
    if record.offset >= ZIP64_LIMIT:
        zip64_fields.append(record.offset)
        offset32 = ZIP64_LIMIT
    extra = record.timestamp
    if zip64_fields:
        extra = (
            struct.pack(f"<HH{len(zip64_fields)}Q", 0x0001, 8 * len(zip64_fields), *zip64_fields)
            + extra
        )
    head = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        _MADE_BY_UNIX,
        _VERSION_ZIP64 if zip64_fields else _VERSION_DEFAULT,
        record.flags,
        record.method,
        record.dos_time,
        record.dos_date,
        record.crc,
        compressed32,
        size32,
        len(record.name),
        len(extra),
        0,
        0,
        0,
        _REGULAR_FILE_ATTR,
        offset32,
    )
    return head + record.name + extra


def end_records(count: int, directory_size: int, directory_start: int) -> bytes:
    """What ends a ZIP after its central directory (``directory_size`` bytes from
    ``directory_start``): the end record, preceded by the Zip64 end record and its locator
    when the count, the size or the offset needs them."""
    out = b""
    if count >= COUNT_LIMIT or directory_size >= ZIP64_LIMIT or directory_start >= ZIP64_LIMIT:
        end64 = directory_start + directory_size
        out = struct.pack(
            "<IQHHIIQQQQ",
            0x06064B50,
            44,
            _MADE_BY_UNIX,
            _VERSION_ZIP64,
            0,
            0,
            count,
            count,
            directory_size,
            directory_start,
        ) + struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
    return out + struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        min(count, COUNT_LIMIT),
        min(count, COUNT_LIMIT),
        min(directory_size, ZIP64_LIMIT),
        min(directory_start, ZIP64_LIMIT),
        0,
    )
