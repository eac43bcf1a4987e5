"""The HTTP API from a page on another origin, in a real Chromium (Debian's, driven by
playwright, nothing downloaded): ``fetch`` with ``Range``, ``fetch`` following a growing
resource, ``EventSource``, a page on an origin not listed; and /docs and /redoc rendering with
no network but the server's.

CI installs ``chromium`` (.ci/run) and sets ``LIVEFILE_REQUIRE_BROWSER=1``: there a missing
browser or playwright fails these tests instead of skipping them."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection

from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, open_ws, start_upload

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("LIVEFILE_REQUIRE_BROWSER") == "1"
WAIT_MS = 30_000  # a bound for the browser on a loaded machine, never a synchronisation sleep
# Every host name but loopback resolves to nothing: the browser is offline.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"
pytestmark = pytest.mark.asyncio(loop_scope="module")

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - a dev dependency
    async_playwright = None  # type: ignore[assignment]

if async_playwright is None or not os.path.exists(CHROMIUM):
    if REQUIRED:
        pytest.fail(
            "LIVEFILE_REQUIRE_BROWSER=1 but playwright or /usr/bin/chromium is missing",
            pytrace=False,
        )
    pytest.skip("playwright or chromium is not installed", allow_module_level=True)


class PageHandler(BaseHTTPRequestHandler):
    """Serves an empty page: the origin the test's scripts run on."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>another origin</title><p>page</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cors_server(
    tmp_path_factory: pytest.TempPathFactory, page_server: int
) -> Iterator[LivefileProcess]:
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    origin = f"http://127.0.0.1:{page_server}"
    server = LivefileProcess(data_dir, "--cors-origins", origin).start()
    yield server
    server.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """One browser for the module (each test has its own context: no shared state); the
    offline host rules only let it reach loopback addresses by number and ``localhost``."""
    assert async_playwright is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=[OFFLINE])
        yield browser
        await browser.close()


@asynccontextmanager
async def chromium_page(browser: Browser, url: str | None = None) -> AsyncIterator[Page]:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        if url is not None:
            await page.goto(url)
        yield page
    finally:
        await context.close()


@asynccontextmanager
async def page_and_upload(
    browser: Browser, page_server: int, server: LivefileProcess
) -> AsyncIterator[tuple[Page, ClientConnection, str]]:
    """A page on the listed origin, an upload just started, and its resource's URL."""
    async with (
        chromium_page(browser, f"http://127.0.0.1:{page_server}/") as page,
        open_ws(f"{server.ws_url}/ws/streaming/upload") as ws,
    ):
        resource_id = await start_upload(ws, {"filename": "live.log", "mimeType": "text/plain"})
        yield page, ws, f"{server.http_url}/resources/{resource_id}"


async def stored(server: LivefileProcess, data: bytes) -> str:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        resource_id = await start_upload(ws, {"filename": "a.log", "mimeType": "text/plain"})
        await ws.send(data)
        await finish_upload(ws, data)
    return resource_id


FETCH_RANGE = """async (url) => {
    const answer = await fetch(url, {headers: {Range: "bytes=2-5"}});
    return [answer.status, answer.headers.get("Content-Range"),
            answer.headers.get("X-Livefile-Transfer-Status"), answer.headers.get("ETag"),
            await answer.text()];
}"""


async def test_fetch_with_range_from_another_origin_reads_bytes_and_exposed_headers(
    cors_server: LivefileProcess, page_server: int, chromium: Browser
) -> None:
    resource_id = await stored(cors_server, b"0123456789")
    url = f"{cors_server.http_url}/resources/{resource_id}/content"
    async with chromium_page(chromium, f"http://127.0.0.1:{page_server}/") as page:
        for _ in range(3):  # the first answer caches the file's headers for the fast paths
            status, content_range, transfer, etag, text = await page.evaluate(FETCH_RANGE, url)
            assert (status, content_range, text) == (206, "bytes 2-5/10", "2345")
            assert transfer == "COMPLETED"
            assert etag is not None


FOLLOW = """async (url) => {
    window.received = "";
    const answer = await fetch(url);
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        window.received += decoder.decode(value, {stream: true});
    }
    return [answer.status, answer.headers.get("X-Livefile-Transfer-Status"), window.received];
}"""


