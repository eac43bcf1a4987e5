"""``GET /metrics``: this process's runtime figures in the Prometheus text exposition format.

The figures are those of the worker process that answers: with ``--workers N`` each worker has
its own, and a scrape reaches whichever worker accepts it. Process figures come from ``/proc``
(Linux); where it is missing they are left out rather than reported as zero. Counters (bytes,
uploads, HTTP responses, WebSocket closes) come from ``counters.COUNTERS``, which the endpoints
and ``TrafficCounter`` (the outermost ASGI middleware) add to; jobs from the job runner's
``JobBooks``.
"""

from __future__ import annotations

import asyncio
import os
import resource
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from livefile.impl_server.job_books import JobBooks
from livefile.impl_server.jobs import JobRunner
from livefile.impl_server.manager import ResourceManager
from livefile.impl_websocket import admission
from livefile.impl_websocket.access import ACCESS_RESPONSES, admin_access
from livefile.impl_websocket.connections import Connections
from livefile.impl_websocket.counters import (
    CONTENT_ROUTE,
    COUNTERS,
    UNMATCHED_ROUTE,
    Counters,
    websocket_kind,
)
from livefile.impl_websocket.http_fast_content import CONTENT_PATH

router = APIRouter()

CONNECTION_KINDS = ("upload", "download")


class PrometheusResponse(PlainTextResponse):
    # Starlette appends "; charset=utf-8" to text types.
    media_type = "text/plain; version=0.0.4"


@dataclass(frozen=True)
class Sample:
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    suffix: str = ""  # a histogram's _bucket, _sum and _count


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]

    def exposition(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for sample in self.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sample.labels)
            selector = f"{{{labels}}}" if labels else ""
            lines.append(f"{self.name}{sample.suffix}{selector} {_number(sample.value)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _gauge(name: str, help: str, value: float) -> Metric:
    return Metric(name, "gauge", help, (Sample(value),))


def _counter(name: str, help: str, samples: list[Sample]) -> Metric:
    return Metric(name, "counter", help, tuple(samples))


def counter_metrics(counters: Counters = COUNTERS) -> list[Metric]:
    """What this process has done since it started."""
    metrics = [
        _counter(
            "livefile_received_bytes_total",
            "Upload data received (binary WebSocket messages accepted).",
            [Sample(counters.received_bytes)],
        ),
        _counter(
            "livefile_sent_bytes_total",
            "Resource bytes sent: WebSocket chunk replies and HTTP content (200, 206) bodies.",
            [Sample(counters.sent_bytes[via], (("via", via),)) for via in ("websocket", "http")],
        ),
        _counter(
            "livefile_uploads_total",
            "WebSocket uploads ended, by outcome.",
            [
                Sample(counters.uploads[outcome], (("outcome", outcome),))
                for outcome in ("completed", "failed")
            ],
        ),
        _counter(
            "livefile_http_responses_total",
            "HTTP responses by method, route template and status code.",
            [
                Sample(count, (("method", method), ("route", route), ("status", str(code))))
                for (method, route, code), count in sorted(counters.http_responses.items())
            ],
        ),
        _counter(
            "livefile_websocket_closes_total",
            "WebSocket connections ended, by kind, close code and who closed first"
            " (1006: the connection ended without a close frame).",
            [
                Sample(count, (("kind", kind), ("code", str(code)), ("by", by)))
                for (kind, code, by), count in sorted(counters.websocket_closes.items())
            ],
        ),
        _counter(
            "livefile_blurhash_lookups_total",
            "BlurHashes answered by POST /blurhashes, by where they were found: the image's"
            " metadata (described), this process's cache (memory), the workers' shared cache"
            " (redis), or the image itself (computed).",
            [
                Sample(counters.blurhash_lookups[found], (("found", found),))
                for found in ("described", "memory", "redis", "computed")
            ],
        ),
    ]
    books = admission.current()
    if books is not None:  # only under ``livefile serve``, once it has accepted a connection
        metrics.append(
            _counter(
                "livefile_connections_closed_total",
                "Connections closed before a request: no complete head in time (head_timeout),"
                " the oldest beyond the waiting cap (pending_cap), refused over the per-client"
                " cap (per_client_cap).",
                [Sample(count, (("reason", reason),)) for reason, count in books.totals.items()],
            )
        )
    return metrics


def job_metrics(books: JobBooks) -> list[Metric]:
    """The jobs this process's runner has ended (repack, ...), and how long they ran."""
    ended = [
        Sample(count, (("kind", kind), ("result", result)))
        for (kind, result), count in sorted(books.ended.items())
    ]
    durations: list[Sample] = []
    for kind, histogram in sorted(books.durations.items()):
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
            durations.append(Sample(count, (("kind", kind), ("le", _number(bound))), "_bucket"))
        durations += [
            Sample(histogram.count, (("kind", kind), ("le", "+Inf")), "_bucket"),
            Sample(histogram.total, (("kind", kind),), "_sum"),
            Sample(histogram.count, (("kind", kind),), "_count"),
        ]
    return [
        _counter(
            "livefile_jobs_total",
            "Server jobs ended, by kind (repack, ...) and result (completed, failed, cancelled,"
            " error).",
            ended,
        ),
        Metric(
            "livefile_job_duration_seconds",
            "histogram",
            "How long server jobs ran once they had a slot (queueing left out), by kind.",
            tuple(durations),
        ),
    ]


def process_metrics() -> list[Metric]:
    """Memory, descriptors and CPU of this process (blocking reads of ``/proc``: run them in a
    thread)."""
    metrics: list[Metric] = []
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except OSError:
        pass
    else:
        metrics.append(
            _gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                resident_pages * os.sysconf("SC_PAGE_SIZE"),
            )
        )
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    else:
        metrics.append(_gauge("process_open_fds", "Number of open file descriptors.", open_fds))
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit != resource.RLIM_INFINITY:
        metrics.append(
            _gauge("process_max_fds", "Maximum number of open file descriptors.", soft_limit)
        )
    if (started := _start_time()) is not None:
        metrics.append(
            _gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                started,
            )
        )
    metrics.append(
        _gauge(
            "livefile_process_id",
            "The id of the process that answers (with --workers N: which worker).",
            os.getpid(),
        )
    )
    times = os.times()
    metrics.append(
        Metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (Sample(times.user + times.system),),
        )
    )
    return metrics


