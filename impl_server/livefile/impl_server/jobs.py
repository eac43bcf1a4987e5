"""Running the server's producer jobs (repack, later images, bundles, transfers) in this process:
bounded concurrency, a bounded queue with a clear refusal when it is full, and a wall-clock
limit per job, so that one hostile input cannot starve the others or the event loop (the
blocking work of a job runs in worker threads; see ``repack_job.py``).

A job is a coroutine function that owns its writer and ends it itself: COMPLETED, or FAILED
with an ``error`` code (its own wall-clock limit included: only the job knows how to stop its
worker thread). The runner bounds how many run and wait, and cancels them
at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry import trace

from livefile.api.errors import JobRefusedError
from livefile.impl_server.job_books import JobBooks
from livefile.impl_server.writer import LiveWriter

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
_TRACER = trace.get_tracer("livefile.impl_server")


@dataclass(frozen=True)
class JobLimits:
    concurrency: int = 2  # jobs running at once (each may keep a core busy)
    queue: int = 100  # jobs waiting beyond those; more are refused


class JobRunner:
    """Runs jobs in this process, at most ``limits.concurrency`` at a time."""

    def __init__(self, limits: JobLimits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.books = JobBooks()

    def check_room(self) -> None:
        """Raise ``JobRefusedError`` unless a job submitted now would run or wait: every slot
        busy and ``limits.queue`` jobs waiting already is full."""
        if len(self._tasks) >= self.limits.concurrency + self.limits.queue:
            raise JobRefusedError(
                f"All {self.limits.concurrency} job slots are busy and {self.limits.queue}"
                " jobs wait: try again later"
            )

    def submit(
        self, name: str, job: Job, kind: str = "job", writer: LiveWriter | None = None
    ) -> None:
        """Run ``job`` when a slot is free; raises ``JobRefusedError`` when full. ``kind``
        (repack, ...) and the final status of ``writer`` (the resource the job produces) name
        it in traces and ``books``."""
        self.check_room()
        task = asyncio.create_task(self._run(name, job, kind, writer), name=f"job-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, name: str, job: Job, kind: str, writer: LiveWriter | None) -> None:
        result = "error"
        started: float | None = None  # when it got a slot: its duration leaves the queue out
        # A span per job (its stage changes are events: ``LiveWriter.progress``); a no-op
        # unless the server installed a tracer provider.
        with _TRACER.start_as_current_span(f"livefile.job.{kind}") as span:
            if writer is not None:
                span.set_attribute("livefile.resource_id", writer.resource_id)
            try:
                async with self._slots:
                    started = time.monotonic()
                    span.add_event("livefile.job.running")
                    await job()
                result = writer.status.transfer_status.value.lower() if writer else "done"
            except asyncio.CancelledError:
                result = "cancelled"
                raise
            except Exception:
                logger.exception("job %s failed", name)
            finally:
                span.set_attribute("livefile.job.result", result)
                seconds = 0.0 if started is None else time.monotonic() - started
                self.books.record(kind, result, seconds)

    async def close(self) -> None:
        """Cancel every job (shutdown): each ends its resource FAILED as it unwinds."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
