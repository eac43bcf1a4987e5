"""Running the server's producer jobs (repack, images, bundles, transfers): bounded
concurrency, a bounded queue with a clear refusal when it is full, and a wall-clock limit per
job, so that one hostile input cannot starve the others or the event loop (the blocking work of
a job runs in worker threads; see ``repack_job.py``).

A job is described by a ``JobSpec`` — plain data any worker can run — and run by the
``JobHandler`` registered for its kind. The handler owns the writer it is given and ends it
itself: COMPLETED, or FAILED with an ``error`` code (its own wall-clock limit included: only
the job knows how to stop its worker thread). The runner bounds how many run and wait, and
cancels them at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from livefile.api.errors import JobRefusedError, ResourceFailedError
from livefile.api.interfaces import ResourceWriter
from livefile.api.model import ResourceKind
from livefile.impl_server.job_books import JobBooks

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
_TRACER = trace.get_tracer("livefile.impl_server")
# The stage of a job's resource until its job can start producing (waiting for a slot, or for
# its sources); each handler names its own working stages.
STAGE_WAITING = "waiting"


@dataclass(frozen=True)
class JobSpec:
    """One job as plain data: what it produces, from what, with which parameters. It holds
    nothing of the process that made it, so that any worker can run it (JSON on the wire)."""

    kind: ResourceKind
    resource_id: str  # the resource the job writes (created before the job is queued)
    sources: tuple[str, ...] = ()  # the resources it reads
    params: Mapping[str, Any] = field(default_factory=dict)  # JSON values only

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind.value,
                "resourceId": self.resource_id,
                "sources": list(self.sources),
                "params": dict(self.params),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> JobSpec:
        data = json.loads(text)
        return cls(
            kind=ResourceKind(data["kind"]),
            resource_id=str(data["resourceId"]),
            sources=tuple(str(source) for source in data.get("sources", ())),
            params=dict(data.get("params", {})),
        )


class JobFailure(Exception):
    """A job's input was refused or could not be read; ``code`` names why (the FAILED status's
    ``error.code``), ``message`` says it to people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# Ends the job's resource FAILED with an error code and message (after what it must keep).
Fail = Callable[[str, str], Awaitable[None]]


async def run_to_an_end(
    what: str, seconds: float, work: Callable[[], Awaitable[None]], fail: Fail, resource_id: str
) -> None:
    """Run a job's ``work`` within its wall-clock limit; whatever goes wrong ends its resource
    FAILED through ``fail``: ``time_limit``, ``interrupted`` (the server stops; re-raised), a
    ``JobFailure``'s own code, ``source_failed``, or ``internal_error`` (logged)."""
    try:
        async with asyncio.timeout(seconds):
            await work()
    except TimeoutError:
        await fail("time_limit", f"the {what} took longer than {seconds:g} s")
    except asyncio.CancelledError:
        await asyncio.shield(fail("interrupted", f"the server stopped the {what}"))
        raise
    except JobFailure as exc:
        await fail(exc.code, exc.message)
    except ResourceFailedError as exc:
        await fail("source_failed", f"the source ended FAILED: {exc}")
    except Exception as exc:
        logger.exception("the %s into %s failed", what, resource_id)
        await fail("internal_error", str(exc)[:200])


class SharedJobs(Protocol):
    """Jobs shared by every worker (``redis_jobs.RedisJobQueue``): whichever claims one runs it."""

    async def check_room(self) -> None:
        """Raise ``JobRefusedError`` when no more jobs may wait."""

    async def submit(self, spec: JobSpec) -> None: ...

    async def close(self) -> None: ...


class JobHandler(Protocol):
    """Runs the jobs of one kind (one producer module each: ``repack_job.py``, …)."""

    async def run(self, spec: JobSpec, writer: ResourceWriter) -> None:
        """Produce ``spec.resource_id`` through ``writer`` and end it: COMPLETED, or FAILED
        with an ``error`` code. Cancellation (shutdown) ends it FAILED ``interrupted``."""


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
        self.books = JobBooks()  # every job's end, on whichever worker ran it (``run_traced``)

    def check_room(self) -> None:
        """Raise ``JobRefusedError`` unless a job submitted now would run or wait: every slot
        busy and ``limits.queue`` jobs waiting already is full."""
        if len(self._tasks) >= self.limits.concurrency + self.limits.queue:
            raise JobRefusedError(
                f"All {self.limits.concurrency} job slots are busy and {self.limits.queue}"
                " jobs wait: try again later"
            )

    def submit(self, name: str, job: Job) -> None:
        """Run ``job`` when a slot is free; raises ``JobRefusedError`` when full."""
        self.check_room()
        task = asyncio.create_task(self._run(name, job), name=f"job-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, name: str, job: Job) -> None:
        try:
            async with self._slots:
                await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("job %s failed", name)

    async def close(self) -> None:
        """Cancel every job (shutdown): each ends its resource FAILED as it unwinds."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def run_traced(
    books: JobBooks, spec: JobSpec, writer: ResourceWriter, work: Callable[[], Awaitable[None]]
) -> None:
    """Run one job's ``work`` (once it has a slot, on whichever worker runs it) in a span of its
    own — its stage changes are events (``LiveWriter.progress``); a no-op unless the server
    installed a tracer provider — and record its result and duration in ``books``."""
    result, started = "error", time.monotonic()
    with _TRACER.start_as_current_span(f"livefile.job.{spec.kind.value}") as span:
        span.set_attribute("livefile.resource_id", spec.resource_id)
        try:
            await work()
            result = writer.status.transfer_status.value.lower()
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            span.set_attribute("livefile.job.result", result)
            books.record(spec.kind.value, result, time.monotonic() - started)
