"""The repack itself: read entries, check them against the limits, write them to the ZIP."""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import cast

from zlib_ng import zlib_ng

from livefile.impl_server.repack.archive import BLOCK_SIZE, ArchiveReader, Header
from livefile.impl_server.repack.detect import (
    SNIFF_BYTES,
    Kind,
    compression_of,
    detect,
    strip_compression_suffix,
)
from livefile.impl_server.repack.model import RepackError, RepackLimits, RepackSummary, Source
from livefile.impl_server.repack.names import NameRegistry, safe_entry_name, single_file_name
from livefile.impl_server.repack.zipout import ZipWriter

SAMPLE_SIZE = 64 * 1024
"""Bytes of an entry trial-compressed to choose between Deflate and a stored copy; an entry no
longer than this is written whole, with exact sizes in its local header."""
_MIN_SAVING = 0.10
"""Deflate is used only where the sample shrinks by at least this much: below it, Deflate costs
far more time than the bytes it saves are worth."""
_ZIP64_SIZE = 0xF000_0000
"""A streamed entry declared at least this large gets Zip64 sizes from its local header on (the
margin covers Deflate's framing on incompressible data); any other gets them only in its data
descriptor and the central directory, and only if it does reach 4 GiB."""

_MAX_THREADS = 4
_INFLATE_ERROR = cast("type[Exception]", zlib_ng.error)  # its stub types it as an instance

_FORMATS = {
    Kind.ZIP: ("zip",),
    Kind.TAR: ("tar",),
    Kind.RAR: ("rar", "rar5"),
    Kind.SEVEN_ZIP: ("7zip",),
    Kind.COMPRESSED: ("tar", "raw"),
}

ProgressCallback = Callable[[int], None]


class _Budget:
    """The running counts that the limits apply to."""

    def __init__(self, limits: RepackLimits, consumed: Callable[[], int]) -> None:
        self._limits = limits
        self._consumed = consumed
        self.entries = 0
        self.unpacked = 0

    def count_entry(self) -> None:
        self.entries += 1
        if self.entries > self._limits.max_entries:
            raise RepackError("entry_count_limit", f"more than {self._limits.max_entries} entries")

    def produce(self, size: int) -> None:
        limits = self._limits
        self.unpacked += size
        if self.unpacked > limits.max_unpacked_bytes:
            raise RepackError(
                "unpacked_size_limit", f"more than {limits.max_unpacked_bytes} bytes unpacked"
            )
        if self.unpacked >= limits.ratio_floor:
            consumed = max(self._consumed(), 1)
            if self.unpacked > limits.max_ratio * consumed:
                raise RepackError(
                    "ratio_limit",
                    f"{self.unpacked} bytes unpacked from {consumed} bytes of input "
                    f"(more than {limits.max_ratio:g}:1)",
                )


class _Repack:
    """One repack run: the writer, the limits and the progress report, shared by all inputs."""

    def __init__(
        self,
        source: _Counted,
        sink: Callable[[bytes], object],
        limits: RepackLimits,
        on_progress: ProgressCallback | None,
        pool: Executor | None,
        threads: int,
    ) -> None:
        self.source = source
        self.limits = limits
        self.writer = ZipWriter(sink, pool=pool, in_flight=threads + 1)
        self.names = NameRegistry()
        self.budget = _Budget(limits, lambda: source.consumed)
        self.skipped = 0
        self._on_progress = on_progress
        self._reported = -1

    def progress(self) -> None:
        consumed = self.source.consumed
        if self._on_progress is not None and consumed != self._reported:
            self._reported = consumed
            self._on_progress(consumed)

    def write_entry(
        self, name: str, mtime: float, declared: int | None, blocks: Iterator[memoryview | bytes]
    ) -> None:
        """Copies one file. Each block is counted against the limits before it is written, and
        never kept past its turn except for the first ``SAMPLE_SIZE`` bytes."""
        budget = self.budget
        head = bytearray()
        for block in blocks:
            budget.produce(len(block))
            head += block
            if len(head) >= SAMPLE_SIZE:
                break
        else:
            self._write_small(name, mtime, head)
            return
        sample = head[:SAMPLE_SIZE]
        shrinks = len(zlib_ng.compress(sample, 1)) <= (1 - _MIN_SAVING) * len(sample)
        level = self.limits.compression_level if shrinks else 0
        large = declared is not None and declared >= _ZIP64_SIZE
        stream = self.writer.open_entry(name, mtime, level=level, large=large)
        stream.write(head)
        del head, sample
        self.progress()
        for block in blocks:
            budget.produce(len(block))
            stream.write(block)
            self.progress()
        stream.close()
        self.progress()

    def _write_small(self, name: str, mtime: float, data: bytearray) -> None:
        compressed: bytes | None = None
        if data:
            deflate = zlib_ng.compressobj(self.limits.compression_level, zlib_ng.DEFLATED, -15)
            candidate = deflate.compress(data) + deflate.flush()
            if len(candidate) <= (1 - _MIN_SAVING) * len(data):
                compressed = candidate
        self.writer.add_whole(name, mtime, data, compressed)
        self.progress()

    def copy_archive(self, reader: ArchiveReader) -> None:
        while True:
            header = reader.next_header()
            if header is None:
                return
            self.budget.count_entry()
            self.copy_entry(reader, header)

    def copy_entry(self, reader: ArchiveReader, header: Header) -> None:
        if header.encrypted:
            raise RepackError("encrypted_archive", f"entry {header.name!r} is encrypted")
        if header.kind == "dir":
            return  # implied by its files' names (libarchive refuses to read a directory's data)
        if header.kind == "other":
            # Any data a link or device carries is still decoded (libarchive would decode it to
            # skip it), so it counts against the limits: a bomb cannot hide there.
            for block in self.entry_blocks(reader):
                self.budget.produce(len(block))
            self.skipped += 1
            return
        name = safe_entry_name(header.name, self.limits.max_path_bytes)
        self.names.claim(name)
        mtime = time.time() if header.mtime is None else header.mtime
        self.write_entry(name, mtime, header.size, self.entry_blocks(reader))

    def entry_blocks(self, reader: ArchiveReader) -> Iterator[memoryview]:
        while True:
            block = reader.read_block()
            if not block:
                return
            yield block

    def summary(self, format_name: str) -> RepackSummary:
        return RepackSummary(
            entries_written=self.writer.entries,
            entries_skipped=self.skipped,
            unpacked_bytes=self.budget.unpacked,
            consumed_bytes=self.source.consumed,
            output_bytes=self.writer.offset,
            format=format_name,
        )


