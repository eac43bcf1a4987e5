"""``GET /resources/{id}/search`` against a real server: matching line numbers page by page,
every answer a bounded scan, and clear refusals."""

from __future__ import annotations

import urllib.parse
from typing import Any

from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

TEXT: dict[str, Any] = {"mime_type": "text/plain", "supports_line_access": True}
# ~19 MB: more than one answer scans (16 MiB).
BIG = [f"{n:07d} {'FAILURE here' if n in (3, 999_990) else 'all good'}\n" for n in range(1_000_000)]


def rid(reference: str) -> str:
    return reference.rsplit("/", 1)[-1].split("?")[0]


def search(server: LivefileProcess, resource: str, **query: Any) -> tuple[int, Any]:
    return get_json(
        f"{server.http_url}/resources/{resource}/search?{urllib.parse.urlencode(query)}"
    )


async def test_a_search_pages_through_a_large_resource_in_bounded_scans(
    server: LivefileProcess,
) -> None:
    resource = rid(await upload(server.ws_url, "".join(BIG).encode(), **TEXT))
    status, first = search(server, resource, q="failure")
    assert status == 200
    assert first["matches"] == [3]
    assert first["start"] == 0
    assert not first["scannedAll"]  # the scan stopped at its bound, short of the end
    assert 0 < first["nextStart"] < 999_990
    assert first["status"]["transferStatus"] == "COMPLETED"
    found = first["matches"]
    start = first["nextStart"]
    while True:
        status, page = search(server, resource, q="failure", start=start)
        assert status == 200
        found += page["matches"]
        start = page["nextStart"]
        if page["scannedAll"]:
            break
    assert found == [3, 999_990]
    assert start == 1_000_000
    assert not page["growing"]


async def test_limit_caps_the_matches_of_one_answer(server: LivefileProcess) -> None:
    lines = "".join(f"match {n}\n" for n in range(10)).encode()
    resource = rid(await upload(server.ws_url, lines, **TEXT))
    status, page = search(server, resource, q="MATCH", limit=4)
    assert (status, page["matches"], page["nextStart"]) == (200, [0, 1, 2, 3], 4)
    status, page = search(server, resource, q="MATCH", caseSensitive="true")
    assert (status, page["matches"], page["scannedAll"]) == (200, [], True)


async def test_a_growing_resource_is_searched_up_to_its_published_lines(
    server: LivefileProcess,
) -> None:
    async with RawUpload(server.ws_url, **TEXT) as raw:
        await raw.write(b"first\nsecond\nthird without its end")
        # The first bytes are published at once; poll the status until they are.
        status, page = search(server, raw.resource_id, q="second")
        while page["status"]["numberOfLines"] < 2:
            status, page = search(server, raw.resource_id, q="second")
        assert (status, page["matches"], page["nextStart"]) == (200, [1], 2)
        assert page["scannedAll"]
        assert page["growing"]
        await raw.finish()


async def test_bad_searches_are_refused_with_a_reason(server: LivefileProcess) -> None:
    text = rid(await upload(server.ws_url, b"one\ntwo\n", **TEXT))
    binary = rid(await upload(server.ws_url, b"\x00\x01"))
    assert search(server, text, q="o", start=3) == (
        400,
        {"detail": "start 3 is beyond the 2 published lines"},
    )
    assert search(server, binary, q="o") == (409, {"detail": "The resource has no line access"})
    assert search(server, "0" * 32, q="o") == (404, {"detail": "Unknown resource id"})
    for bad in ({"q": ""}, {"q": "a\nb"}, {"q": "x" * 1001}, {"q": "o", "limit": 0}, {}):
        status, body = search(server, text, **bad)
        assert status == 422, (bad, body)
        assert body["detail"][0]["loc"][0] == "query"