def _start_time() -> float | None:
    """When this process started, from ``/proc`` (its start in clock ticks after boot)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as system:
            boot = next(line for line in system if line.startswith(b"btime "))
    except (OSError, StopIteration):
        return None
    ticks = int(fields[19])  # field 22, counted after the command name's closing parenthesis
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def service_metrics(connections: Connections, manager: ResourceManager | None) -> list[Metric]:
    """What the service is doing: its event loop's tasks, connections and running uploads.
    Runs on the event loop."""
    metrics = [
        _gauge(
            "livefile_asyncio_tasks",
            "Asyncio tasks alive on the event loop (the request being answered included).",
            len(asyncio.all_tasks()),
        ),
        Metric(
            "livefile_connections",
            "gauge",
            "Open WebSocket connections by kind.",
            tuple(Sample(connections.count(kind), (("kind", kind),)) for kind in CONNECTION_KINDS),
        ),
    ]
    if manager is not None:  # None only before the lifespan has started
        metrics.append(
            _gauge(
                "livefile_active_uploads",
                "Uploads running in this process.",
                len(manager.active_ids),
            )
        )
    return metrics


@router.get(
    "/metrics",
    response_class=PrometheusResponse,
    dependencies=[Depends(admin_access)],
    responses={
        **ACCESS_RESPONSES,
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
        },
    },
    tags=["service"],
)
async def metrics(request: Request) -> PrometheusResponse:
    """This process's runtime figures (memory, file descriptors, CPU, asyncio tasks, connections,
    running uploads) and counters (bytes received and sent, uploads completed and failed, HTTP
    responses, WebSocket closes, connections closed before a request, jobs by kind and result
    with their durations) for Prometheus. Figures are per worker process."""
    state = request.app.state
    service = service_metrics(state.connections, getattr(state, "manager", None))
    process = await asyncio.to_thread(process_metrics)
    metrics = [*process, *service, *counter_metrics()]
    runner: JobRunner | None = getattr(state, "job_runner", None)
    if runner is not None:  # None only before the lifespan has started
        metrics += job_metrics(runner.books)
    return PrometheusResponse("".join(metric.exposition() for metric in metrics))


class TrafficCounter:
    """The outermost ASGI middleware: counts each HTTP response by method, route template and
    status, the resource bytes of content bodies, and how each WebSocket connection ended."""

    def __init__(self, app: ASGIApp, counters: Counters = COUNTERS) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        counters = self.counters
        status = 0
        content = CONTENT_PATH.fullmatch(scope["path"]) is not None

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and content and status in (200, 206):
                counters.sent_bytes["http"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            # FastAPI's outermost middleware answers 500 after this one has let go.
            status = status or 500
            raise
        finally:
            if status:
                route = route_template(scope)
                counters.http_responses[(scope["method"], route, status)] += 1

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        closed: tuple[int, str] | None = None  # the first close: code, by whom

        async def watching_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.disconnect" and closed is None:
                closed = (int(message.get("code", 1005)), "client")
            return message

        async def watching_send(message: Message) -> None:
            nonlocal closed
            if message["type"] == "websocket.close" and closed is None:
                closed = (int(message.get("code", 1000)), "server")
            await send(message)

        try:
            await self.app(scope, watching_receive, watching_send)
        finally:
            code, by = closed or (1006, "server")  # dropped without a close frame
            kind = websocket_kind(scope["path"])
            self.counters.websocket_closes[(kind, code, by)] += 1


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if CONTENT_PATH.fullmatch(scope["path"]):  # answered by the fast path, before routing
        return CONTENT_ROUTE
    # Answered before routing (a refusal by access control), or by no route at all (404).
    app: Any = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL and isinstance(getattr(candidate, "path", None), str):
            return str(candidate.path)
    return UNMATCHED_ROUTE
