"""The bundle producer: one ZIP of many resources, each under its path, with MANIFEST.json last.

Every member finished when the job starts: the bundle is **composed**. The job computes each
member's CRC-32 once (the ZIP headers need zlib's CRC-32, members carry CRC-32C by default; kept
in memory per member, which never changes once COMPLETED), keeps the fixed layout
(``bundle/layout.py``, ``bundle/store.py``) and ends COMPLETED with the ZIP's size and its
CRC-32C, combined from the headers' and the members' own CRC-32Cs. No byte is copied: readers
compose the ZIP from the members' files (``bundle/reader.py``).

A member still growing: the bundle is **stored**, written into its own file through the
repack engine's ZIP writer in a worker thread — finished members first (STORED, sizes and CRC
in their local headers), then each growing one followed to its end (``Reader.follow``) as a
Deflate level 0 entry with a data descriptor (stored blocks inside Deflate framing, which
streaming readers handle; STORED with a data descriptor they cannot read) — so watchers
download it while it grows. A member that ends FAILED ends the bundle FAILED with an ``error``
naming it, after the ZIP is finished: its partial entry is left out of the central directory
and MANIFEST.json says which member failed and which were never written.

Stages: ``waiting`` → ``checksumming`` (composed) or ``bundling`` (stored) → COMPLETED. FAILED
codes: ``member_failed``, ``member_missing``, ``bundle_too_large``, ``time_limit``,
``interrupted``, ``internal_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import crc32c
from zlib_ng import zlib_ng

from livefile.api.errors import ResourceFailedError
from livefile.api.interfaces import ResourceWriter
from livefile.api.model import ChecksumAlgorithm, ResourceError, TransferStatus
from livefile.impl_common.checksums import parse_stored, stored_form
from livefile.impl_common.lru import LruCache
from livefile.impl_server.bundle.layout import (
    MANIFEST_NAME,
    BundleLayout,
    BundleMember,
    manifest_bytes,
)
from livefile.impl_server.bundle.store import STORED, BundleForms
from livefile.impl_server.jobs import JobFailure, JobSpec, run_to_an_end
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.reader import READ_PIECE, Reader
from livefile.impl_server.repack.zipout import EntryStream, ZipWriter
from livefile.impl_server.repack_job import SourceFeed, ZipSink, in_stoppable_thread

logger = logging.getLogger(__name__)

STAGE_CHECKSUMMING = "checksumming"
STAGE_BUNDLING = "bundling"
CHECKSUMS_CACHED = 100_000  # (crc32, crc32c) of finished members, ~100 bytes each


@dataclass(frozen=True)
class BundleSettings:
    max_members: int = 10_000
    max_bytes: int = 64 * 1024**3
    seconds: float = 3600.0  # wall-clock limit per job, waiting for growing members included


class BundleError(JobFailure):
    """A bundle refused (a member failed, the size limit passed): ``code`` names why."""


@dataclass(frozen=True)
class _Member:
    path: str
    reader: Reader

    @property
    def resource(self) -> str:
        return self.reader.resource_id


def _file_pieces(path: os.PathLike[str] | str, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of a finished file, in pieces of ``READ_PIECE``."""
    with open(path, "rb", buffering=0) as file:
        left = size
        while left:
            piece = file.read(min(READ_PIECE, left))
            if not piece:
                raise OSError(f"{path} ends {left} bytes early")
            left -= len(piece)
            yield piece


def _checksums(
    path: os.PathLike[str] | str, size: int, crc32c_known: int | None
) -> tuple[int, int]:
    crc, castagnoli = 0, 0
    for piece in _file_pieces(path, size):
        crc = zlib_ng.crc32(piece, crc)
        if crc32c_known is None:
            castagnoli = crc32c.crc32c(piece, castagnoli)
    return crc, castagnoli if crc32c_known is None else crc32c_known


def _manifest_checksum(stored: str | None) -> str | None:
    if not stored:
        return None
    algorithm, hexdigest = parse_stored(stored)
    return f"{algorithm.value}:{hexdigest}"


