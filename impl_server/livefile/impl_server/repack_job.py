"""The repack producer: an archive resource, possibly still uploading, repacked into a derived
resource holding one normalized ZIP that grows while the archive arrives.

The engine (``repack/``) is blocking and runs in a worker thread. It reads the source through
a ``SourceFeed``, which the event loop fills from the source's ``Reader.follow`` (bounded: the
loop waits while the feed holds ``FEED_BYTES``), and hands the ZIP's bytes to a ``ZipSink``, which
appends them to the derived resource's ``LiveWriter`` in pieces (at least every checkpoint
interval, so readers see the ZIP grow). Formats that need their end (7z) wait, in stage
``waiting``, for the source to be COMPLETED and are read from its file.

Stages: ``waiting`` (no bytes of the source yet, or a format that needs all of them) →
``repacking`` (``percent``: input consumed over the source's size, its current size while it
grows) → COMPLETED. FAILED with ``error.code``: the engine's (``encrypted_archive``,
``ratio_limit``, …), ``source_failed``, ``time_limit``, ``interrupted`` (shutdown),
``internal_error``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livefile.api.errors import ResourceFailedError
from livefile.api.interfaces import ResourceWriter
from livefile.api.model import ResourceError, ResourceStatus
from livefile.impl_server.jobs import STAGE_WAITING, JobSpec, run_to_an_end
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.reader import Reader
from livefile.impl_server.repack import (
    SNIFF_BYTES,
    RepackLimits,
    needs_whole_source,
    repack_file,
    repack_stream,
)

logger = logging.getLogger(__name__)

FEED_BYTES = 16 * 1024 * 1024  # source bytes buffered ahead of the engine
SINK_BYTES = 1024 * 1024  # ZIP bytes gathered before one append
STAGE_REPACKING = "repacking"


class StopRepack(Exception):
    """The job was stopped (its time is up, or the server is shutting down)."""


@dataclass(frozen=True)
class RepackSettings:
    limits: RepackLimits = field(default_factory=RepackLimits)
    seconds: float = 3600.0  # wall-clock limit per job, waiting for the source included
    deflate_threads: int | None = None  # the engine's default: one per usable core


class SourceFeed:
    """The engine's blocking ``Source``, filled by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_starve: Callable[[], None]) -> None:
        self._loop = loop
        self._on_starve = on_starve
        self._lock = threading.Condition()
        self._pieces: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._ended = False
        self._error: BaseException | None = None
        self._room = asyncio.Event()
        self._room.set()
        self.received = 0  # bytes of the source fed so far

    # --- the event loop's side ---------------------------------------------------------

    async def put(self, piece: bytes) -> None:
        while True:
            with self._lock:
                if self._buffered < FEED_BYTES:
                    self._pieces.append(memoryview(piece))
                    self._buffered += len(piece)
                    self.received += len(piece)
                    self._lock.notify()
                    return
                self._room.clear()
            await self._room.wait()

    def end(self, error: BaseException | None = None) -> None:
        with self._lock:
            self._ended = True
            self._error = error
            self._lock.notify()

    async def pump(self, reader: Reader) -> None:
        """Feed every byte of the source, as it is published, until it ends."""
        try:
            async for piece in reader.follow(0):
                await self.put(piece)
        except ResourceFailedError as exc:
            self.end(exc)
        except BaseException as exc:
            self.end(StopRepack(str(exc)))
            raise
        else:
            self.end()

    # --- the engine's side (a worker thread) ---------------------------------------------

    def read(self, size: int, /) -> bytes:
        with self._lock:
            while not self._pieces and not self._ended:
                self._lock.release()
                try:
                    self._on_starve()  # what the ZIP has so far goes out before we wait
                finally:
                    self._lock.acquire()
                if not self._pieces and not self._ended:
                    self._lock.wait()
            if not self._pieces:
                if self._error is not None:
                    raise self._error
                return b""
            head = self._pieces[0]
            taken = head[:size]
            if len(taken) == len(head):
                self._pieces.popleft()
            else:
                self._pieces[0] = head[len(taken) :]
            self._buffered -= len(taken)
        self._loop.call_soon_threadsafe(self._room.set)
        return taken.tobytes()


