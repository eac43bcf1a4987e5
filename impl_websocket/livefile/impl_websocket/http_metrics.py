"""``GET /metrics``: this process's runtime figures in the Prometheus text exposition format.

The figures are those of the worker process that answers: with ``--workers N`` each worker has
its own, and a scrape reaches whichever worker accepts it. Process figures come from ``/proc``
(Linux); where it is missing they are left out rather than reported as zero.
"""

from __future__ import annotations

import asyncio
import os
import resource
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from livefile.impl_server.manager import ResourceManager
from livefile.impl_websocket.access import ACCESS_RESPONSES, admin_access
from livefile.impl_websocket.connections import Connections

router = APIRouter()

CONNECTION_KINDS = ("upload", "download")


class PrometheusResponse(PlainTextResponse):
    # Starlette appends "; charset=utf-8" to text types.
    media_type = "text/plain; version=0.0.4"


@dataclass(frozen=True)
class Sample:
    value: float
    labels: tuple[tuple[str, str], ...] = ()


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
            lines.append(f"{self.name}{selector} {_number(sample.value)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _gauge(name: str, help: str, value: float) -> Metric:
    return Metric(name, "gauge", help, (Sample(value),))


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
    running uploads) for Prometheus. Figures are per worker process."""
    state = request.app.state
    service = service_metrics(state.connections, getattr(state, "manager", None))
    process = await asyncio.to_thread(process_metrics)
    return PrometheusResponse("".join(metric.exposition() for metric in [*process, *service]))
