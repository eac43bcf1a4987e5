"""The live-tail page (``/view/{id}``) in a real Chromium against a real server: lines followed
live with their numbers, auto-scroll that gives way to the reader, a million-line resource opened
at a linked line with a bounded DOM, ANSI styles, a FAILED upload's reason, search beyond the
loaded lines, binary resources and images, the context page."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

pytestmark = pytest.mark.asyncio(loop_scope="module")
TEXT: dict[str, Any] = {"mime_type": "text/plain", "supports_line_access": True}
WAIT_MS = 20_000
# Rows in the DOM at most: one screenful of 640 px at 18 px a row, and a spare.
MAX_ROWS = 40
MILLION = 1_000_000
NEEDLE_LINE = 765_432  # numbered from 1, as the page shows it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    started = LivefileProcess(
        tmp_path_factory.mktemp("viewer") / "data", "--checkpoint-interval", "0.05"
    ).start()
    yield started
    started.kill()


def rid(reference: str) -> str:
    return reference.rsplit("/", 1)[-1].split("?")[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def million(server: LivefileProcess) -> str:
    """A COMPLETED resource of a million lines, one of which holds a unique word."""
    lines = [f"line {n:07d} of the big log\n" for n in range(1, MILLION + 1)]
    lines[NEEDLE_LINE - 1] = f"line {NEEDLE_LINE:07d} holds the needle-in-a-haystack\n"
    return rid(await upload(server.ws_url, "".join(lines).encode(), **TEXT))


async def visible_rows(page: Any) -> list[tuple[int, str]]:
    """The rows in the DOM, as (number shown, text), top to bottom."""
    rows: list[list[Any]] = await page.eval_on_selector_all(
        ".row", "rows => rows.map(r => [Number(r.dataset.line), r.lastChild.textContent])"
    )
    return [(number, text) for number, text in rows]


async def wait_for_row(page: Any, number: int, text: str | None = None) -> None:
    selector = f'.row[data-line="{number}"]'
    if text is None:
        await page.wait_for_selector(selector, timeout=WAIT_MS)
        return
    await page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.lastChild.textContent === text",
        arg=[selector, text],
        timeout=WAIT_MS,
    )


async def open_growing(page: Any, server: LivefileProcess, raw: RawUpload, lines: int) -> None:
    """Upload lines ``row 1`` .. ``row <lines>`` and open the page, which follows them."""
    await raw.write("".join(f"row {n}\n" for n in range(1, lines + 1)).encode())
    await page.goto(f"{server.http_url}/view/{raw.resource_id}")
    await wait_for_row(page, lines, f"row {lines}")


async def test_a_log_uploaded_line_by_line_shows_every_line_in_order(
    server: LivefileProcess, page: Any
) -> None:
    async with RawUpload(server.ws_url, filename="build.log", **TEXT) as raw:
        await page.goto(f"{server.http_url}/view/{raw.resource_id}")
        for batch in range(6):
            await raw.write(
                "".join(f"step {n}\n" for n in range(batch * 5 + 1, batch * 5 + 6)).encode()
            )
            # Each batch appears while the upload goes on, the newest line in view.
            await wait_for_row(page, batch * 5 + 5, f"step {batch * 5 + 5}")
        assert await page.text_content("#badge") == "IN_PROGRESS"
        await raw.finish()
    await page.wait_for_selector("#badge.COMPLETED", timeout=WAIT_MS)
    assert await visible_rows(page) == [(n, f"step {n}") for n in range(1, 31)]
    assert await page.is_hidden("#jump")


async def test_auto_scroll_stops_when_the_reader_scrolls_up_and_resumes_with_the_button(
    server: LivefileProcess, page: Any
) -> None:
    async with RawUpload(server.ws_url, **TEXT) as raw:
        await open_growing(page, server, raw, 200)
        await page.hover("#scroller")
        await page.mouse.wheel(0, -900)
        await page.wait_for_selector("#jump:visible", timeout=WAIT_MS)
        before = await visible_rows(page)
        assert before[-1][0] < 200

        await raw.write("".join(f"late {n}\n" for n in range(1, 31)).encode())
        await page.wait_for_selector(
            "#jump:has-text('Jump to the end (30 new lines)')", timeout=WAIT_MS
        )
        assert await visible_rows(page) == before  # the reader's place is kept

        await page.click("#jump")
        await wait_for_row(page, 230, "late 30")
        assert await page.is_hidden("#jump")
        await raw.write(b"after the jump\n")
        await wait_for_row(page, 231, "after the jump")  # following again
        await raw.finish()


async def test_scrolling_back_to_the_end_resumes_following(
    server: LivefileProcess, page: Any
) -> None:
    async with RawUpload(server.ws_url, **TEXT) as raw:
        await open_growing(page, server, raw, 100)
        await page.hover("#scroller")
        await page.mouse.wheel(0, -300)
        await page.wait_for_selector("#jump:visible", timeout=WAIT_MS)
        await page.mouse.wheel(0, 3000)
        await page.wait_for_selector("#jump", state="hidden", timeout=WAIT_MS)
        await raw.write(b"followed again\n")
        await wait_for_row(page, 101, "followed again")
        await raw.finish()


async def test_selecting_text_stops_auto_scroll(server: LivefileProcess, page: Any) -> None:
    async with RawUpload(server.ws_url, **TEXT) as raw:
        await open_growing(page, server, raw, 100)
        text = page.locator('.row[data-line="95"] .tx')
        box = await text.bounding_box()
        await page.mouse.move(box["x"] + 2, box["y"] + 5)
        await page.mouse.down()
        await page.mouse.move(box["x"] + 40, box["y"] + 5)
        await page.mouse.up()
        first_row = (await visible_rows(page))[0]
        await raw.write(b"while selecting\n")
        await page.wait_for_selector("#jump:has-text('(1 new line)')", timeout=WAIT_MS)
        assert await page.evaluate("getSelection().toString()") != ""
        assert (await visible_rows(page))[0] == first_row  # the view stays still
        await raw.finish()


async def test_a_linked_line_of_a_growing_log_stays_in_view_as_lines_come(
    server: LivefileProcess, page: Any
) -> None:
    async with RawUpload(server.ws_url, **TEXT) as raw:
        await raw.write("".join(f"row {n}\n" for n in range(1, 301)).encode())
        await page.goto(f"{server.http_url}/view/{raw.resource_id}#L120")
        await wait_for_row(page, 120, "row 120")
        assert await page.get_attribute('.row[data-line="120"]', "class") == "row highlight"
        await raw.write(b"one more\n")
        await page.wait_for_selector("#jump:has-text('(1 new line)')", timeout=WAIT_MS)
        assert await page.is_visible('.row[data-line="120"]')
        await raw.finish()


async def test_a_click_on_a_line_number_links_to_it_and_the_view_stays(
    server: LivefileProcess, page: Any
) -> None:
    resource = rid(
        await upload(server.ws_url, b"".join(b"row %d\n" % n for n in range(1, 101)), **TEXT)
    )
    await page.goto(f"{server.http_url}/view/{resource}")
    await wait_for_row(page, 100, "row 100")
    before = await visible_rows(page)
    await page.click('.row[data-line="95"] .ln')
    await page.wait_for_selector('.row[data-line="95"].highlight', timeout=WAIT_MS)
    assert page.url == f"{server.http_url}/view/{resource}#L95"
    assert await visible_rows(page) == before


async def test_a_million_line_resource_opens_at_a_linked_line_with_a_bounded_dom(
    server: LivefileProcess, page: Any, million: str
) -> None:
    await page.goto(f"{server.http_url}/view/{million}#L500000")
    await wait_for_row(page, 500_000, "line 0500000 of the big log")
    assert await page.get_attribute('.row[data-line="500000"]', "class") == "row highlight"
    assert await page.text_content("#facts") == "26.7 MiB · 1,000,000 lines · text/plain"
    assert len(await visible_rows(page)) <= MAX_ROWS
    # Scrolling far keeps the same few rows.
    await page.hover("#scroller")
    for _ in range(5):
        await page.mouse.wheel(0, 20_000)
    await page.keyboard.press("End")
    await wait_for_row(page, MILLION, f"line {MILLION:07d} of the big log")
    assert len(await visible_rows(page)) <= MAX_ROWS
    elements = await page.evaluate("document.getElementsByTagName('*').length")
    assert elements < 4 * MAX_ROWS + 60


async def test_search_finds_a_line_far_outside_the_loaded_range(
    server: LivefileProcess, page: Any, million: str
) -> None:
    await page.goto(f"{server.http_url}/view/{million}#L1")
    await wait_for_row(page, 1, "line 0000001 of the big log")
    await page.fill("#query", "NEEDLE-in")
    await page.press("#query", "Enter")
    await wait_for_row(page, NEEDLE_LINE, f"line {NEEDLE_LINE:07d} holds the needle-in-a-haystack")
    assert await page.text_content("#search-result") == "Match 1 of 1"
    assert await page.text_content(f'.row[data-line="{NEEDLE_LINE}"] mark') == "needle-in"
    assert page.url.endswith(f"#L{NEEDLE_LINE}")
    assert len(await visible_rows(page)) <= MAX_ROWS


async def test_ansi_colours_and_bold_appear_as_styles_and_carriage_returns_overwrite(
    server: LivefileProcess, page: Any
) -> None:
    text = (
        "\x1b[31mred\x1b[0m plain \x1b[1;32mbold green\x1b[0m\n"
        "\x1b[38;5;208morange\x1b[39m and \x1b[48;2;10;20;30mdeep\x1b[0m\n"
        "progress  10%\rprogress 100%\n"
        "\x1b]0;window title\x07\x1b[2K\x1b[1Gcleared\x1b[K\n"
        "\x1b[2;3;4mquiet\x1b[0m \x1b[33mnever reset\n"
        "a fresh line\n"
    )
    resource = rid(await upload(server.ws_url, text.encode(), **TEXT))
    await page.goto(f"{server.http_url}/view/{resource}")
    await wait_for_row(page, 6, "a fresh line")
    assert [row[1] for row in await visible_rows(page)] == [
        "red plain bold green",
        "orange and deep",
        "progress 100%",
        "cleared",
        "quiet never reset",
        "a fresh line",
    ]
    styles = await page.eval_on_selector_all(
        ".tx span",
        """spans => spans.map(s => [s.textContent, getComputedStyle(s).color,
            getComputedStyle(s).backgroundColor, getComputedStyle(s).fontWeight, s.className])""",
    )
    transparent = "rgba(0, 0, 0, 0)"
    assert styles == [
        ["red", "rgb(240, 82, 79)", transparent, "400", "f1"],
        ["bold green", "rgb(92, 150, 44)", transparent, "700", "f2 bold"],
        ["orange", "rgb(255, 135, 0)", transparent, "400", ""],
        ["deep", "rgb(214, 214, 214)", "rgb(10, 20, 30)", "400", ""],
        ["quiet", "rgb(214, 214, 214)", transparent, "400", "dim italic underline"],
        ["never reset", "rgb(198, 144, 38)", transparent, "400", "f3"],
    ]  # and the next line starts without a style


async def test_a_very_long_line_is_cut_in_the_view(server: LivefileProcess, page: Any) -> None:
    resource = rid(await upload(server.ws_url, b"short\n" + b"x" * 25_000 + b"\n", **TEXT))
    await page.goto(f"{server.http_url}/view/{resource}")
    await wait_for_row(page, 2, "x" * 10_000 + " … 15,000 more characters")


async def test_a_failed_upload_shows_its_reason(server: LivefileProcess, page: Any) -> None:
    async with RawUpload(server.ws_url, filename="crash.log", **TEXT) as raw:
        await raw.write(b"starting\nworking\n")
        await page.goto(f"{server.http_url}/view/{raw.resource_id}")
        await wait_for_row(page, 2, "working")
        await raw.drop()
    await page.wait_for_selector("#badge.FAILED", timeout=WAIT_MS)
    _, info = get_json(f"{server.http_url}/resources/{raw.resource_id}")
    error = info["status"]["error"]
    problem = await page.text_content("#problem")
    assert problem == (
        f"This resource FAILED: {error['message']} ({error['code']}). "
        "The 17 bytes received before the failure are kept."
    )
    assert await page.is_visible("#problem")
    href = await page.get_attribute("#download", "href")
    assert href == f"/resources/{raw.resource_id}/content?partial=true"
    assert [row[1] for row in await visible_rows(page)] == ["starting", "working"]


def tiny_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    pixels = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


async def test_a_binary_image_shows_its_size_status_and_the_image(
    server: LivefileProcess, page: Any, tmp_path: Path
) -> None:
    png = tiny_png(40, 30)
    async with RawUpload(server.ws_url, filename="chart.png", mime_type="image/png") as raw:
        await raw.write(png[:50])
        await page.goto(f"{server.http_url}/view/{raw.resource_id}")
        await page.wait_for_selector("#image-note:visible", timeout=WAIT_MS)
        assert await page.text_content("#progress-text") == "50 bytes so far"
        await raw.write(png[50:])
        await raw.finish()
    await page.wait_for_selector("#badge.COMPLETED", timeout=WAIT_MS)
    await page.wait_for_function(
        "() => document.querySelector('#image').naturalWidth === 40", timeout=WAIT_MS
    )
    assert await page.text_content("#facts") == f"{len(png)} bytes · image/png"
    assert await page.get_attribute("#download", "href") == (
        f"/resources/{raw.resource_id}/content"
    )
    assert await page.is_hidden("#text-view")


async def test_the_context_page_lists_resources_as_they_appear(
    server: LivefileProcess, page: Any
) -> None:
    _, opened = get_json(f"{server.http_url}/contexts", method="POST")
    context = opened["contextId"]
    await page.goto(f"{server.http_url}/view/contexts/{context}")
    await page.wait_for_selector("#badge:has-text('OPEN')", timeout=WAIT_MS)
    await upload(server.ws_url, b"elsewhere\n", **TEXT)  # in no context: not listed
    async with RawUpload(server.ws_url, filename="report.log", context_id=context, **TEXT) as raw:
        await raw.write(b"one\ntwo\n")
        await raw.finish()
    row = page.locator(f'tr[data-resource="{raw.resource_id}"]')
    await row.locator(".badge.COMPLETED").wait_for(timeout=WAIT_MS)
    assert await page.locator("tbody tr").count() == 1
    assert await row.locator("td").all_inner_texts() == [
        "report.log", "text/plain", "COMPLETED", "8 bytes", "2",
    ]  # fmt: skip
    await row.locator("a").click()
    await wait_for_row(page, 2, "two")
    assert page.url == f"{server.http_url}/view/{raw.resource_id}"


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


async def test_a_derived_resource_shows_its_stage_while_it_is_made(
    server: LivefileProcess, page: Any
) -> None:
    archive = tar_gz({f"src/file{n}.txt": os.urandom(10_000).hex().encode() for n in range(20)})
    async with RawUpload(server.ws_url, filename="src.tar.gz", options={"repack": True}) as raw:
        (derived,) = raw.ready["derived"]
        await page.goto(f"{server.http_url}/view/{derived['id']}")
        # Its source has no bytes yet: the ZIP waits for them.
        await page.wait_for_selector("#badge:has-text('IN_PROGRESS · waiting')", timeout=WAIT_MS)
        await raw.write(archive[: len(archive) // 2])
        # Half of it is there: the ZIP is being made, and the badge says how far.
        await page.wait_for_function(
            "re => new RegExp(re).test(document.querySelector('#badge').textContent)",
            arg=r"^IN_PROGRESS · repacking \d+%$",
            timeout=WAIT_MS,
        )
        await raw.write(archive[len(archive) // 2 :])
        await raw.finish()
    await page.wait_for_selector("#badge.COMPLETED", timeout=WAIT_MS)
    assert await page.text_content("#badge") == "COMPLETED"
    facts = await page.text_content("#facts")
    assert facts.endswith(f" · application/zip · repack of {raw.resource_id}")
    assert await page.get_attribute("#progress", "value") == "1"