class ZipSink:
    """Takes the engine's output (a worker thread) and appends it to the writer in pieces."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, writer: ResourceWriter, interval: float
    ) -> None:
        self._loop = loop
        self._writer = writer
        self._interval = max(interval, 0.05)
        self._pending: list[bytes] = []
        self._size = 0
        self._last = time.monotonic()
        self.stopped = threading.Event()

    def __call__(self, data: bytes) -> None:
        if self.stopped.is_set():
            raise StopRepack("stopped")
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= SINK_BYTES or time.monotonic() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending, self._size, self._last = [], 0, time.monotonic()
        future = asyncio.run_coroutine_threadsafe(self._writer.append(data), self._loop)
        future.result()  # the writer's queue is bounded: the engine waits for the disk


async def in_stoppable_thread(
    work: Callable[[], object], sink: ZipSink, feed: SourceFeed | None
) -> object:
    """Run blocking ``work`` that writes into ``sink`` (and reads ``feed``); if the job is
    cancelled meanwhile, stop it (the feed and the sink raise) and wait for the thread before
    going on, so nothing writes after the end."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        sink.stopped.set()
        if feed is not None:
            feed.end(StopRepack("stopped"))
        with contextlib.suppress(BaseException):
            await task
        raise


class RepackJob:
    """Repacks ``source`` into ``writer`` (the derived resource)."""

    def __init__(
        self,
        source: Reader,
        writer: ResourceWriter,
        settings: RepackSettings,
        checkpoint_interval: float,
    ) -> None:
        self._source = source
        self._writer = writer
        self._settings = settings
        self._interval = checkpoint_interval
        self._loop = asyncio.get_running_loop()
        self._sink = ZipSink(self._loop, writer, checkpoint_interval)
        self._feed: SourceFeed | None = None

    async def run(self) -> None:
        await run_to_an_end(
            "repack", self._settings.seconds, self._repack, self._fail, self._writer.resource_id
        )

    async def _repack(self) -> None:
        status = await self._wait_for_source(lambda s: s.current_size >= SNIFF_BYTES)
        head = await self._source.read(0, min(SNIFF_BYTES, status.current_size), status)
        name = self._source.entry.metadata.filename
        threads = self._settings.deflate_threads
        if needs_whole_source(head):
            status = await self._wait_for_source(lambda s: False)  # the whole of it
            self._writer.progress(STAGE_REPACKING, 0)
            size = status.current_size
            await self._in_thread(
                lambda: repack_file(
                    self._source.path,
                    self._sink,
                    self._settings.limits,
                    source_name=name,
                    on_progress=lambda consumed: self._progress(consumed, size),
                    deflate_threads=threads,
                )
            )
        else:
            self._writer.progress(STAGE_REPACKING, 0)
            feed = self._feed = SourceFeed(self._loop, self._sink.flush)
            pump = asyncio.create_task(feed.pump(self._source), name="repack-feed")
            try:
                await self._in_thread(
                    lambda: repack_stream(
                        feed,
                        self._sink,
                        self._settings.limits,
                        source_name=name,
                        on_progress=lambda consumed: self._progress(consumed, feed.received),
                        deflate_threads=threads,
                    )
                )
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
        await self._in_thread(self._sink.flush)
        await self._writer.complete()

    async def _in_thread(self, work: Callable[[], object]) -> object:
        return await in_stoppable_thread(work, self._sink, self._feed)

    async def _wait_for_source(self, enough: Callable[[ResourceStatus], bool]) -> ResourceStatus:
        """The source's status once ``enough(status)`` holds or it is COMPLETED; stage
        ``waiting`` meanwhile. Raises ``ResourceFailedError`` if it ended FAILED."""
        return await self._source.wait_for(
            enough, lambda _: self._writer.progress(STAGE_WAITING, 0)
        )

    def _progress(self, consumed: int, size: int) -> None:
        percent = 100.0 * consumed / size if size else 0.0
        self._loop.call_soon_threadsafe(self._writer.progress, STAGE_REPACKING, min(percent, 99.9))

    async def _fail(self, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._sink.flush)  # the valid ZIP of what was finished
        await self._writer.fail(ResourceError(code=code, message=message[:1000]))


class RepackHandler:
    """The ``JobHandler`` of ``ResourceKind.REPACK``: ``spec.sources[0]`` is the archive."""

    def __init__(self, manager: ResourceManager, settings: RepackSettings) -> None:
        self._manager = manager
        quota = manager.quotas.max_resource_size
        if quota is not None and quota < settings.limits.max_unpacked_bytes:
            limits = dataclasses.replace(settings.limits, max_unpacked_bytes=quota)
            settings = dataclasses.replace(settings, limits=limits)
        self._settings = settings

    async def run(self, spec: JobSpec, writer: ResourceWriter) -> None:
        source = await self._manager.reader(spec.sources[0])
        if source is None:  # deleted between the request and the job
            error = ResourceError(code="source_missing", message="the source no longer exists")
            await writer.fail(error)
            return
        await RepackJob(source, writer, self._settings, self._manager.checkpoint_interval).run()