async def test_fetch_follows_a_growing_resource_to_its_end(
    cors_server: LivefileProcess, page_server: int, chromium: Browser
) -> None:
    async with page_and_upload(chromium, page_server, cors_server) as (page, ws, resource):
        await ws.send(b"first line\n")
        following = asyncio.ensure_future(page.evaluate(FOLLOW, f"{resource}/content"))
        await page.wait_for_function("window.received === 'first line\\n'")
        await ws.send(b"second line\n")
        await page.wait_for_function("window.received.endsWith('second line\\n')")
        await finish_upload(ws, b"first line\nsecond line\n")
        status, transfer, text = await following
    assert (status, transfer, text) == (200, "IN_PROGRESS", "first line\nsecond line\n")


EVENTS = """(url) => {
    window.statuses = [];
    const source = new EventSource(url);
    source.addEventListener("status", (event) => {
        const status = JSON.parse(event.data);
        window.statuses.push(status);
        if (status.transferStatus === "COMPLETED") source.close();
    });
}"""


async def test_event_source_from_another_origin_hears_every_status_to_the_end(
    cors_server: LivefileProcess, page_server: int, chromium: Browser
) -> None:
    async with page_and_upload(chromium, page_server, cors_server) as (page, ws, resource):
        await page.evaluate(EVENTS, f"{resource}/events")
        await page.wait_for_function("window.statuses.length >= 1")
        await ws.send(b"0123456789")
        await page.wait_for_function("window.statuses.some((status) => status.currentSize === 10)")
        await finish_upload(ws, b"0123456789")
        await page.wait_for_function(
            "window.statuses.some((status) => status.transferStatus === 'COMPLETED')"
        )
        statuses = await page.evaluate("window.statuses")
    sizes = [status["currentSize"] for status in statuses]
    assert sizes == sorted(sizes)
    assert statuses[-1]["transferStatus"] == "COMPLETED"
    assert statuses[-1]["currentSize"] == 10


async def test_a_page_on_an_origin_not_listed_cannot_read_the_answer(
    cors_server: LivefileProcess, page_server: int, chromium: Browser
) -> None:
    resource_id = await stored(cors_server, b"0123456789")
    url = f"{cors_server.http_url}/resources/{resource_id}/content"
    # localhost and 127.0.0.1 are different origins; only the second is listed.
    async with chromium_page(chromium, f"http://localhost:{page_server}/") as page:
        error = await page.evaluate(
            "async (url) => { try { await fetch(url); return null; }"
            " catch (error) { return error.name; } }",
            url,
        )
    assert error == "TypeError"  # "Failed to fetch": the browser withheld the answer


async def test_a_request_with_credentials_is_refused_by_the_browser(
    cors_server: LivefileProcess, page_server: int, chromium: Browser
) -> None:
    """livefile never allows credentials (it takes tokens, not cookies)."""
    resource_id = await stored(cors_server, b"0123456789")
    url = f"{cors_server.http_url}/resources/{resource_id}/content"
    async with chromium_page(chromium, f"http://127.0.0.1:{page_server}/") as page:
        plain, with_credentials = await page.evaluate(
            """async (url) => {
                const plain = await (await fetch(url)).text();
                try { await fetch(url, {credentials: "include"}); return [plain, null]; }
                catch (error) { return [plain, error.name]; }
            }""",
            url,
        )
    assert (plain, with_credentials) == ("0123456789", "TypeError")


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/docs", ".opblock"), ("/redoc", "[data-section-id^='operation/']")],
)
async def test_api_docs_render_their_operations_with_no_network_but_the_server(
    cors_server: LivefileProcess, path: str, operation: str, chromium: Browser
) -> None:
    answered: list[str] = []
    failed: list[tuple[str, str | None]] = []
    async with chromium_page(chromium) as page:
        page.on("response", lambda response: answered.append(response.url))
        page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
        await page.goto(cors_server.http_url + path)
        await page.wait_for_selector(operation)
        operations = await page.locator(operation).count()
    assert operations >= 10
    base = cors_server.http_url
    own = (base + "/", f"blob:{base}/", "data:")
    assert answered
    assert all(url.startswith(own) for url in answered), answered
    # What the page would fetch elsewhere (ReDoc's logo) its policy blocks before any lookup.
    assert all(reason == "csp" for _, reason in failed), failed
