"""The image producer: an image resource normalized to WebP in a derived resource whose metadata
also carries the image's ``width``, ``height`` and ``blurhash``.

An image is decoded whole, so the job waits (stage ``waiting``) until its source is COMPLETED —
or refuses it as soon as the source grows past the size limit. The conversion (``images``) is
blocking and runs in a worker thread; the job runner bounds how many jobs run at once, so at most
that many conversions keep cores busy. Pillow cannot be interrupted mid-image: a job cancelled
(time limit, shutdown) waits for its thread to return before it ends, so a slot is never freed
while its conversion still runs. The same source and settings give the same bytes, so a job
that is run again from scratch produces what it produced before.

Stages: ``waiting`` → ``converting`` → COMPLETED (the WebP appended, then the description
recorded, then COMPLETED). FAILED with ``error.code``: ``unsupported_format``,
``image_too_large``, ``invalid_image`` (see ``images/convert.py``), ``source_failed``,
``source_missing``, ``time_limit``, ``interrupted`` (shutdown), ``internal_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from livefile.api.interfaces import ResourceWriter
from livefile.api.model import ResourceError
from livefile.impl_server.images import Converted, ImageError, ImageLimits, WebpOptions, to_webp
from livefile.impl_server.jobs import STAGE_WAITING, JobSpec, run_to_an_end
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.reader import Reader

logger = logging.getLogger(__name__)

STAGE_CONVERTING = "converting"
WEBP_MIME_TYPE = "image/webp"
APPEND_PIECE = 1024 * 1024  # the WebP is appended in pieces of this size
_IMAGE_SUFFIX = re.compile(r"\.(jpe?g|jfif|png|apng|gif|webp|tiff?|bmp)$", re.IGNORECASE)

T = TypeVar("T")


def webp_name(filename: str) -> str:
    """``photo.jpg`` → ``photo.webp``; a name without an image suffix gains ``.webp``."""
    stem = _IMAGE_SUFFIX.sub("", filename) or filename
    return f"{stem}.webp"


@dataclass(frozen=True)
class ImageSettings:
    limits: ImageLimits = field(default_factory=ImageLimits)
    webp: WebpOptions = field(default_factory=WebpOptions)
    seconds: float = 3600.0  # wall-clock limit per job, waiting for the source included


class ImageJob:
    """Converts ``source`` into ``writer`` (the derived resource)."""

    def __init__(
        self,
        source: Reader,
        writer: ResourceWriter,
        manager: ResourceManager,
        settings: ImageSettings,
    ) -> None:
        self._source = source
        self._writer = writer
        self._manager = manager
        self._settings = settings

    async def run(self) -> None:
        await run_to_an_end(
            "conversion",
            self._settings.seconds,
            self._convert,
            self._fail,
            self._writer.resource_id,
        )

    async def _convert(self) -> None:
        limits = self._settings.limits
        status = await self._source.wait_for(
            lambda s: s.current_size > limits.max_bytes,
            lambda _: self._writer.progress(STAGE_WAITING, 0),
        )
        if status.current_size > limits.max_bytes:  # refused before it has even ended
            raise ImageError(
                "image_too_large",
                f"the source has more than the {limits.max_bytes} bytes allowed",
            )
        self._writer.progress(STAGE_CONVERTING, 0)
        path, options = self._source.path, self._settings.webp
        converted: Converted = await _in_thread(lambda: to_webp(path, limits, options))
        for start in range(0, len(converted.webp), APPEND_PIECE):
            await self._writer.append(converted.webp[start : start + APPEND_PIECE])
        summary = converted.summary
        description = {
            "width": summary.width,
            "height": summary.height,
            "blurhash": summary.blurhash,
        }
        await self._manager.describe(self._writer.resource_id, description)
        await self._writer.complete()

    async def _fail(self, code: str, message: str) -> None:
        await self._writer.fail(ResourceError(code=code, message=message[:1000]))


async def _in_thread(work: Callable[[], T]) -> T:
    """Run blocking ``work`` in a worker thread. Cancelled meanwhile, it still waits for the
    thread (Pillow cannot be stopped mid-image), so the job's slot bounds the busy threads."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


class ImageHandler:
    """The ``JobHandler`` of ``ResourceKind.IMAGE``: ``spec.sources[0]`` is the image."""

    def __init__(self, manager: ResourceManager, settings: ImageSettings) -> None:
        self._manager = manager
        self._settings = settings

    async def run(self, spec: JobSpec, writer: ResourceWriter) -> None:
        source = await self._manager.reader(spec.sources[0])
        if source is None:  # deleted between the request and the job
            error = ResourceError(code="source_missing", message="the source no longer exists")
            await writer.fail(error)
            return
        await ImageJob(source, writer, self._manager, self._settings).run()
