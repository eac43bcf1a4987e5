"""/docs and /redoc on a server with access control on: the pages take the token the server
asks for (``?token=``, since a browser's address bar sends no header) and send it with their
own requests — the API description and Swagger UI's "Try it out" — so that they work; without
a token every one of them is refused with 401, as any route is. Real HTTP requests, and the
pages in a real Chromium (skipped without it; failed when ``LIVEFILE_REQUIRE_BROWSER=1``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import pytest_asyncio

from tests.support.browser import chromium_path
from tests.support.server import LivefileProcess

SECRET = "livefile-docs-secret-of-32-bytes-long!"
WAIT_MS = 30_000  # a bound for the browser on a loaded machine, never a synchronisation sleep


def mint(scope: str, ttl: int = 600) -> str:
    now = int(time.time())
    claims = {"aud": "livefile", "iat": now, "exp": now + ttl, "scope": scope}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    data_dir = tmp_path_factory.mktemp("docs") / "data"
    server = LivefileProcess(data_dir, env={"LIVEFILE_JWT_SECRET": SECRET}).start()
    yield server
    server.kill()


def test_the_description_and_the_pages_want_a_token_like_every_route(
    guarded: LivefileProcess,
) -> None:
    base = guarded.http_url
    for path in ("/openapi.json", "/docs", "/redoc"):
        status, headers, body = http(base + path)
        assert status == 401, path
        assert json.loads(body)["detail"] == (
            "Unauthorized: a token is required (Authorization: Bearer <token>, or ?token=<token>)"
        )
        assert headers["www-authenticate"].startswith('Bearer realm="livefile"')
        expired = http(f"{base}{path}?token={mint('download', ttl=-3600)}")
        assert (expired[0], json.loads(expired[2])["detail"]) == (
            401,
            "Unauthorized: token expired",
        )
    # Any valid token opens them, whatever its scope: they describe routes, not resources.
    reader = mint("download")
    for asked in (f"{base}/openapi.json?token={reader}", f"{base}/openapi.json"):
        status, _, body = http(asked, {"Authorization": f"Bearer {reader}"})
        assert status == 200
        spec = json.loads(body)
        assert "/resources/{resource_id}/image" in spec["paths"]
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # No route uses OAuth 2: Swagger UI's redirect page for it is not served.
    assert http(f"{base}/docs/oauth2-redirect?token={reader}")[0] == 404
    for page in ("/docs", "/redoc"):
        status, headers, html = http(f"{base}{page}?token={reader}")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert reader.encode() not in html  # the page reads its token from its own address


# --- in a real browser ------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Any]:
    executable = chromium_path()  # skips, or fails with LIVEFILE_REQUIRE_BROWSER=1
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable)
        yield browser
        await browser.close()


@asynccontextmanager
async def swagger_ui(browser: Any, url: str) -> AsyncIterator[tuple[Any, list[str | None]]]:
    """Swagger UI at ``url``, its operations listed (the description was read), and the
    ``Authorization`` header of each of its requests for ``/metrics``, filled as they are
    sent."""
    metrics_auth: list[str | None] = []
    errors: list[str] = []
    context = await browser.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda r: sent(r, metrics_auth))
        await page.goto(url)
        await page.wait_for_selector(".opblock")
        assert await page.locator(".opblock").count() >= 10
        assert await page.get_by_text("Failed to load API definition").count() == 0
        # GET /metrics (admin only) ready to be tried.
        operation = page.locator(".opblock-get", has_text="/metrics").first
        await operation.locator(".opblock-summary").click()
        await operation.get_by_role("button", name="Try it out").click()
        yield page, metrics_auth
    finally:
        await context.close()
    assert errors == []


def sent(request: Any, metrics_auth: list[str | None]) -> None:
    if urlsplit(request.url).path == "/metrics":
        metrics_auth.append(request.headers.get("authorization"))


# The Authorization header Swagger UI's request interceptor gives a request for ``url``.
INTERCEPTED = """(url) => {
    const request = window.ui.getConfigs().requestInterceptor({url: url, headers: {}});
    return request.headers.Authorization || null;
}"""


async def tried(page: Any, base: str) -> int:
    """The status "Try it out" got for GET /metrics, as the server answered and as shown."""
    operation = page.locator(".opblock-get", has_text="/metrics").first
    async with page.expect_response(f"{base}/metrics") as answered:
        await operation.get_by_role("button", name="Execute").click()
    status = int((await answered.value).status)
    shown = operation.locator(".live-responses-table tr.response .response-col_status")
    assert (await shown.inner_text()).strip() == str(status)
    return status


async def authorize(page: Any, token: str) -> None:
    """Swagger UI's "Authorize" with ``token`` for the HTTPBearer scheme."""
    await page.locator(".auth-wrapper .authorize").click()
    scheme = page.locator(".modal-ux .auth-container", has_text="HTTPBearer")
    await scheme.locator("#auth-bearer-value").fill(token)
    await scheme.get_by_role("button", name="Apply credentials").click()
    await scheme.get_by_text("Authorized").wait_for()  # Swagger UI holds it now
    await page.locator(".modal-ux .close-modal").click()


