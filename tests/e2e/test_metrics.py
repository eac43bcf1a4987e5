"""``GET /metrics``: the server's own runtime figures, in the Prometheus text format, over a real
socket."""

from __future__ import annotations

import time
import urllib.error

import jwt
import psutil
import pytest

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.metrics import (
    PROMETHEUS_CONTENT_TYPE,
    parse_exposition,
    scrape,
    scrape_async,
    wait_for_metrics,
)
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

UPLOADS = 'livefile_connections{kind="upload"}'
DOWNLOADS = 'livefile_connections{kind="download"}'
SECRET = "livefile-metrics-secret-of-32-bytes"


def mint(scope: str) -> str:
    now = int(time.time())
    claims = {"aud": "livefile", "iat": now, "exp": now + 300, "scope": scope}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_metrics_are_prometheus_text_with_a_help_and_type_for_every_metric(
    server: LivefileProcess,
) -> None:
    metrics = scrape(server.http_url)  # parse_exposition checks HELP and TYPE for each sample
    assert metrics.content_type == PROMETHEUS_CONTENT_TYPE
    assert metrics.types == {
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "process_cpu_seconds_total": "counter",
        "livefile_asyncio_tasks": "gauge",
        "livefile_connections": "gauge",
        "livefile_active_uploads": "gauge",
        "livefile_received_bytes_total": "counter",
        "livefile_sent_bytes_total": "counter",
        "livefile_uploads_total": "counter",
        "livefile_http_responses_total": "counter",
        "livefile_websocket_closes_total": "counter",
        "livefile_connections_closed_total": "counter",
        "livefile_blurhash_lookups_total": "counter",
        "livefile_jobs_total": "counter",
        "livefile_job_duration_seconds": "histogram",
        "process_start_time_seconds": "gauge",
        "livefile_process_id": "gauge",
    }
    assert metrics["process_resident_memory_bytes"] > 10 * 1024 * 1024
    assert 3 <= metrics["process_open_fds"] <= metrics["process_max_fds"]
    assert metrics["livefile_asyncio_tasks"] >= 1  # the request being answered
    assert metrics[UPLOADS] >= 0
    assert metrics[DOWNLOADS] >= 0


def test_exposition_parser_refuses_a_sample_without_help_and_type() -> None:
    with pytest.raises(ValueError, match="no HELP or TYPE"):
        parse_exposition("livefile_asyncio_tasks 3\n")


async def test_open_connections_and_running_uploads_are_counted_until_they_close(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    idle = await scrape_async(server.http_url)
    assert (idle[UPLOADS], idle[DOWNLOADS], idle["livefile_active_uploads"]) == (0, 0, 0)
    async with AsyncUploadClient(server.ws_url) as client:
        upload = await client.start(filename="counted.bin", mime_type="application/octet-stream")
        await upload.write(b"x" * 1000)
        async with AsyncDownloadClient(upload.reference) as watcher:
            await watcher.wait_for_status(lambda status: status.current_size == 1000)
            watched = await scrape_async(server.http_url)
            assert (watched[UPLOADS], watched[DOWNLOADS]) == (1, 1)
            assert watched["livefile_active_uploads"] == 1
            # A watcher and an upload are tasks of their own on the server's loop.
            assert watched["livefile_asyncio_tasks"] > idle["livefile_asyncio_tasks"]
        unwatched = await wait_for_metrics(server.http_url, lambda m: m[DOWNLOADS] == 0)
        assert unwatched[UPLOADS] == 1
        await upload.finish()
    ended = await wait_for_metrics(server.http_url, lambda m: m[UPLOADS] == 0)
    assert ended["livefile_active_uploads"] == 0


def test_metrics_route_is_described_in_openapi_as_prometheus_text(
    server: LivefileProcess,
) -> None:
    status, spec = get_json(f"{server.http_url}/openapi.json")
    assert status == 200
    route = spec["paths"]["/metrics"]["get"]
    assert route["tags"] == ["service"]
    assert "text/plain; version=0.0.4" in route["responses"]["200"]["content"]


def test_metrics_want_an_admin_token_when_access_control_is_on(
    start_server: ServerFactory,
) -> None:
    server = start_server(env={"LIVEFILE_JWT_SECRET": SECRET})
    for token, refusal in ((None, 401), (mint("upload"), 403)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(server.http_url, token)
        assert refused.value.code == refusal
    assert scrape(server.http_url, mint("admin"))[UPLOADS] == 0


def test_with_several_workers_each_scrape_is_the_figures_of_the_one_worker_that_answers(
    start_server: ServerFactory, redis_server: RedisProcess
) -> None:
    """What the README tells Prometheus users: workers share one port, a scrape reaches
    whichever worker accepts its connection, and its figures are that process's alone (nothing
    is summed across workers). Which worker the kernel picks is not fixed (on a loaded machine
    one may take every connection), so this checks each answer against the worker it came
    from."""
    server = start_server("--workers", "2", "--redis-url", redis_server.url)
    assert server.wait_for_log("Application startup complete.", timeout=120, times=2)
    assert server.process is not None
    workers = {worker.pid for worker in psutil.Process(server.process.pid).children(recursive=True)}
    scraped = 'livefile_http_responses_total{method="GET",route="/metrics",status="200"}'
    by_worker: dict[float, list[float]] = {}
    for _ in range(30):  # each on a new connection
        metrics = scrape(server.http_url)
        answered = metrics.samples.get(scraped, 0.0)  # counted once an answer is complete
        by_worker.setdefault(metrics["livefile_process_id"], []).append(answered)
    # Every answer came from one of the worker processes (not the supervisor)...
    assert {int(pid) for pid in by_worker} <= workers
    assert server.process.pid not in by_worker
    # ...and counts at most the scrapes that worker answered before it (a response is counted
    # once it is complete, which may come after the client has its bytes): never another's.
    for counts in by_worker.values():
        assert counts == sorted(counts)
        assert all(count <= before for before, count in enumerate(counts))
