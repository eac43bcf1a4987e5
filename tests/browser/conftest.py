"""Fixtures of the browser tests: one Chromium per module, a fresh page per test with a
screenshot at its end (kept as an artifact when the test failed); an uncaught error in the
page's scripts fails the test too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.browser import chromium_path, keep_artifact

VIEWPORT = {"width": 1000, "height": 640}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_OUTCOMES, {})[report.when] = report.failed
    return report


_OUTCOMES = pytest.StashKey[dict[str, bool]]()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport=VIEWPORT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    screenshot = tmp_path / "page.png"
    await opened.screenshot(path=str(screenshot))
    if request.node.stash.get(_OUTCOMES, {}).get("call"):
        print(f"\nscreenshot of the failed page: {keep_artifact(screenshot, request.node.name)}")
    await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
