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
from livefile.impl_server.jobs import JobSpec, run_traced
from livefile.impl_server.manager import ResourceManager

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


ZIP = ResourceMetadata(filename="out.zip", mime_type="application/zip")


async def test_a_job_is_one_span_holding_what_its_worker_thread_records(
    spans: InMemorySpanExporter, manager: ResourceManager
) -> None:
    books = JobBooks()
    writer = await manager.create_resource(ZIP, kind=ResourceKind.REPACK)
    spec = JobSpec(ResourceKind.REPACK, writer.resource_id)

    def in_a_worker_thread() -> None:
        trace.get_current_span().add_event("from a worker thread")

    async def job() -> None:
        await asyncio.to_thread(in_a_worker_thread)
        await writer.complete()

    await run_traced(books, spec, writer, job)
    (span,) = spans.get_finished_spans()
    assert span.name == "livefile.job.repack"
    assert [event.name for event in span.events] == ["from a worker thread"]
    assert span.attributes is not None
    assert span.attributes["livefile.job.result"] == "completed"
    assert span.attributes["livefile.resource_id"] == writer.resource_id
    assert books.ended == {("repack", "completed"): 1}
    assert books.durations["repack"].count == 1


async def test_a_job_that_raises_is_counted_as_an_error(
    spans: InMemorySpanExporter, manager: ResourceManager
) -> None:
    books = JobBooks()
    writer = await manager.create_resource(ZIP, kind=ResourceKind.REPACK)

    async def job() -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await run_traced(books, JobSpec(ResourceKind.REPACK, writer.resource_id), writer, job)
    assert books.ended == {("repack", "error"): 1}
    await writer.fail(ResourceError(code="internal_error", message="broken"))
