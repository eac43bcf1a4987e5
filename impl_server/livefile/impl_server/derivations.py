"""Starting the resources the server derives from others (today: repack), on the job runner.

Each derivation creates its resource first — so its id and reference can be handed out at once,
and watchers can follow it from stage ``waiting`` on — and then queues its job. A full queue is
refused before anything is created.
"""

from __future__ import annotations

import dataclasses
import re

from livefile.api.errors import ResourceNotFoundError
from livefile.api.model import ResourceKind, ResourceMetadata
from livefile.impl_server.jobs import JobRunner
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.repack_job import STAGE_WAITING, RepackJob, RepackSettings
from livefile.impl_server.writer import LiveWriter

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
    """Creates derived resources and runs their jobs."""

    def __init__(self, manager: ResourceManager, runner: JobRunner, repack: RepackSettings) -> None:
        self._manager = manager
        self._runner = runner
        self._repack = repack

    async def start_repack(self, source_id: str) -> LiveWriter:
        """The derived ZIP of ``source_id``'s archive; its job runs as soon as a slot is free.
        Raises ``ResourceNotFoundError`` and ``JobRefusedError`` (queue full)."""
        source = await self._manager.reader(source_id)
        if source is None:
            raise ResourceNotFoundError(f"Unknown resource {source_id[:64]}")
        self._runner.check_room()  # refused before anything is created
        metadata = ResourceMetadata(
            filename=repacked_name(source.entry.metadata.filename), mime_type=ZIP_MIME_TYPE
        )
        writer = await self._manager.create_resource(
            metadata, kind=ResourceKind.REPACK, sources=(source_id,), stage=STAGE_WAITING
        )
        settings = self._repack
        quota = self._manager.quotas.max_resource_size
        if quota is not None and quota < settings.limits.max_unpacked_bytes:
            limits = dataclasses.replace(settings.limits, max_unpacked_bytes=quota)
            settings = dataclasses.replace(settings, limits=limits)
        job = RepackJob(source, writer, settings, self._manager.checkpoint_interval)
        self._runner.submit(f"repack-{writer.resource_id}", job.run, "repack", writer)
        return writer
