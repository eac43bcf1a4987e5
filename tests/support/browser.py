"""A real Chromium for browser tests: Debian's ``chromium`` driven by ``playwright``, which
downloads nothing when given the browser's path.

Without the browser or playwright the tests are skipped, or fail when
``LIVEFILE_REQUIRE_BROWSER=1`` (CI). Each test's page ends with a screenshot; the screenshot of
a failed test is kept under ``tmp/artifacts/`` (``LIVEFILE_ARTIFACTS``) and its path printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LIVEFILE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("LIVEFILE_ARTIFACTS", ROOT / "tmp" / "artifacts"))


def chromium_path() -> str:
    """The browser to drive; fails or skips (see above) when it or playwright is missing."""
    problems = []
    found = shutil.which(CHROMIUM)
    if found is None:
        problems.append(f"no browser at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (uv sync)")
    if problems:
        message = "; ".join(problems)
        if os.environ.get("LIVEFILE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LIVEFILE_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    assert found is not None
    return found


def keep_artifact(screenshot: Path, test_name: str) -> Path:
    """Copy a failed test's screenshot where CI and people look for it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in test_name)
    kept = ARTIFACTS / f"{safe}.png"
    shutil.copyfile(screenshot, kept)
    return kept