class _Counted:
    """The source, counting the bytes read from it (for progress and the ratio limit), with the
    head read for detection put back in front once."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._head = b""
        self.consumed = 0

    def read_head(self) -> bytes:
        head = b""
        while len(head) < SNIFF_BYTES:
            data = self.read(SNIFF_BYTES - len(head))
            if not data:
                break
            head += data
        return head

    def replay(self, head: bytes) -> None:
        self._head = head + self._head

    def read(self, size: int) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        data = self._source.read(size)
        self.consumed += len(data)
        if len(data) > size:  # a source that gives more than asked: keep the rest for later
            data, self._head = data[:size], data[size:]
        return data


class _Gunzip:
    """gzip decoded here rather than by libarchive, whose gzip filter does not check the members'
    CRC-32 (a corrupt .tar.gz would repack silently wrong); zlib-ng checks CRC and length, and
    inflates twice as fast as zlib here. Output per read is bounded, so a bomb is never
    inflated beyond one block ahead of the limits."""

    def __init__(self, source: _Counted) -> None:
        self._source = source
        self._inflate = zlib_ng.decompressobj(31)
        self._input = b""
        self._in_member = False
        self._ended = False

    def read(self, size: int) -> bytes:
        while not self._ended:
            if not self._input:
                self._input = self._source.read(BLOCK_SIZE)
                if not self._input:
                    if self._in_member:
                        raise RepackError("invalid_archive", "truncated gzip data")
                    self._ended = True
                    break
            if not self._in_member:
                if len(self._input) < 2:
                    more = self._source.read(BLOCK_SIZE)
                    if more:
                        self._input += more
                        continue
                if not self._input.startswith(b"\x1f\x8b"):
                    # Bytes after the last member are ignored, as gzip itself does.
                    self._ended = True
                    break
                self._in_member = True
            try:
                out = self._inflate.decompress(self._input, size)
            except _INFLATE_ERROR as exc:
                raise RepackError("invalid_archive", f"corrupt gzip data ({exc})") from None
            self._input = self._inflate.unconsumed_tail
            if self._inflate.eof:
                self._input = self._inflate.unused_data
                self._inflate = zlib_ng.decompressobj(31)
                self._in_member = False
            if out:
                return out
        return b""


def _gzip_mtime(head: bytes) -> float | None:
    """A gzip member's own modification time (the compressed file's), 0 meaning none."""
    if len(head) >= 8 and head.startswith(b"\x1f\x8b"):
        (mtime,) = struct.unpack_from("<I", head, 4)
        return float(mtime) if mtime else None
    return None


def _run(
    source: Source,
    sink: Callable[[bytes], object],
    limits: RepackLimits,
    source_name: str,
    on_progress: ProgressCallback | None,
    *,
    source_size: int | None,
    seek: Callable[[int, int], int] | None,
    deflate_threads: int | None,
) -> RepackSummary:
    threads = _usable_cpus() if deflate_threads is None else max(1, deflate_threads)
    pool = ThreadPoolExecutor(threads, "repack-deflate") if threads > 1 else None
    try:
        counted = _Counted(source)
        head = counted.read_head()
        kind = detect(head)
        run = _Repack(counted, sink, limits, on_progress, pool, threads)
        try:
            if kind is Kind.PLAIN:
                format_name = _copy_plain(run, head, source_name, source_size)
            elif kind is Kind.SEVEN_ZIP and seek is None:
                raise RepackError(
                    "unsupported_format",
                    "7z is read from the complete file only (see needs_whole_source)",
                )
            else:
                format_name = _copy_archive(run, kind, head, source_name, seek)
        except RepackError:
            # What is already in the sink stays; ending it as a valid ZIP of the entries
            # completed so far costs only the central directory.
            run.writer.close()
            raise
        run.writer.close()
        run.progress()
        return run.summary(format_name)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _usable_cpus() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return min(count, _MAX_THREADS)


def _copy_plain(run: _Repack, head: bytes, source_name: str, size: int | None) -> str:
    run.budget.count_entry()
    name = single_file_name(source_name, run.limits.max_path_bytes)
    run.names.claim(name)

    def blocks() -> Iterator[bytes]:
        data = head
        while data:
            yield data
            run.writer.flush()
            data = run.source.read(BLOCK_SIZE)

    run.write_entry(name, time.time(), size, blocks())
    return Kind.PLAIN.value


def _copy_archive(
    run: _Repack,
    kind: Kind,
    head: bytes,
    source_name: str,
    seek: Callable[[int, int], int] | None,
) -> str:
    compression = compression_of(head) if kind is Kind.COMPRESSED else None
    read: Callable[[int], bytes] = run.source.read
    filters: tuple[str, ...] = ()
    if kind is Kind.SEVEN_ZIP:
        assert seek is not None
        seek(0, io.SEEK_SET)  # a complete file is rewound rather than its head replayed
        run.source.consumed = 0
    else:
        run.source.replay(head)
        if compression is not None and compression[1] == "gzip":
            read = _Gunzip(run.source).read
        elif compression is not None:
            filters = (compression[1],)
    with ArchiveReader(
        read,
        formats=_FORMATS[kind],
        filters=filters,
        seek=seek if kind is Kind.SEVEN_ZIP else None,
        before_read=run.writer.flush,
    ) as reader:
        if compression is None:
            run.copy_archive(reader)
            return kind.value
        suffix = compression[0]
        header = reader.next_header()
        if header is None:  # an empty compressed stream
            return suffix
        if not reader.is_raw():
            run.budget.count_entry()
            run.copy_entry(reader, header)
            run.copy_archive(reader)
            return f"tar.{suffix}"
        # One compressed file: named after the source, dated by gzip's header where it has one.
        run.budget.count_entry()
        name = single_file_name(strip_compression_suffix(source_name), run.limits.max_path_bytes)
        run.names.claim(name)
        mtime = _gzip_mtime(head) or time.time()
        run.write_entry(name, mtime, None, run.entry_blocks(reader))
        return suffix


def repack_stream(
    source: Source,
    sink: Callable[[bytes], object],
    limits: RepackLimits,
    *,
    source_name: str,
    on_progress: ProgressCallback | None = None,
    deflate_threads: int | None = None,
) -> RepackSummary:
    """Repacks ``source`` into one ZIP handed to ``sink`` in order, reading the source once,
    front to back, as it arrives. For a 7z (``needs_whole_source``) use ``repack_file``.

    ``source_name`` (the client's file name) names a lone file in the ZIP. ``on_progress`` gets
    the bytes of input consumed so far, at most once per block read. Long compressible entries
    are deflated in ``deflate_threads`` threads (default: the usable CPUs, at most 4; 1 keeps it
    all in the calling thread). Raises ``RepackError``; any other exception (from the source or
    the sink) passes through unchanged.
    """
    return _run(
        source,
        sink,
        limits,
        source_name,
        on_progress,
        source_size=None,
        seek=None,
        deflate_threads=deflate_threads,
    )


def repack_file(
    path: Path,
    sink: Callable[[bytes], object],
    limits: RepackLimits,
    *,
    source_name: str,
    on_progress: ProgressCallback | None = None,
    deflate_threads: int | None = None,
) -> RepackSummary:
    """``repack_stream`` for a complete file, which also reads 7z (from its end)."""
    with path.open("rb", buffering=0) as file:
        return _run(
            file,
            sink,
            limits,
            source_name,
            on_progress,
            source_size=path.stat().st_size,
            seek=file.seek,
            deflate_threads=deflate_threads,
        )
