"""OpenTelemetry tracing of a real ``livefile serve``, switched on by the standard ``OTEL_*``
variables and exporting with the real OTLP/HTTP exporter to a collector in the test: a span per
WebSocket connection (not per message), per HTTP request, child spans of an upload, job spans
with their stages; and the job figures of ``/metrics``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from livefile.impl_websocket.tracing import (
    TracingUnavailableError,
    tracer_provider_from_environment,
    tracing_requested,
)
from tests.e2e.test_repack import zip_bytes
from tests.support.metrics import scrape
from tests.support.otlp_collector import Collector, Span, running_collector
from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, get_json, open_ws, start_upload

FRAMES = 100
UPLOAD_ROUTE = "/ws/streaming/upload"


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with running_collector() as running:
        yield running


@pytest.fixture(scope="module")
def traced_server(
    tmp_path_factory: pytest.TempPathFactory, collector: Collector
) -> Iterator[LivefileProcess]:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: export soon after a span ends
    }
    data_dir = tmp_path_factory.mktemp("traced") / "data"
    server = LivefileProcess(data_dir, env=env).start()
    yield server
    server.kill()


async def upload(server: LivefileProcess, frames: list[bytes], filename: str) -> str:
    async with open_ws(f"{server.ws_url}{UPLOAD_ROUTE}") as ws:
        resource_id = await start_upload(
            ws, {"filename": filename, "mimeType": "application/octet-stream"}
        )
        for frame in frames:
            await ws.send(frame)
        await finish_upload(ws, b"".join(frames))
    return resource_id


async def test_an_upload_of_100_messages_is_one_connection_span_with_its_children(
    traced_server: LivefileProcess, collector: Collector
) -> None:
    frames = [bytes([n]) * 1000 for n in range(FRAMES)]
    resource_id = await upload(traced_server, frames, "hundred.bin")

    def its_connection(span: Span) -> bool:
        return span.name == UPLOAD_ROUTE and any(
            event.attributes.get("livefile.size") == FRAMES * 1000 for event in span.events
        )

    connection = collector.wait_for(its_connection)
    trace = collector.in_trace(connection.trace_id)
    names = sorted(span.name for span in trace)
    assert names == sorted([UPLOAD_ROUTE, "livefile.upload.start", "livefile.upload.finish"])
    children = [span for span in trace if span is not connection]
    assert all(span.parent_id == connection.span_id for span in children)
    (ended,) = [event for event in connection.events if event.name == "livefile.upload.end"]
    assert ended.attributes["livefile.transfer_status"] == "COMPLETED"
    assert ended.attributes["livefile.statuses_published"] >= 2  # checkpoints and the end
    assert connection.attributes["http.route"] == UPLOAD_ROUTE
    assert connection.resource["service.name"] == "livefile"
    assert resource_id


async def test_each_http_request_is_a_span_named_by_its_route_without_the_token(
    traced_server: LivefileProcess, collector: Collector
) -> None:
    resource_id = await upload(traced_server, [b"0123456789"], "small.bin")
    url = f"{traced_server.http_url}/resources/{resource_id}/content?token=top-secret-value"
    for _ in range(3):  # with tracing on, finished files are not answered below ASGI either
        assert await asyncio.to_thread(read_range, url) == b"0123"

    def of_this_resource(span: Span) -> bool:
        return span.name == "GET /resources/{resource_id}/content" and any(
            resource_id in str(value) for value in span.attributes.values()
        )

    spans = collector.wait_for_spans(of_this_resource, 3)
    for span in spans:
        assert span.attributes["http.route"] == "/resources/{resource_id}/content"
        assert not any("top-secret-value" in str(value) for value in span.attributes.values())
        assert any("token=REDACTED" in str(value) for value in span.attributes.values())


def read_range(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Range": "bytes=0-3"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


async def test_a_repack_job_is_a_span_with_its_stages_and_is_counted_in_metrics(
    traced_server: LivefileProcess, collector: Collector
) -> None:
    archive = zip_bytes({"a.txt": b"alpha\n" * 1000, "b/c.txt": b"gamma\n" * 500})
    source_id = await upload(traced_server, [archive], "project.zip")
    code, started = get_json(
        f"{traced_server.http_url}/resources/{source_id}/repack", method="POST"
    )
    assert code == 202, started
    derived_id = started["reference"]["uri"].rsplit("/", 1)[1].split("?")[0]

    job = collector.wait_for(
        lambda span: (
            span.name == "livefile.job.repack"
            and span.attributes.get("livefile.resource_id") == derived_id
        )
    )
    assert job.attributes["livefile.job.result"] == "completed"
    stages = [e.attributes["livefile.stage"] for e in job.events if e.name == "livefile.stage"]
    assert "repacking" in stages
    # The job belongs to the trace of the request that started it.
    (request,) = [span for span in collector.in_trace(job.trace_id) if span.name.startswith("POST")]
    assert request.name == "POST /resources/{resource_id}/repack"

    metrics = scrape(traced_server.http_url)
    assert metrics['livefile_jobs_total{kind="repack",result="completed"}'] >= 1
    count = metrics['livefile_job_duration_seconds_count{kind="repack"}']
    assert count == metrics['livefile_job_duration_seconds_bucket{kind="repack",le="+Inf"}']
    assert count >= 1
    assert metrics['livefile_job_duration_seconds_sum{kind="repack"}'] > 0


def test_a_tracing_setting_livefile_cannot_follow_stops_the_server(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-m", "livefile.impl_common.cli", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, "OTEL_TRACES_EXPORTER": "zipkin"},
    )
    assert result.returncode == 2
    assert "livefile serve: cannot trace: OTEL_TRACES_EXPORTER='zipkin'" in result.stderr


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask_for_it(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing_requested(environ) is on


def test_an_otlp_protocol_livefile_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="OTLP protocol 'http/json'"):
        tracer_provider_from_environment(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "exporter.otlp.proto.http"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "proto.grpc"),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "ci-logs"}, "sdk.trace.export"),
    ],
)
def test_the_exporter_and_service_name_are_those_the_variables_name(
    environ: dict[str, str], exporter: str
) -> None:
    provider = tracer_provider_from_environment(environ)
    assert provider is not None
    try:
        processors = provider._active_span_processor._span_processors
        (module,) = [type(processor.span_exporter).__module__ for processor in processors]
        assert exporter in module
        named = environ.get("OTEL_SERVICE_NAME", "livefile")
        assert provider.resource.attributes["service.name"] == named
    finally:
        provider.shutdown()


def test_tracing_asked_for_without_the_sdk_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(TracingUnavailableError, match=r"livefile-impl-websocket\[tracing\]"):
        tracer_provider_from_environment({"OTEL_TRACES_EXPORTER": "otlp"})
