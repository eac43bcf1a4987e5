"""The browser tests' own rule: without Chromium or playwright they skip, or fail when CI
requires the browser (``LIVEFILE_REQUIRE_BROWSER=1``)."""

from __future__ import annotations

import pytest

from tests.support import browser


def test_a_missing_browser_fails_when_it_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("LIVEFILE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="but no browser at /nonexistent/chromium"):
        browser.chromium_path()


def test_a_missing_browser_skips_when_it_is_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("LIVEFILE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no browser at /nonexistent/chromium"):
        browser.chromium_path()
