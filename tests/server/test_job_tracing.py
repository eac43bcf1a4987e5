"""A job's span and books (``run_traced``), with an in-memory span exporter: a job is one span
that carries what its worker threads record, and ends counted by kind and result."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from livefile.api.model import ResourceError, ResourceKind, ResourceMetadata
from livefile.impl_server.job_books import JobBooks
from livefile.impl_server.jobs import JobLimits, JobRunner, JobSpec, run_traced
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.writer import LiveWriter

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, set once (OpenTelemetry allows no other) to export here."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def job_writer(manager: ResourceManager) -> LiveWriter:
    metadata = ResourceMetadata(filename="out.zip", mime_type="application/zip")
    return await manager.create_resource(metadata, kind=ResourceKind.REPACK, stage="waiting")


async def test_a_job_is_one_span_holding_what_its_worker_thread_records(
    spans: InMemorySpanExporter, manager: ResourceManager
) -> None:
    runner = JobRunner(JobLimits(concurrency=1, queue=1))
    writer = await job_writer(manager)
    spec = JobSpec(ResourceKind.REPACK, writer.resource_id)
    done = asyncio.Event()

    def in_a_worker_thread() -> None:
        trace.get_current_span().add_event("from a worker thread")

    async def work() -> None:
        writer.progress("repacking", 0)
        await asyncio.to_thread(in_a_worker_thread)
        await writer.complete()
        done.set()

    runner.submit("probe", lambda: run_traced(runner.books, spec, writer, work))
    await done.wait()
    await runner.close()
    (span,) = spans.get_finished_spans()
    assert span.name == "livefile.job.repack"
    assert [event.name for event in span.events] == ["livefile.stage", "from a worker thread"]
    assert span.attributes is not None
    assert span.attributes["livefile.job.result"] == "completed"
    assert span.attributes["livefile.resource_id"] == writer.resource_id
    assert runner.books.ended == {("repack", "completed"): 1}
    assert runner.books.durations["repack"].count == 1


async def test_a_job_that_raises_is_counted_as_an_error(
    spans: InMemorySpanExporter, manager: ResourceManager
) -> None:
    books = JobBooks()
    writer = await job_writer(manager)

    async def work() -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await run_traced(books, JobSpec(ResourceKind.REPACK, writer.resource_id), writer, work)
    assert books.ended == {("repack", "error"): 1}
    await writer.fail(ResourceError(code="internal_error", message="broken"))
