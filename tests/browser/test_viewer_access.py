"""The live-tail page with access control on: it works with the token of a reference, uses it
for every request without writing it to the server's log, and refuses without one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_viewer import TEXT, WAIT_MS, visible_rows, wait_for_row
from tests.e2e.test_access_control import SECRET_ENV, http, mint
from tests.support.raw_upload import RawUpload
from tests.support.server import LivefileProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    server = LivefileProcess(
        tmp_path_factory.mktemp("guarded-viewer") / "data",
        env=SECRET_ENV,
    ).start()
    yield server
    server.kill()


async def test_the_page_works_with_a_reference_token_and_keeps_it_out_of_the_log(
    guarded: LivefileProcess, page: Any
) -> None:
    async with RawUpload(
        guarded.ws_url, filename="secret.log", token=mint(scope="upload"), **TEXT
    ) as raw:
        token = raw.reference.split("?token=")[1]
        await raw.write(b"classified\n")
        await page.goto(f"{guarded.http_url}/view/{raw.resource_id}?token={token}")
        await wait_for_row(page, 1, "classified")
        await raw.write(b"still classified\n")  # reaches the page through the event stream
        await wait_for_row(page, 2, "still classified")
        await raw.finish()
    await page.wait_for_selector("#badge.COMPLETED", timeout=WAIT_MS)
    await page.fill("#query", "still")
    await page.press("#query", "Enter")
    await page.wait_for_selector("#search-result:has-text('Match 1 of 1')", timeout=WAIT_MS)
    href = await page.get_attribute("#download", "href")
    assert href == f"/resources/{raw.resource_id}/content?token={token}"

    rid = raw.resource_id
    # Requests that can send a header send it; the rest are redacted in the access log.
    assert guarded.wait_for_log(f"/resources/{rid}/events?token=[redacted]")
    assert guarded.wait_for_log(f"/resources/{rid}/search?q=still&start=0&limit=100 HTTP")
    assert guarded.wait_for_log(f"/view/{rid}?token=[redacted]")
    lines_request = rf'"GET /resources/{rid}/lines\?start=0&count=\d+ HTTP/1.1" 200'
    assert re.search(lines_request, guarded.log())
    assert token not in guarded.log()


async def test_the_page_refuses_without_a_token_or_with_another_resources_token(
    guarded: LivefileProcess, page: Any
) -> None:
    async with RawUpload(
        guarded.ws_url, filename="secret.log", token=mint(scope="upload"), **TEXT
    ) as raw:
        await raw.write(b"classified\n")
        await raw.finish()
    await page.goto(f"{guarded.http_url}/view/{raw.resource_id}")
    await page.wait_for_selector("#problem:visible", timeout=WAIT_MS)
    assert await page.text_content("#problem") == (
        "Unauthorized: a token is required (Authorization: Bearer <token>, or ?token=<token>)"
    )
    assert await visible_rows(page) == []
    assert await page.is_hidden("#download")

    other = mint(scope="download", resource="0" * 32)
    await page.goto(f"{guarded.http_url}/view/{raw.resource_id}?token={other}")
    await page.wait_for_selector("#problem:visible", timeout=WAIT_MS)
    assert await page.text_content("#problem") == "Forbidden: token is for another resource"
    assert await visible_rows(page) == []


async def test_the_context_page_passes_its_token_on_to_the_resources_pages(
    guarded: LivefileProcess, page: Any
) -> None:
    admin = mint(scope="admin")
    _, _, body = http(f"{guarded.http_url}/contexts", method="POST", token=admin)
    context = json.loads(body)["contextId"]
    await page.goto(f"{guarded.http_url}/view/contexts/{context}?token={admin}")
    await page.wait_for_selector("#badge:has-text('OPEN')", timeout=WAIT_MS)
    async with RawUpload(guarded.ws_url, token=admin, context_id=context, **TEXT) as raw:
        await raw.write(b"inside the context\n")
        await raw.finish()
    link = page.locator(f'tr[data-resource="{raw.resource_id}"] a')
    assert await link.get_attribute("href") == f"/view/{raw.resource_id}?token={admin}"
    await link.click()
    await wait_for_row(page, 1, "inside the context")
