"""Starting the resources the server produces itself (repack, images, bundles, transfers), as
jobs on the job runner.

Each start creates its resource first — so its id and reference can be handed out at once, and
watchers can follow it from stage ``waiting`` on — and then queues its ``JobSpec``, which the
handler registered for its kind runs. A full queue is refused before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from livefile.api.errors import ResourceNotFoundError
from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceKind, ResourceMetadata
from livefile.impl_server.image_job import WEBP_MIME_TYPE, webp_name
from livefile.impl_server.jobs import STAGE_WAITING, JobHandler, JobRunner, JobSpec
from livefile.impl_server.manager import ResourceManager

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
        self._handlers: dict[ResourceKind, JobHandler] = {}

    def register(self, kind: ResourceKind, handler: JobHandler) -> None:
        """``handler`` runs every job of ``kind`` (one producer module per kind)."""
        self._handlers[kind] = handler

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
        self._runner.check_room()
        writer = await self._manager.create_resource(
            metadata, kind=kind, sources=sources, context_id=context_id, stage=STAGE_WAITING
        )
        spec = JobSpec(kind, writer.resource_id, sources, dict(params or {}))
        self._runner.submit(f"{kind.value}-{writer.resource_id}", lambda: handler.run(spec, writer))
        return writer.resource_id

    async def start_repack(self, source_id: str) -> str:
        """The derived ZIP of ``source_id``'s archive (see ``repack_job.py``)."""
        source = await self._source(source_id)
        metadata = ResourceMetadata(
            filename=repacked_name(source.metadata.filename), mime_type=ZIP_MIME_TYPE
        )
        return await self.start(ResourceKind.REPACK, metadata, sources=(source_id,))

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
