"""The viewer's files as the server sends them: shipped in the server's wheel, served from a
fixed list with headers that keep the page to itself, and open without a token (they hold no
data) while every route for data stays closed."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

from livefile.impl_websocket.viewer import ASSET_NAMES
from tests.conftest import ServerFactory
from tests.e2e.test_access_control import SECRET_ENV, http
from tests.support.server import LivefileProcess
from tests.test_client_wheels import ROOT, uv

PAGES = ("resource.html", "context.html")
STATIC = ROOT / "impl_websocket" / "livefile" / "impl_websocket" / "static" / "viewer"


def test_the_server_wheel_ships_every_file_of_the_pages(tmp_path: Path) -> None:
    subprocess.run(
        [uv(), "build", "--package", "livefile-impl-websocket", "--wheel", "-o", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*PAGES, *ASSET_NAMES):
        assert f"livefile/impl_websocket/static/viewer/{name}" in names


def test_the_pages_use_only_the_listed_files_of_their_own_origin() -> None:
    used: set[str] = set()
    for name in (*PAGES, *ASSET_NAMES):
        text = (STATIC / name).read_text()
        used |= set(re.findall(r'(?:src|href)="/view/static/([^"]+)"', text))
        used |= set(re.findall(r'from "\./([^"]+)"', text))
        assert "http://" not in text
        assert "https://" not in text
    assert used <= set(ASSET_NAMES)
    assert sorted(p.name for p in STATIC.iterdir()) == sorted((*PAGES, *ASSET_NAMES))


def test_pages_and_files_are_served_with_headers_that_keep_the_page_to_itself(
    server: LivefileProcess,
) -> None:
    status, headers, body = http(f"{server.http_url}/view/{'0' * 32}")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"].startswith("default-src 'self';")
    assert headers["referrer-policy"] == "no-referrer"
    assert body == (STATIC / "resource.html").read_bytes()
    status, headers, _ = http(f"{server.http_url}/view/contexts/{'0' * 32}")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    status, headers, _ = http(f"{server.http_url}/view/static/log_view.js")
    assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")


def test_a_file_not_on_the_list_is_not_found(server: LivefileProcess) -> None:
    for path in ("resource.html", "..%2fapp.py", "%2e%2e%2f%2e%2e%2fviewer.py", "viewer.css.bak"):
        assert http(f"{server.http_url}/view/static/{path}")[0] == 404, path


def test_with_access_control_the_pages_open_and_the_data_stays_closed(
    start_server: ServerFactory,
) -> None:
    guarded = start_server(env=SECRET_ENV)
    assert http(f"{guarded.http_url}/view/{'0' * 32}")[0] == 200
    assert http(f"{guarded.http_url}/view/static/resource.js")[0] == 200
    for path in (f"/resources/{'0' * 32}", f"/resources/{'0' * 32}/search?q=x"):
        assert http(f"{guarded.http_url}{path}")[0] == 401, path
