"""HTTP for browsers over real sockets, without a browser: CORS headers (on the full route and on
both fast paths for finished files), preflights, a disallowed origin, content types and
dispositions, and /docs served from livefile's own assets. The same behaviour seen from a real
Chromium is in ``test_browser_chromium.py``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, open_ws, start_upload

PAGE_ORIGIN = "http://page.example:8000"
OTHER_ORIGIN = "http://elsewhere.example"
SECRET = "livefile-browser-secret-of-32-bytes!"
PAYLOAD = b"first line\nsecond line\n" * 100


def http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    data_dir = tmp_path_factory.mktemp("cors") / "data"
    server = LivefileProcess(data_dir, "--cors-origins", f"{PAGE_ORIGIN}, http://b.example").start()
    yield server
    server.kill()


async def stored(server: LivefileProcess, filename: str, mime_type: str, **more: Any) -> str:
    """The content URL of a COMPLETED resource holding ``PAYLOAD``."""
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        metadata = {"filename": filename, "mimeType": mime_type, **more}
        resource_id = await start_upload(ws, metadata)
        await ws.send(PAYLOAD)
        await finish_upload(ws, PAYLOAD)
    return f"{server.http_url}/resources/{resource_id}/content"


async def test_a_preflight_from_an_allowed_origin_allows_range_and_the_token_header(
    cors_server: LivefileProcess,
) -> None:
    url = await stored(cors_server, "a.bin", "application/octet-stream")
    status, headers, _ = http(
        url,
        "OPTIONS",
        {
            "Origin": PAGE_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range, authorization, if-none-match",
        },
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    assert headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, DELETE"
    allowed = headers["Access-Control-Allow-Headers"].lower()
    assert {"range", "authorization", "if-none-match"} <= set(allowed.split(", "))
    assert "Access-Control-Allow-Credentials" not in headers


async def test_a_preflight_from_another_origin_is_refused(cors_server: LivefileProcess) -> None:
    url = await stored(cors_server, "a.bin", "application/octet-stream")
    status, headers, body = http(
        url, "OPTIONS", {"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert status == 400
    assert b"Disallowed CORS origin" in body
    assert "Access-Control-Allow-Origin" not in headers


async def test_every_answer_for_a_finished_file_carries_cors_headers_on_every_path(
    cors_server: LivefileProcess,
) -> None:
    """The first request reaches the ASGI fast path (which caches the file's headers); the
    next ones could be answered by the HTTP protocol itself, which leaves requests with an
    Origin to the CORS middleware."""
    url = await stored(cors_server, "a.bin", "application/octet-stream")
    for _ in range(3):
        status, headers, body = http(url, headers={"Origin": PAGE_ORIGIN, "Range": "bytes=0-9"})
        assert (status, body) == (206, PAYLOAD[:10])
        assert headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
        assert "Origin" in headers["Vary"]
        exposed = {name.strip() for name in headers["Access-Control-Expose-Headers"].split(",")}
        assert {
            "Content-Range",
            "Content-Length",
            "ETag",
            "X-Livefile-Transfer-Status",
            "X-Livefile-Current-Size",
            "X-Livefile-Revision",
            "X-Livefile-Next-Line",
        } <= exposed


async def test_a_page_on_another_origin_gets_no_allow_origin(
    cors_server: LivefileProcess,
) -> None:
    url = await stored(cors_server, "a.bin", "application/octet-stream")
    for _ in range(2):
        status, headers, _ = http(url, headers={"Origin": OTHER_ORIGIN, "Range": "bytes=0-9"})
        assert status == 206  # answered: it is the browser that keeps it from the page
        assert "Access-Control-Allow-Origin" not in headers


async def test_without_cors_origins_no_cors_header_is_sent(server: LivefileProcess) -> None:
    url = await stored(server, "a.bin", "application/octet-stream")
    for _ in range(2):
        _, headers, _ = http(url, headers={"Origin": PAGE_ORIGIN})
        assert not [name for name in headers if name.lower().startswith("access-control-")]
    status, _, _ = http(
        url, "OPTIONS", {"Origin": PAGE_ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert status == 405


def test_a_refusal_by_access_control_is_readable_by_an_allowed_page(
    start_server: ServerFactory,
) -> None:
    server = start_server("--cors-origins", PAGE_ORIGIN, env={"LIVEFILE_JWT_SECRET": SECRET})
    url = f"{server.http_url}/resources/{'0' * 32}/content"
    preflight, headers, _ = http(
        url,
        "OPTIONS",
        {
            "Origin": PAGE_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert (preflight, headers["Access-Control-Allow-Origin"]) == (200, PAGE_ORIGIN)
    status, headers, _ = http(url, headers={"Origin": PAGE_ORIGIN})
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    assert "WWW-Authenticate" in headers["Access-Control-Expose-Headers"]


def test_a_cors_origin_that_is_not_an_origin_stops_the_server_with_its_setting(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "livefile.impl_common.cli", "serve"),
            *(
                "--data-dir",
                str(tmp_path),
                "--cors-origins",
                "https://a.example,https://b.example/x",
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--cors-origins" in result.stderr
    assert "'https://b.example/x' is not an origin" in result.stderr


OCTETS = "application/octet-stream"


@pytest.mark.parametrize(
    ("filename", "announced", "line_access", "content_type", "disposition"),
    [
        ("build.txt", "text/html", True, "text/plain; charset=utf-8", "inline"),
        ("ci.log", OCTETS, False, "text/plain", "inline"),
        ("job.out", OCTETS, False, "text/plain", "inline"),
        ("report.md", OCTETS, False, "text/markdown", "inline"),
        ("data.json", OCTETS, False, "application/json", "inline"),
        ("values.yaml", OCTETS, False, "application/yaml", "inline"),
        ("table.csv", OCTETS, False, "text/csv", "inline"),
        ("notes.txt", "text/plain", False, "text/plain", "inline"),
        ("shot.png", "image/png", False, "image/png", "inline"),
        ("doc.pdf", "application/pdf", False, "application/pdf", "inline"),
        ("a.zip", "application/zip", False, "application/zip", "attachment"),
        ("x.bin", OCTETS, False, OCTETS, "attachment"),
        ("page.html", "text/html", False, "text/html", "attachment"),
        ("pic.svg", "image/svg+xml", False, "image/svg+xml", "attachment"),
    ],
)
async def test_content_type_and_disposition_follow_what_a_browser_can_show(
    cors_server: LivefileProcess,
    filename: str,
    announced: str,
    line_access: bool,
    content_type: str,
    disposition: str,
) -> None:
    url = await stored(cors_server, filename, announced, supportsLineAccess=line_access)
    for _ in range(2):  # the full route or ASGI fast path, then the HTTP protocol's own answer
        status, headers, _ = http(url, headers={"Range": "bytes=0-9"})
        assert status == 206
        assert headers["Content-Type"] == content_type
        assert headers["Content-Disposition"].startswith(f"{disposition}; filename=")
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_types_that_run_script_are_sandboxed_even_when_forced_inline(
    cors_server: LivefileProcess,
) -> None:
    url = await stored(cors_server, "page.html", "text/html")
    status, headers, _ = http(f"{url}?disposition=inline")
    assert status == 200
    assert headers["Content-Disposition"].startswith("inline; ")
    assert headers["Content-Security-Policy"] == "sandbox"
    _, plain, _ = http(await stored(cors_server, "ci.log", "text/plain"))
    assert "Content-Security-Policy" not in plain


@pytest.mark.parametrize("forced", ["inline", "attachment"])
async def test_the_disposition_parameter_forces_either_on_every_path(
    cors_server: LivefileProcess, forced: str
) -> None:
    # A type whose default is the other one.
    filename, announced = ("x.log", "text/plain") if forced == "attachment" else ("x.bin", OCTETS)
    url = await stored(cors_server, filename, announced)
    for query in (f"?disposition={forced}", f"?disposition={forced}&partial=false"):
        for _ in range(2):
            status, headers, body = http(url + query, headers={"Range": "bytes=0-3"})
            assert (status, body) == (206, PAYLOAD[:4])
            assert headers.get_all("Content-Disposition") is not None
            assert len(headers.get_all("Content-Disposition") or []) == 1
            assert headers["Content-Disposition"].startswith(f"{forced}; filename=")
    # HEAD and the whole file too; the default is unchanged for requests without it.
    status, headers, _ = http(url + f"?disposition={forced}", "HEAD")
    assert headers["Content-Disposition"].startswith(f"{forced}; ")
    _, default, _ = http(url)
    assert not default["Content-Disposition"].startswith(f"{forced}; ")


async def test_a_disposition_that_is_neither_is_refused_with_422(
    cors_server: LivefileProcess,
) -> None:
    url = await stored(cors_server, "a.txt", "text/plain")
    http(url)  # cached: the fast paths pass it on to the full route, which refuses it
    status, _, body = http(f"{url}?disposition=download")
    assert status == 422
    assert b"disposition" in body


def mint(scope: str) -> str:
    now = int(time.time())
    claims = {"aud": "livefile", "iat": now, "exp": now + 600, "scope": scope}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_docs_and_redoc_load_every_asset_from_livefile_and_keep_access_control(
    start_server: ServerFactory,
) -> None:
    server = start_server(env={"LIVEFILE_JWT_SECRET": SECRET})
    base = server.http_url
    for page in ("/docs", "/redoc"):
        assert http(base + page)[0] == 401  # the page, as before: a token is needed
        status, _, html = http(base + page, headers={"Authorization": f"Bearer {mint('admin')}"})
        assert status == 200
        assets = re.findall(rb'(?:src|href)="([^"]+)"', html)
        assert assets, html
        for asset in assets:
            assert asset.startswith(b"/docs/assets/"), asset  # no other host: works offline
            # The library's public files: open, so that the page's own requests need no token.
            code, _, body = http(base + asset.decode())
            assert code == 200, asset
            assert len(body) > 1000
        assert b"//" not in b"".join(re.findall(rb"url: *'([^']*)'", html))
