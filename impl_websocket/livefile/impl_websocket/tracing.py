"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` environment variables ask for it.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``; not
``none``), or when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and ``OTEL_SDK_DISABLED`` is not ``true``. The OTLP
exporter speaks HTTP/protobuf, or gRPC when ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc``; every
other ``OTEL_*`` variable (endpoint, headers, service name, resource attributes, sampler, batch
delays) is read by the SDK itself. The SDK, the ASGI instrumentation and the exporters are the
``tracing`` extra (``pip install 'livefile-impl-websocket[tracing]'``); without them a server
asked to trace refuses to start, and one not asked never imports them.

Spans: one per HTTP request and one per WebSocket connection, named after the route template
(``GET /resources/{resource_id}/content``), without the per-message ``receive`` and ``send``
spans of the ASGI instrumentation (a 100-message upload is one span, not 101+). The ``token``
query parameter never reaches a span: the instrumentation sees the query string with its value
replaced by ``REDACTED``. Inside an upload's connection span, ``livefile.upload.start`` and
``livefile.upload.finish`` are child spans, and the upload's checkpoints are summarized in one
``livefile.upload.end`` event (how many statuses were published, the size and lines). Jobs
(``impl_server.jobs``) are spans of their own with their stage changes as events
(``impl_server.writer``). The context is a ``contextvars`` value, so worker threads started with
``asyncio.to_thread`` (storage, the repack engine) carry it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from livefile.api.model import ResourceStatus
from livefile.impl_websocket.access import TOKEN_PARAMETER

TRACER = trace.get_tracer("livefile.impl_websocket")
EXTRA_HINT = "pip install 'livefile-impl-websocket[tracing]'"
_RAW_QUERY = "livefile.raw_query_string"


class TracingUnavailableError(RuntimeError):
    """Tracing was asked for, but the SDK or an exporter is not installed."""


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return any(name not in ("", "none") for name in _names(exporters))
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _names(value: str) -> list[str]:
    return [name.strip().lower() for name in value.split(",")]


def tracer_provider_from_environment(environ: Mapping[str, str] = os.environ) -> Any | None:
    """The SDK's ``TracerProvider`` with the exporters ``environ`` names, or None when tracing
    is not asked for. Raises ``TracingUnavailableError`` (with what to install) or ValueError
    (an exporter or protocol livefile does not know)."""
    if not tracing_requested(environ):
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailableError(
            f"OTEL_* variables ask for tracing, but {exc.name} is not installed: {EXTRA_HINT}"
        ) from exc
    # OTEL_SERVICE_NAME first, then a service.name in OTEL_RESOURCE_ATTRIBUTES, then livefile.
    service = environ.get("OTEL_SERVICE_NAME")
    named = "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attributes = {} if named and not service else {SERVICE_NAME: service or "livefile"}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in _names(environ.get("OTEL_TRACES_EXPORTER", "otlp")):
        if name not in ("", "none"):
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: livefile knows otlp, console and none")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        else:
            raise ValueError(f"OTLP protocol {protocol!r}: livefile knows http/protobuf and grpc")
    except ImportError as exc:
        raise TracingUnavailableError(
            f"the OTLP {protocol} exporter ({exc.name}) is not installed: {EXTRA_HINT}"
        ) from exc
    return OTLPSpanExporter()


def check_tracing() -> None:
    """Raise what ``tracer_provider_from_environment`` would, before a server starts."""
    provider = tracer_provider_from_environment()
    if provider is not None:
        provider.shutdown()


def install(provider: Any) -> None:
    """Make ``provider`` the process's tracer provider (the one ``impl_server``'s job spans and
    this module's upload spans use); OpenTelemetry allows this once per process."""
    trace.set_tracer_provider(provider)


class TracingMiddleware:
    """The ASGI instrumentation around the app: a span per request and per connection, named
    by ``route_of`` (the route template), never per message, never with a token."""

    def __init__(self, app: ASGIApp, provider: Any, route_of: Callable[[Scope], str]) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        def span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
            route = route_of(scope)
            name = route if scope["type"] == "websocket" else f"{scope['method']} {route}"
            return name, {"http.route": route}

        self.app = OpenTelemetryMiddleware(
            _RestoreQuery(app, route_of),
            default_span_details=span_details,
            tracer_provider=provider,
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Shows the instrumentation a query string without the token's value.
        raw: bytes = scope.get("query_string", b"")
        if TOKEN_PARAMETER.encode() in raw:
            scope = {**scope, "query_string": _redacted(raw), _RAW_QUERY: raw}
        await self.app(scope, receive, send)


class _RestoreQuery:
    """Gives the application the query string as the client sent it, and names the span after
    the route that answers, once routing has run (included routers cannot be matched ahead of
    it): when the answer starts, since the instrumentation ends an HTTP span with its body."""

    def __init__(self, app: ASGIApp, route_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _RAW_QUERY in scope:
            scope = {**scope, "query_string": scope[_RAW_QUERY]}
        span = trace.get_current_span()
        named = False

        async def naming_send(message: Message) -> None:
            nonlocal named
            if not named and scope.get("route") is not None:  # set in this dict by routing
                named = True
                route = self.route_of(scope)
                kind = scope["type"]
                span.update_name(route if kind == "websocket" else f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            await send(message)

        await self.app(scope, receive, naming_send)


def _redacted(query: bytes) -> bytes:
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    kept = [(name, "REDACTED" if name == TOKEN_PARAMETER else value) for name, value in pairs]
    return urlencode(kept).encode("latin-1")


def upload_ended(span: trace.Span, status: ResourceStatus, seconds: float) -> None:
    """The summary of an upload's checkpoints, as an event of its connection's ``span``."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        "livefile.transfer_status": status.transfer_status.value,
        "livefile.size": status.current_size,
        "livefile.statuses_published": status.revision or 0,
        "livefile.seconds": round(seconds, 3),
    }
    if status.number_of_lines is not None:
        attributes["livefile.lines"] = status.number_of_lines
    if status.error is not None:
        attributes["livefile.error_code"] = status.error.code
    span.add_event("livefile.upload.end", attributes)