@pytest.mark.asyncio(loop_scope="module")
async def test_swagger_ui_loads_the_description_and_tries_requests_with_the_page_token(
    guarded: LivefileProcess, chromium: Any
) -> None:
    base, admin = guarded.http_url, mint("admin")
    async with swagger_ui(chromium, f"{base}/docs?token={admin}") as (page, metrics_auth):
        assert await tried(page, base) == 200
        # The page's token goes to its own server only, never to another origin.
        elsewhere = await page.evaluate(INTERCEPTED, "http://127.0.0.1:9/x")
        here = await page.evaluate(INTERCEPTED, f"{base}/resources")
    assert metrics_auth == [f"Bearer {admin}"]
    assert (elsewhere, here) == (None, f"Bearer {admin}")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_token_set_with_authorize_goes_before_the_page_token(
    guarded: LivefileProcess, chromium: Any
) -> None:
    base, reader, admin = guarded.http_url, mint("download"), mint("admin")
    async with swagger_ui(chromium, f"{base}/docs?token={reader}") as (page, metrics_auth):
        assert await tried(page, base) == 403  # the page's token reads, /metrics is admin's
        await authorize(page, admin)
        assert await tried(page, base) == 200
    assert metrics_auth == [f"Bearer {reader}", f"Bearer {admin}"]


@pytest.mark.asyncio(loop_scope="module")
async def test_with_public_docs_the_page_needs_no_token_and_authorize_adds_one(
    tmp_path: Path, chromium: Any
) -> None:
    server = LivefileProcess(
        tmp_path / "data", "--public-docs", env={"LIVEFILE_JWT_SECRET": SECRET}
    ).start()
    try:
        base, admin = server.http_url, mint("admin")
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert http(base + path)[0] == 200, path
        assert http(f"{base}/metrics")[0] == 401  # nothing else is opened
        async with swagger_ui(chromium, f"{base}/docs") as (page, metrics_auth):
            assert await tried(page, base) == 401
            await authorize(page, admin)
            assert await tried(page, base) == 200
        assert metrics_auth == [None, f"Bearer {admin}"]
    finally:
        server.kill()


@pytest.mark.asyncio(loop_scope="module")
async def test_redoc_loads_the_description_with_the_page_token(
    guarded: LivefileProcess, chromium: Any
) -> None:
    reader = mint("download")
    asked: list[str] = []
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("request", lambda request: asked.append(request.url))
        await page.goto(f"{guarded.http_url}/redoc?token={reader}")
        operations = page.locator("[data-section-id^='operation/']")
        await operations.first.wait_for()
        assert await operations.count() >= 10
    finally:
        await context.close()
    assert f"{guarded.http_url}/openapi.json?token={reader}" in asked
