"""A ZIP writer for an append-only sink: bytes leave strictly in order and are never revisited.

Written here rather than taken from ``zipfile``: on an unseekable stream ``zipfile`` puts a data
descriptor on every entry, including STORED ones, which streaming readers (Java's ZipInputStream,
stream-unzip) cannot read; and finishing a valid ZIP after a refusal mid-entry would need its
internals. This writer gives an entry whose bytes are all in hand exact sizes and CRC in its
local header (STORED or Deflate), and streams longer entries as Deflate with a data descriptor —
at level 0 when they do not shrink, which is a stored copy inside Deflate framing (5 bytes per
64 KiB) that every reader handles.

Each entry carries the DOS time (local time, 2 s steps, clamped to 1980..2107) and an extended
timestamp (``UT``) with the exact UTC second where it fits 32 bits. Zip64 fields are written
where a size, an offset or the entry count needs them.

Deflate and CRC-32 come from zlib-ng (same API and format as zlib): measured here, level 6 runs
at 32 MiB/s of CPU on logs against zlib's 21, CRC-32 at 7.5 GB/s against 1.9.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from zlib_ng import zlib_ng

ZIP64_LIMIT = 0xFFFFFFFF
_COUNT_LIMIT = 0xFFFF
_FLAG_DATA_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
_STORED = 0
_DEFLATED = 8
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = (3 << 8) | _VERSION_ZIP64
_REGULAR_FILE_ATTR = (0o100644 << 16) & 0xFFFFFFFF
_DOS_EPOCH = (0, (1 << 5) | 1)  # 1980-01-01 00:00:00
_DOS_LAST = ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31)  # 2107-12-31 23:59:58


def _dos_time(mtime: float) -> tuple[int, int]:
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


def _timestamp_extra(mtime: float) -> bytes:
    seconds = int(mtime)
    if not 0 <= seconds < 2**31:
        return b""
    return struct.pack("<HHBI", 0x5455, 5, 1, seconds)


@dataclass(slots=True)
class _Record:
    """What the central directory needs of one written entry (slots: one per entry is kept)."""

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


class ZipWriter:
    """Writes one ZIP to ``sink``. Output is gathered up to ``chunk_size`` bytes before it is
    handed on; ``flush`` hands on what is pending (call it before waiting for input, so that a
    reader of the growing ZIP sees everything produced so far). With a ``pool``, streamed
    entries above level 0 are deflated in its threads, ``in_flight`` chunks at most."""

    def __init__(
        self,
        sink: Callable[[bytes], object],
        *,
        chunk_size: int = 1 << 20,
        pool: Executor | None = None,
        in_flight: int = 3,
    ) -> None:
        self._sink = sink
        self._pool = pool
        self.in_flight = in_flight
        self._chunk_size = chunk_size
        self._pending = bytearray()
        self._offset = 0
        self._records: list[_Record] = []
        self._open: EntryStream | None = None
        self._closed = False

    @property
    def entries(self) -> int:
        return len(self._records)

    @property
    def offset(self) -> int:
        """Bytes of ZIP produced so far, flushed or pending."""
        return self._offset

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending += data
        self._offset += len(data)
        if len(self._pending) >= self._chunk_size:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            chunk = bytes(self._pending)
            self._pending.clear()
            self._sink(chunk)

    def _local_header(self, record: _Record) -> None:
        extra = record.timestamp
        if record.zip64:
            # Sizes live in the Zip64 field; a streamed entry's are zero here and follow in its
            # 64-bit data descriptor.
            known = not record.flags & _FLAG_DATA_DESCRIPTOR
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
        self._emit(
            struct.pack(
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
        )
        self._emit(record.name)
        self._emit(extra)

    def _new_record(self, name: str, mtime: float, method: int, *, zip64: bool) -> _Record:
        if self._open is not None or self._closed:
            raise RuntimeError("an entry is still open, or the ZIP is closed")
        encoded = name.encode("utf-8")
        flags = 0 if name.isascii() else _FLAG_UTF8
        dos_time, dos_date = _dos_time(mtime)
        return _Record(
            encoded, flags, method, dos_time, dos_date, 0, 0, 0, self._offset,
            _timestamp_extra(mtime), zip64,
        )  # fmt: skip

    def add_whole(
        self, name: str, mtime: float, data: bytes | bytearray, compressed: bytes | None
    ) -> None:
        """Writes an entry whose bytes are all in hand, with exact sizes and CRC up front:
        Deflate when ``compressed`` (raw Deflate of ``data``) is given, else STORED."""
        method = _STORED if compressed is None else _DEFLATED
        body = data if compressed is None else compressed
        record = self._new_record(name, mtime, method, zip64=False)
        record.crc = zlib_ng.crc32(data)
        record.size = len(data)
        record.compressed_size = len(body)
        record.zip64 = len(body) >= ZIP64_LIMIT or len(data) >= ZIP64_LIMIT
        self._local_header(record)
        self._emit(body)
        self._records.append(record)

    def open_entry(self, name: str, mtime: float, *, level: int, large: bool) -> EntryStream:
        """Starts a streamed Deflate entry; its sizes follow its data.

        ``large`` (the entry is known to reach 4 GiB) puts a Zip64 field in the local header and
        a 64-bit data descriptor after the data. Otherwise the local header has none and the
        descriptor is 64-bit only if the entry did reach 4 GiB: readers of local headers that
        predate the Zip64 field check (Java's ZipInputStream before 21) take a descriptor's
        width from the bytes they inflated, and misread a 64-bit one after a small entry.
        """
        record = self._new_record(name, mtime, _DEFLATED, zip64=large)
        record.flags |= _FLAG_DATA_DESCRIPTOR
        self._local_header(record)
        self._open = EntryStream(self, record, level, self._pool)
        return self._open

    def _end_entry(self, stream: EntryStream, *, keep: bool) -> None:
        record = stream.record
        if record.zip64 or record.size >= ZIP64_LIMIT or record.compressed_size >= ZIP64_LIMIT:
            descriptor = struct.pack(
                "<IIQQ", 0x08074B50, record.crc, record.compressed_size, record.size
            )
        else:
            descriptor = struct.pack(
                "<IIII", 0x08074B50, record.crc, record.compressed_size, record.size
            )
        self._emit(descriptor)
        self._open = None
        if keep:
            self._records.append(record)

    def close(self) -> None:
        """Finishes an entry left open (leaving it out of the central directory: it is
        incomplete), writes the central directory and flushes."""
        if self._closed:
            return
        if self._open is not None:
            self._open.abandon()
        start = self._offset
        for record in self._records:
            self._central_record(record)
        size = self._offset - start
        count = len(self._records)
        if count >= _COUNT_LIMIT or size >= ZIP64_LIMIT or start >= ZIP64_LIMIT:
            end64 = self._offset
            self._emit(
                struct.pack(
                    "<IQHHIIQQQQ",
                    0x06064B50,
                    44,
                    _MADE_BY_UNIX,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    size,
                    start,
                )
            )
            self._emit(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
        self._emit(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                min(count, _COUNT_LIMIT),
                min(count, _COUNT_LIMIT),
                min(size, ZIP64_LIMIT),
                min(start, ZIP64_LIMIT),
                0,
            )
        )
        self._closed = True
        self.flush()

    def _central_record(self, record: _Record) -> None:
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
                struct.pack(
                    f"<HH{len(zip64_fields)}Q", 0x0001, 8 * len(zip64_fields), *zip64_fields
                )
                + extra
            )
        self._emit(
            struct.pack(
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
        )
        self._emit(record.name)
        self._emit(extra)


class _SerialDeflate:
    def __init__(self, level: int) -> None:
        self._deflate = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15)

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._deflate.compress(data)

    def flush(self) -> bytes:
        return self._deflate.flush()


_CHUNK = 1 << 20
_WINDOW = 32 * 1024
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # BFINAL, fixed Huffman, end of block: what zlib ends with


def _deflate_chunk(chunk: bytes, level: int, window: bytes) -> bytes:
    if window:
        deflate = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, zdict=window)
    else:
        deflate = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15)
    return deflate.compress(chunk) + deflate.flush(zlib_ng.Z_SYNC_FLUSH)


class _ParallelDeflate:
    """pigz's scheme: 1 MiB chunks deflated in worker threads (zlib releases the GIL), each
    primed with the 32 KiB before it so that little ratio is lost, each ended by a sync flush
    (byte-aligned, not final) so that their outputs join into one Deflate stream, which an empty
    final block ends. At most ``in_flight`` chunks wait, so memory stays a few MiB."""

    def __init__(self, level: int, pool: Executor, in_flight: int) -> None:
        self._level = level
        self._pool = pool
        self._in_flight = in_flight
        self._input = bytearray()
        self._window = b""
        self._jobs: deque[Future[bytes]] = deque()

    def _submit(self) -> None:
        chunk = bytes(self._input)
        self._input.clear()
        self._jobs.append(self._pool.submit(_deflate_chunk, chunk, self._level, self._window))
        self._window = (self._window + chunk[-_WINDOW:])[-_WINDOW:]

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        self._input += data
        if len(self._input) < _CHUNK:
            return b""
        self._submit()
        done: list[bytes] = []
        while len(self._jobs) > self._in_flight or (self._jobs and self._jobs[0].done()):
            done.append(self._jobs.popleft().result())
        return b"".join(done)

    def flush(self) -> bytes:
        if self._input:
            self._submit()
        done = [job.result() for job in self._jobs]
        self._jobs.clear()
        done.append(_FINAL_EMPTY_BLOCK)
        return b"".join(done)


class EntryStream:
    """The data of one streamed entry: CRC-32 and Deflate as it comes, nothing kept but the
    chunks being deflated in parallel."""

    def __init__(
        self, writer: ZipWriter, record: _Record, level: int, pool: Executor | None
    ) -> None:
        self._writer = writer
        self.record = record
        self._deflate: _SerialDeflate | _ParallelDeflate
        if pool is None or level == 0:
            self._deflate = _SerialDeflate(level)
        else:
            self._deflate = _ParallelDeflate(level, pool, writer.in_flight)
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        record = self.record
        record.crc = zlib_ng.crc32(data, record.crc)
        record.size += len(data)
        out = self._deflate.compress(data)
        record.compressed_size += len(out)
        self._writer._emit(out)

    def _finish(self, *, keep: bool) -> None:
        if self._done:
            return
        self._done = True
        out = self._deflate.flush()
        self.record.compressed_size += len(out)
        self._writer._emit(out)
        self._writer._end_entry(self, keep=keep)

    def close(self) -> None:
        self._finish(keep=True)

    def abandon(self) -> None:
        """Ends the entry's bytes well-formed but leaves it out of the central directory."""
        self._finish(keep=False)
