"""GET /resources and GET /contexts/{id}/resources on both catalogs (SQLite, and Redis through
a real redis-server): newest first, cursor paging without duplicates or gaps, filters by
context and status, live statuses, deleted resources left out; and, with Redis, a deletion
through one process reaching the uploader and the watchers of another."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.support.lifecycle import call, resource_files
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, open_ws, start_upload, status_where, wait_closed


def listing(url: str, token: str | None = None) -> list[dict[str, Any]]:
    """Every resource of a listing, page by page (each of at most 2)."""
    found: list[dict[str, Any]] = []
    cursor = None
    separator = "&" if "?" in url else "?"
    while True:
        page_url = f"{url}{separator}limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = call(page_url, token=token)
        assert status == 200, page
        assert len(page["resources"]) <= 2
        found += page["resources"]
        cursor = page.get("nextCursor")
        if cursor is None:
            return found


async def upload_into(server: LivefileProcess, context_id: str | None, data: bytes) -> str:
    """A whole upload, into the context if given; its resource id."""
    query = f"?streamingUploadContextId={context_id}" if context_id else ""
    async with open_ws(f"{server.ws_url}/ws/streaming/upload{query}") as ws:
        resource_id = await start_upload(ws)
        await ws.send(data)
        assert (await finish_upload(ws, data))["size"] == len(data)
    return resource_id


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, start_server: ServerFactory) -> LivefileProcess:
    if request.param == "sqlite":
        return start_server()
    redis: RedisProcess = request.getfixturevalue("redis_server")
    return start_server("--redis-url", redis.url)


async def test_listings_page_newest_first_without_duplicates_or_gaps_and_filter(
    backend: LivefileProcess,
) -> None:
    server = backend
    context_id = call(f"{server.http_url}/contexts", "POST")[1]["contextId"]
    ids = []
    for n in range(6):  # every other one in the context
        ids.append(await upload_into(server, context_id if n % 2 else None, b"x" * (n + 1)))
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as dropped:
        failed = await start_upload(dropped)
    ids.append(failed)
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as running:
        running_id = await start_upload(running)
        await running.send(b"growing")
        async with open_ws(f"{server.ws_url}/ws/streaming/download/{running_id}") as watcher:
            await status_where(watcher, transferStatus="IN_PROGRESS")
        ids.append(running_id)

        everything = listing(f"{server.http_url}/resources")
        assert [r["id"] for r in everything] == ids[::-1]  # newest first, each once
        # A resource created between two pages changes nothing in the pages that follow.
        first = call(f"{server.http_url}/resources?limit=3")[1]
        newer = await upload_into(server, None, b"newer")
        rest = listing(f"{server.http_url}/resources?cursor={first['nextCursor']}")
        assert [r["id"] for r in first["resources"] + rest] == ids[::-1]
        times = [r["createdAt"] for r in everything]
        assert times == sorted(times, reverse=True)
        by_id = {r["id"]: r for r in everything}
        assert by_id[running_id]["status"]["transferStatus"] == "IN_PROGRESS"  # the live one
        assert by_id[running_id]["status"]["currentSize"] == 7

        in_context = [ids[1], ids[3], ids[5]][::-1]
        for url in (
            f"{server.http_url}/contexts/{context_id}/resources",
            f"{server.http_url}/resources?context={context_id}",
        ):
            assert [r["id"] for r in listing(url)] == in_context
        assert call(f"{server.http_url}/contexts/{context_id}", "DELETE")[0] == 204
        closed = listing(f"{server.http_url}/contexts/{context_id}/resources")
        assert [r["id"] for r in closed] == in_context  # a closed context's are listed too
        running_only = listing(f"{server.http_url}/resources?status=IN_PROGRESS")
        assert [r["id"] for r in running_only] == [running_id]
        ended = listing(f"{server.http_url}/resources?status=FAILED&status=COMPLETED")
        assert [r["id"] for r in ended] == [newer, *ids[:7][::-1]]
        failed_only = listing(f"{server.http_url}/resources?status=FAILED")
        assert [r["id"] for r in failed_only] == [failed]

    assert call(f"{server.http_url}/resources/{ids[2]}", "DELETE")[0] == 204
    listed = [r["id"] for r in listing(f"{server.http_url}/resources")]
    assert listed == [newer, *[i for i in ids[::-1] if i != ids[2]]]
    status, page = call(f"{server.http_url}/resources?limit=100000")
    assert status == 200  # capped, not refused
    assert len(page["resources"]) == 8
    status, body = call(f"{server.http_url}/resources?cursor=not-a-cursor")
    assert status == 400
    assert body["detail"].startswith("Invalid cursor")


async def test_a_deletion_through_one_process_reaches_the_uploader_and_watchers_of_another(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    shared = ("--redis-url", redis_server.url)
    deleter = start_server(*shared, data_dir=tmp_path / "shared")
    holder = start_server(*shared, data_dir=tmp_path / "shared")
    async with open_ws(f"{holder.ws_url}/ws/streaming/upload") as uploader:
        resource_id = await start_upload(uploader)
        await uploader.send(b"on the holder")
        watchers = [
            open_ws(f"{node.ws_url}/ws/streaming/download/{resource_id}")
            for node in (holder, deleter)
        ]
        async with watchers[0] as on_holder, watchers[1] as on_deleter:
            for watcher in (on_holder, on_deleter):
                await status_where(watcher, currentSize=13)
            status, _ = await asyncio.to_thread(
                call, f"{deleter.http_url}/resources/{resource_id}", "DELETE"
            )
            assert status == 204
            for watcher in (on_holder, on_deleter):
                last = await status_where(watcher, transferStatus="FAILED")
                assert last["error"]["code"] == "deleted"
                assert (await wait_closed(watcher))[0] == 1008
        code, reason = await wait_closed(uploader)
    assert code == 1008
    assert str(reason).startswith("Resource deleted")
    assert call(f"{holder.http_url}/resources/{resource_id}")[0] == 410
    assert resource_files(tmp_path / "shared", resource_id) == []
    assert call(f"{deleter.http_url}/resources/{resource_id}", "DELETE")[0] == 410
