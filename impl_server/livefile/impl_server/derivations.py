"""Starting the resources the server produces itself (repack, images, bundles, transfers), as
jobs on the job runner.

Each start creates its resource first — so its id and reference can be handed out at once, and
watchers can follow it from stage ``waiting`` on — and then queues its ``JobSpec``, which the
handler registered for its kind runs. A full queue is refused before anything is created.

Alone, a process runs its jobs itself (``JobRunner``). With workers sharing Redis, the resource
is created without an owner and the job goes to the shared stream (``redis_jobs.py``); the
worker that claims it adopts the resource and runs it (``run_claimed``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from livefile.api.errors import ResourceNotFoundError
from livefile.api.interfaces import CatalogEntry, ResourceWriter
from livefile.api.model import ResourceError, ResourceKind, ResourceMetadata
from livefile.impl_server.image_job import WEBP_MIME_TYPE, webp_name
from livefile.impl_server.job_replay import ReplayingWriter
from livefile.impl_server.jobs import (
    STAGE_WAITING,
    JobHandler,
    JobRunner,
    JobSpec,
    SharedJobs,
    run_traced,
)
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.writer import LiveWriter

logger = logging.getLogger(__name__)

GIVEN_UP = ResourceError(
    code="worker_lost",
    message="every worker that took this job on was lost (it may be what kills them)",
)

ZIP_MIME_TYPE = "application/zip"
# What a repacked archive's name loses before ".zip" is added.
_ARCHIVE_SUFFIX = re.compile(
    r"(\.tar)?\.(gz|tgz|bz2|tbz2?|xz|txz|zst|tzst|lz4|lz|lzma|z)$|\.(tar|zip|7z|rar|tgz)$",
    re.IGNORECASE,
)


def repacked_name(filename: str) -> str:
    """``build.tar.gz`` → ``build.zip``; a name that is no archive name keeps it whole."""
    stem = _ARCHIVE_SUFFIX.sub("", filename) or filename
    return f"{stem}.zip"


class Derivations:
    """Creates server-produced resources and runs their jobs."""

    def __init__(self, manager: ResourceManager, runner: JobRunner) -> None:
        self._manager = manager
        self._runner = runner
        self._shared: SharedJobs | None = None
        self._handlers: dict[ResourceKind, JobHandler] = {}
        self._claimed: dict[str, LiveWriter] = {}  # shared jobs running here, by resource

    def share(self, jobs: SharedJobs) -> None:
        """Queue every job for whichever worker claims it, instead of running it here."""
        self._shared = jobs

    def register(self, kind: ResourceKind, handler: JobHandler) -> None:
        """``handler`` runs every job of ``kind`` (one producer module per kind)."""
        self._handlers[kind] = handler

    def handles(self, kind: ResourceKind) -> bool:
        """Whether this server produces ``kind`` (a handler is registered for it)."""
        return kind in self._handlers

    async def start(
        self,
        kind: ResourceKind,
        metadata: ResourceMetadata,
        *,
        sources: tuple[str, ...] = (),
        params: Mapping[str, Any] | None = None,
        context_id: str | None = None,
    ) -> str:
        """Create the resource ``kind`` produces (stage ``waiting``) and queue its job; the new
        resource's id. Raises ``ResourceNotFoundError`` for a missing source and
        ``JobRefusedError`` when the queue is full — both before anything is created."""
        handler = self._handlers[kind]
        for source_id in sources:
            await self._source(source_id)
        if self._shared is not None:
            await self._shared.check_room()
            resource_id = await self._manager.create_unowned(
                metadata, kind=kind, sources=sources, stage=STAGE_WAITING
            )
            await self._shared.submit(JobSpec(kind, resource_id, sources, dict(params or {})))
            return resource_id
        self._runner.check_room()
        writer = await self._manager.create_resource(
            metadata, kind=kind, sources=sources, context_id=context_id, stage=STAGE_WAITING
        )
        spec = JobSpec(kind, writer.resource_id, sources, dict(params or {}))
        books = self._runner.books
        self._runner.submit(
            f"{kind.value}-{writer.resource_id}",
            lambda: run_traced(books, spec, writer, lambda: handler.run(spec, writer)),
        )
        return writer.resource_id

    async def start_repack(self, source_id: str) -> str:
        """The derived ZIP of ``source_id``'s archive (see ``repack_job.py``)."""
        source = await self._source(source_id)
        metadata = ResourceMetadata(
            filename=repacked_name(source.metadata.filename), mime_type=ZIP_MIME_TYPE
        )
        return await self.start(ResourceKind.REPACK, metadata, sources=(source_id,))

    async def run_claimed(self, spec: JobSpec, again: bool) -> bool:
        """Run a job this worker claimed from the shared queue (``again``: taken over from a
        lost worker); True when it ended here, False when another worker produces it now."""
        writer = await self._manager.adopt(spec.resource_id)
        if writer is None:
            return True  # ended, gone, or produced by a live worker: nothing to run here
        self._claimed[spec.resource_id] = writer
        logger.info(
            "running the %s job of %s here%s",
            spec.kind.value,
            spec.resource_id,
            " (taken over from a lost worker)" if again else "",
        )
        try:
            handler = self._handlers.get(spec.kind)
            if handler is None:  # a worker of another version queued it
                error = f"this worker cannot run {spec.kind.value} jobs"
                await writer.fail(ResourceError(code="internal_error", message=error))
                return True
            job_writer: ResourceWriter = writer
            if writer.status.current_size:
                read = partial(self._manager.storage.read, spec.resource_id)
                job_writer = ReplayingWriter(writer, read)
            work = partial(handler.run, spec, job_writer)
            await run_traced(self._runner.books, spec, writer, work)
        finally:
            self._claimed.pop(spec.resource_id, None)
        return not writer.abandoned

    async def give_up(self, spec: JobSpec) -> None:
        """End a job that was handed out too often FAILED ``worker_lost``."""
        writer = await self._manager.adopt(spec.resource_id)
        if writer is not None:
            await writer.fail(GIVEN_UP)

    async def close(self) -> None:
        """Shutdown. Shared jobs running here are handed over (another worker, or this one
        started again, takes them over); jobs of this process alone end FAILED ``interrupted``."""
        for writer in list(self._claimed.values()):
            await self._manager.release(writer)
        if self._shared is not None:
            await self._shared.close()
        await self._runner.close()

    async def start_image(self, source_id: str) -> str:
        """The WebP of ``source_id``'s image, with its size and BlurHash (see
        ``image_job.py``)."""
        source = await self._source(source_id)
        metadata = ResourceMetadata(
            filename=webp_name(source.metadata.filename), mime_type=WEBP_MIME_TYPE
        )
        return await self.start(ResourceKind.IMAGE, metadata, sources=(source_id,))

    async def _source(self, source_id: str) -> CatalogEntry:
        source = await self._manager.entry(source_id)
        if source is None:
            raise ResourceNotFoundError(f"Unknown resource {source_id[:64]}")
        return source
