"""Makes docs/viewer.png, the README's picture of the live-tail page: a CI log with colours,
still being uploaded, searched for a word.

    uv run python -m tests.browser.readme_screenshot
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from tests.support.browser import ROOT, chromium_path
from tests.support.raw_upload import RawUpload
from tests.support.server import LivefileProcess

GREEN, RED, YELLOW, BOLD, DIM, RESET = (
    "\x1b[32m",
    "\x1b[31m",
    "\x1b[33m",
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[0m",
)


def ci_log() -> str:
    lines = [
        f"{BOLD}$ uv sync --locked{RESET}",
        f"{DIM}Resolved 96 packages in 12ms{RESET}",
        f"{GREEN}Installed 96 packages in 1.42s{RESET}",
        f"{BOLD}$ uv run pytest -q tests/e2e{RESET}",
    ]
    for n in range(1, 41):
        mark = f"{GREEN}PASSED{RESET}" if n % 13 else f"{RED}{BOLD}FAILED{RESET}"
        lines.append(f"tests/e2e/test_live_resources.py::test_case_{n:03d} {mark}")
    lines.append(f"{YELLOW}warning:{RESET} 1 test took longer than 5 s")
    lines.append("downloading artifacts 100%")
    return "".join(f"{line}\n" for line in lines)


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        server = LivefileProcess(Path(scratch) / "data").start()
        try:
            async with RawUpload(
                server.ws_url,
                filename="ci-build-1842.log",
                mime_type="text/plain",
                supports_line_access=True,
            ) as raw:
                await raw.write(ci_log().encode())
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(executable_path=chromium_path())
                    page = await browser.new_page(viewport={"width": 900, "height": 520})
                    await page.goto(f"{server.http_url}/view/{raw.resource_id}#L30")
                    await page.wait_for_selector('.row[data-line="44"]')
                    await raw.write(b"uploading test reports...\n")
                    await page.wait_for_selector("#jump:has-text('1 new line')")
                    await page.fill("#query", "FAILED")
                    await page.press("#query", "Enter")
                    await page.wait_for_selector("#search-result:has-text('Match 1')")
                    await page.screenshot(path=str(ROOT / "docs" / "viewer.png"))
                    await browser.close()
                await raw.finish()
        finally:
            server.kill()


if __name__ == "__main__":
    asyncio.run(main())
