"""A minimal OTLP/HTTP trace collector on a loopback port, for tests: it decodes each export
(protobuf, as the real exporter sends it) and keeps the spans, so that a test can wait for the
spans a real server exports."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


@dataclass(frozen=True)
class Event:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: tuple[Event, ...]
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class Collector:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._changed = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    events = tuple(
                        Event(event.name, _attributes(event.attributes)) for event in span.events
                    )
                    spans.append(
                        Span(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            _attributes(span.attributes),
                            events,
                            resource,
                        )
                    )
        with self._changed:
            self.spans.extend(spans)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Span], bool], timeout: float = 30.0) -> Span:
        """The first span for which ``predicate`` holds, waiting for exports to bring it."""
        return self.wait_for_spans(predicate, 1, timeout)[0]

    def wait_for_spans(
        self, predicate: Callable[[Span], bool], count: int, timeout: float = 30.0
    ) -> list[Span]:
        """The first ``count`` spans for which ``predicate`` holds, waiting for them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [span for span in self.spans if predicate(span)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [span.name for span in self.spans]
                    raise AssertionError(f"{len(found)} of {count} spans exported; got {names}")
                self._changed.wait(left)

    def in_trace(self, trace_id: str) -> list[Span]:
        with self._changed:
            return [span for span in self.spans if span.trace_id == trace_id]


@contextmanager
def running_collector() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector._server.shutdown()
        collector._server.server_close()
