"""How each kind of resource is presented to a browser (``presentation.py``): the whole table of
extensions and types the README lists; the same headers over real sockets, on every content path,
are in ``tests/e2e/test_http_for_browsers.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livefile.api.model import ResourceMetadata
from livefile.impl_websocket.presentation import (
    TEXT_EXTENSIONS,
    Disposition,
    forced_disposition,
    presentation_of,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_text_extensions() -> set[str]:
    """The extensions of the README's row for generic uploads with a log or text extension."""
    (row,) = [line for line in README.read_text().splitlines() if "with a log or text" in line]
    return set(re.findall(r"(?<![\w/])\.[a-z]+", row.split("|")[1]))


def metadata(filename: str, mime_type: str, line_access: bool = False) -> ResourceMetadata:
    return ResourceMetadata(
        filename=filename, mime_type=mime_type, supports_line_access=line_access
    )


def test_the_extension_table_is_the_one_the_readme_lists() -> None:
    assert set(TEXT_EXTENSIONS) == readme_text_extensions()


@pytest.mark.parametrize(("extension", "content_type"), sorted(TEXT_EXTENSIONS.items()))
def test_a_generic_upload_with_a_text_extension_is_shown_as_its_text_type(
    extension: str, content_type: str
) -> None:
    for generic in ("application/octet-stream", "binary/octet-stream"):
        shown = presentation_of(metadata(f"Build{extension.upper()}", generic))
        assert (shown.content_type, shown.disposition) == (content_type, Disposition.INLINE)
        assert not shown.active


@pytest.mark.parametrize(
    "mime_type",
    ["text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"],
)
def test_types_that_run_script_are_attachments_with_a_sandbox(mime_type: str) -> None:
    shown = presentation_of(metadata("x", mime_type))
    assert (shown.content_type, shown.disposition) == (mime_type, Disposition.ATTACHMENT)
    assert shown.headers() == {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }


def test_line_access_is_utf8_text_shown_inline_whatever_was_announced() -> None:
    shown = presentation_of(metadata("page.html", "text/html", line_access=True))
    assert (shown.content_type, shown.disposition, shown.active) == (
        "text/plain; charset=utf-8",
        Disposition.INLINE,
        False,
    )


def test_an_announced_type_other_than_the_generic_one_is_kept() -> None:
    assert presentation_of(metadata("a.log", "application/zip")).content_type == "application/zip"


def test_the_disposition_parameter_takes_inline_or_attachment_only() -> None:
    assert forced_disposition(None) is None
    assert forced_disposition("inline") is Disposition.INLINE
    assert forced_disposition("attachment") is Disposition.ATTACHMENT
    with pytest.raises(ValueError, match="download"):
        forced_disposition("download")
