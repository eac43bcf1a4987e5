"""The job runner's span and books, with an in-memory span exporter: a job is one span that
carries what its worker threads record, and ends counted by kind and result."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from livefile.impl_server.jobs import JobLimits, JobRunner

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


async def test_a_job_is_one_span_holding_what_its_worker_thread_records(
    spans: InMemorySpanExporter,
) -> None:
    runner = JobRunner(JobLimits(concurrency=1, queue=1))
    done = asyncio.Event()

    def in_a_worker_thread() -> None:
        trace.get_current_span().add_event("from a worker thread")

    async def job() -> None:
        await asyncio.to_thread(in_a_worker_thread)
        done.set()

    runner.submit("probe", job, "probe")
    await done.wait()
    await runner.close()
    (span,) = spans.get_finished_spans()
    assert span.name == "livefile.job.probe"
    assert [event.name for event in span.events] == ["livefile.job.running", "from a worker thread"]
    assert span.attributes is not None
    assert span.attributes["livefile.job.result"] == "done"
    assert runner.books.ended == {("probe", "done"): 1}
    assert runner.books.durations["probe"].count == 1


async def test_a_job_that_raises_is_counted_as_an_error(spans: InMemorySpanExporter) -> None:
    runner = JobRunner(JobLimits(concurrency=1, queue=1))
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        raise RuntimeError("broken")

    runner.submit("broken", job, "probe")
    await started.wait()
    await runner.close()
    assert runner.books.ended == {("probe", "error"): 1}