class BundleHandler:
    """The ``JobHandler`` of ``ResourceKind.BUNDLE``: ``spec.params`` holds ``filename`` and
    ``members`` (``[{"resource": id, "path": name}]``, paths already checked)."""

    def __init__(
        self, manager: ResourceManager, forms: BundleForms, settings: BundleSettings
    ) -> None:
        self.manager = manager
        self.forms = forms  # where each bundle's form is kept
        self.settings = settings
        self._crcs: LruCache[str, tuple[int, int]] = LruCache(CHECKSUMS_CACHED)

    async def run(self, spec: JobSpec, writer: ResourceWriter) -> None:
        job = _BundleJob(self, spec, writer)
        await run_to_an_end("bundle", self.settings.seconds, job.run, job.fail, writer.resource_id)

    async def member_crcs(self, reader: Reader, size: int) -> tuple[int, int]:
        """A finished member's CRC-32 and CRC-32C (its own checksum when it is a CRC-32C)."""
        cached = self._crcs.get(reader.resource_id)
        if cached is not None:
            return cached
        known = None
        if reader.entry.checksum:
            algorithm, hexdigest = parse_stored(reader.entry.checksum)
            if algorithm is ChecksumAlgorithm.CRC32C:
                known = int(hexdigest, 16)
        crcs = await asyncio.to_thread(_checksums, reader.path, size, known)
        self._crcs.put(reader.resource_id, crcs)
        return crcs


