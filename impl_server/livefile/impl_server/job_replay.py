"""A job run again after its worker was lost writes through a ``ReplayingWriter``: the bytes the
lost worker had published are compared with the new run's, never written twice, so readers keep
what they have already read; production goes on from there. Jobs are deterministic over the same
inputs (a repack of the same archive gives the same ZIP), so the two agree; when they do not (a
remote file that changed meanwhile), the resource ends FAILED ``worker_lost`` rather than
serving a mix of two runs. The status stays the one published before until the new run has
caught up with it, so neither size nor percent ever goes backwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from livefile.api.errors import ServerError
from livefile.api.interfaces import ResourceWriter
from livefile.api.model import ChecksumAlgorithm, ResourceError, ResourceStatus

# Reads bytes ``[start, end)`` of the resource being produced (blocking).
ReadPublished = Callable[[int, int], bytes]

DIVERGED = ResourceError(
    code="worker_lost",
    message="the worker producing this resource was lost, and running its job again gave"
    " different bytes than those already published",
)


class ReplayingWriter:
    """``ResourceWriter`` over ``writer``, whose first ``writer.status.current_size`` bytes
    are already published."""

    def __init__(self, writer: ResourceWriter, read_published: ReadPublished) -> None:
        self._writer = writer
        self._read = read_published
        self._published = writer.status.current_size
        self._replayed = 0  # bytes of the new run compared so far

    @property
    def resource_id(self) -> str:
        return self._writer.resource_id

    @property
    def status(self) -> ResourceStatus:
        return self._writer.status

    @property
    def ended(self) -> bool:
        return self._writer.ended

    @property
    def checksum_algorithm(self) -> ChecksumAlgorithm:
        return self._writer.checksum_algorithm

    @property
    def replaying(self) -> bool:
        return self._replayed < self._published

    async def append(self, data: bytes) -> None:
        if self.replaying:
            count = min(len(data), self._published - self._replayed)
            start = self._replayed
            before = await asyncio.to_thread(self._read, start, start + count)
            if before != data[:count]:
                await self._writer.fail(DIVERGED)
                raise ServerError(DIVERGED.message)
            self._replayed += count
            data = data[count:]
        if data:
            await self._writer.append(data)

    def progress(self, stage: str | None, percent: float | None = None) -> None:
        if not self.replaying:  # before, the lost worker's status says more
            self._writer.progress(stage, percent)

    async def flush(self) -> str:
        return await self._writer.flush()

    async def complete(self) -> ResourceStatus:
        if self.replaying:  # the new run made less than the lost one had published
            await self._writer.fail(DIVERGED)
            raise ServerError(DIVERGED.message)
        return await self._writer.complete()

    async def fail(self, error: ResourceError) -> ResourceStatus:
        return await self._writer.fail(error)