class _BundleJob:
    def __init__(self, handler: BundleHandler, spec: JobSpec, writer: ResourceWriter) -> None:
        self._handler = handler
        self._manager = handler.manager
        self._settings = handler.settings
        self._spec = spec
        self._writer = writer
        self._filename = str(spec.params["filename"])
        self._loop = asyncio.get_running_loop()
        self._sink = ZipSink(self._loop, writer, self._manager.checkpoint_interval)
        self._feed: SourceFeed | None = None

    async def run(self) -> None:
        members: list[_Member] = []
        for member in self._spec.params["members"]:
            reader = await self._manager.reader(member["resource"])
            if reader is None:
                raise BundleError(
                    "member_missing",
                    f"member {member['path']!r} ({member['resource']}) no longer exists",
                )
            members.append(_Member(member["path"], reader))
        statuses = [await member.reader.status() for member in members]
        # A job run again (its worker was lost) keeps the form of the bytes already published.
        kept = await asyncio.to_thread(self._handler.forms.get, self._writer.resource_id)
        finished = all(s.transfer_status is TransferStatus.COMPLETED for s in statuses)
        if finished and kept != STORED:
            await self._compose(members, [s.current_size for s in statuses])
        else:
            await self._stream(members, [s.transfer_status for s in statuses])

    async def _compose(self, members: list[_Member], sizes: list[int]) -> None:
        self._writer.progress(STAGE_CHECKSUMMING, 0)
        total = sum(sizes)
        self._check_size(total)
        done = 0
        parts = []
        for member, size in zip(members, sizes, strict=True):
            crc, castagnoli = await self._handler.member_crcs(member.reader, size)
            entry = member.reader.entry
            parts.append(
                BundleMember(
                    member.path,
                    member.resource,
                    size,
                    crc,
                    castagnoli,
                    entry.updated_at,
                    _manifest_checksum(entry.checksum),
                )
            )
            done += size
            self._writer.progress(STAGE_CHECKSUMMING, min(99.9, 100.0 * done / (total or 1)))
        layout = await asyncio.to_thread(BundleLayout, self._filename, parts)
        self._check_size(layout.size)
        checksum = await asyncio.to_thread(layout.crc32c)
        await asyncio.to_thread(self._handler.forms.write, self._writer.resource_id, layout)
        await self._writer.complete(
            size=layout.size, checksum=stored_form(ChecksumAlgorithm.CRC32C, f"{checksum:08x}")
        )

    def _check_size(self, size: int) -> None:
        if size > self._settings.max_bytes:
            raise BundleError(
                "bundle_too_large",
                f"the bundle reaches {size} bytes, more than the limit of"
                f" {self._settings.max_bytes}",
            )

    async def _stream(self, members: list[_Member], started: list[TransferStatus]) -> None:
        await asyncio.to_thread(self._handler.forms.write, self._writer.resource_id, STORED)
        self._writer.progress(STAGE_BUNDLING, 0)
        zip_writer = ZipWriter(self._sink)
        finished_first = sorted(
            range(len(members)), key=lambda i: started[i] is not TransferStatus.COMPLETED
        )
        manifest: list[dict[str, Any]] = []
        failure: BundleError | None = None
        for done, index in enumerate(finished_first):
            member = members[index]
            if failure is not None:
                manifest.append(
                    {"path": member.path, "resource": member.resource, "status": "NOT_WRITTEN"}
                )
                continue
            try:
                manifest.append(await self._add(zip_writer, member))
            except ResourceFailedError as exc:
                status = await member.reader.status()
                manifest.append(
                    {
                        "path": member.path,
                        "resource": member.resource,
                        "status": "FAILED",
                        "size": status.current_size,
                        "error": str(exc),
                    }
                )
                failure = BundleError(
                    "member_failed", f"member {member.path!r} ({member.resource}) failed: {exc}"
                )
            self._writer.progress(STAGE_BUNDLING, min(99.9, 100.0 * (done + 1) / len(members)))
        body = manifest_bytes(self._filename, manifest)
        mtime = max((m.reader.entry.updated_at for m in members), default=0.0)

        def finish() -> None:
            zip_writer.add_whole(MANIFEST_NAME, mtime, body, None)
            zip_writer.close()
            self._sink.flush()

        await self._in_thread(finish)
        if failure is not None:
            raise failure
        await self._writer.complete()

    async def _add(self, zip_writer: ZipWriter, member: _Member) -> dict[str, Any]:
        """Write one member's entry; its MANIFEST.json line. ``ResourceFailedError`` when it
        ends FAILED (its partial entry is then left out of the central directory)."""
        status = await member.reader.status()
        mtime = member.reader.entry.created_at
        if status.transfer_status is TransferStatus.COMPLETED:
            crc, _ = await self._handler.member_crcs(member.reader, status.current_size)
            size = status.current_size
            pieces = _file_pieces(member.reader.path, size)
            mtime = member.reader.entry.updated_at
            await self._in_thread(
                lambda: zip_writer.add_stored(member.path, mtime, size, crc, pieces)
            )
        else:
            crc, size = await self._follow(zip_writer, member, mtime)
        self._check_size(zip_writer.offset)
        entry = await self._manager.entry(member.resource)
        return {
            "path": member.path,
            "resource": member.resource,
            "status": "COMPLETED",
            "size": size,
            "checksum": _manifest_checksum(entry.checksum if entry else None),
            "crc32": f"{crc:08x}",
        }

    async def _follow(
        self, zip_writer: ZipWriter, member: _Member, mtime: float
    ) -> tuple[int, int]:
        """A growing member, followed to its end into a streamed entry: its CRC-32 and size."""

        streams: list[EntryStream] = []  # the entry, once the worker thread has opened it

        def starve() -> None:
            # What the ZIP has so far goes out before we wait, Deflate's held bytes included.
            for open_entry in streams:
                open_entry.sync()
            zip_writer.flush()
            self._sink.flush()

        feed = self._feed = SourceFeed(self._loop, starve)
        pump = asyncio.create_task(feed.pump(member.reader), name="bundle-feed")

        def copy() -> tuple[int, int]:
            # In the worker thread, like every write: the sink may wait for the event loop.
            stream = zip_writer.open_entry(member.path, mtime, level=0, large=False)
            streams.append(stream)
            try:
                while piece := feed.read(READ_PIECE):
                    stream.write(piece)
                    # Deflate holds back up to a block: count the bytes it has not emitted.
                    held = stream.record.size - stream.record.compressed_size
                    self._check_size(zip_writer.offset + max(held, 0))
            except BaseException:
                stream.abandon()
                raise
            stream.close()
            return stream.record.crc, stream.record.size

        try:
            result = await self._in_thread(copy)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            self._feed = None
        assert isinstance(result, tuple)
        return result

    async def _in_thread(self, work: Callable[[], object]) -> object:
        return await in_stoppable_thread(work, self._sink, self._feed)

    async def fail(self, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._sink.flush)
        await self._writer.fail(ResourceError(code=code, message=message[:1000]))
