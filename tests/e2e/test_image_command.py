"""``livefile image RESOURCE`` run as a real process against a real server: the WebP's reference
printed at once, as ``livefile repack`` prints its ZIP's; the same refusals and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
from PIL import Image

from livefile.api.model import TransferStatus
from livefile.client_download import DownloadClient
from livefile.client_upload import UploadClient
from tests.conftest import ServerFactory
from tests.e2e.test_images import jpeg_turned_by_exif, library_blurhash
from tests.e2e.test_repack import tar_gz
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0
CLI = [sys.executable, "-m", "livefile.impl_common.cli"]
SECRET = "livefile-image-cli-secret-of-32-bytes!"


def livefile(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEFILE_TOKEN", "LIVEFILE_SERVER")}
    if token is not None:
        env["LIVEFILE_TOKEN"] = token  # as the README advises: not on the command line
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=WAIT, env=env)


def uploaded_photo(server: LivefileProcess, token: str | None = None) -> tuple[str, str]:
    """A JPEG (60x40 stored, shown 40x60) uploaded whole: its reference and id."""
    with UploadClient(server.ws_url, timeout=WAIT, token=token) as client:
        result = client.upload_bytes(jpeg_turned_by_exif(), filename="photo.jpg")
    return result.reference, result.resource_id


def test_livefile_image_prints_the_webp_reference_for_a_reference_or_an_id(
    server: LivefileProcess, tmp_path: Path
) -> None:
    reference, resource_id = uploaded_photo(server)
    by_reference = livefile("image", reference)
    by_id = livefile("image", resource_id, "--server", server.ws_url)
    for asked in (by_reference, by_id):
        assert asked.returncode == 0, asked.stderr
        assert asked.stderr == ""
        (webp_reference,) = asked.stdout.splitlines()  # the reference alone, as repack prints
        assert webp_reference.startswith(f"{server.ws_url}/ws/streaming/download/")
        out = tmp_path / "photo.webp"
        got = livefile("get", webp_reference, "-o", str(out))  # follows it to COMPLETED
        assert got.returncode == 0, got.stderr
        with Image.open(out) as image:
            assert (image.format, image.size) == ("WEBP", (40, 60))
        webp_id = webp_reference.rsplit("/", 1)[1]
        info = get_json(f"{server.http_url}/resources/{webp_id}")[1]
        assert (info["kind"], info["sources"]) == ("image", [resource_id])
        assert (info["metadata"]["width"], info["metadata"]["height"]) == (40, 60)
        assert info["metadata"]["blurhash"] == library_blurhash(jpeg_turned_by_exif())


def test_livefile_image_refuses_as_livefile_repack_does(server: LivefileProcess) -> None:
    for command in ("image", "repack"):
        unknown = livefile(command, "0" * 32, "--server", server.ws_url)
        assert unknown.returncode == 1, unknown.stderr
        assert unknown.stdout == ""
        assert unknown.stderr.startswith(
            f"livefile: {command} refused: ResourceNotFoundError: Unknown resource id"
        ), unknown.stderr
    bad_server = livefile("image", "0" * 32, "--server", "ftp://127.0.0.1")
    assert (bad_server.returncode, bad_server.stderr) == (
        2,
        "livefile: Unsupported server URL scheme: 'ftp'\n",
    )
    # What is not an image is known once it is read: the WebP ends FAILED, not the command.
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        archive = client.upload_bytes(tar_gz({"a.txt": b"a\n"}), filename="a.tar.gz")
    asked = livefile("image", archive.reference)
    assert asked.returncode == 0, asked.stderr
    with DownloadClient(asked.stdout.strip(), timeout=WAIT) as watcher:
        final = watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.FAILED
    assert final.error is not None
    assert final.error.code == "unsupported_format"


def test_with_access_control_the_token_must_upload_and_read(
    start_server: ServerFactory,
) -> None:
    server = start_server(env={"LIVEFILE_JWT_SECRET": SECRET})

    def mint(scope: str) -> str:
        now = int(time.time())
        claims = {"aud": "livefile", "iat": now, "exp": now + 600, "scope": scope}
        return jwt.encode(claims, SECRET, algorithm="HS256")

    reference, _ = uploaded_photo(server, token=mint("upload"))
    # The reference's own token reads that resource but cannot derive from it.
    alone = livefile("image", reference)
    assert alone.returncode == 1
    assert alone.stderr == (
        "livefile: image refused: AuthorizationError: Forbidden: token scope does not include"
        " upload\n"
    )
    for command in ("image", "repack"):
        # The command's token goes first, even with a reference that carries its own.
        admitted = livefile(command, reference, token=mint("upload download"))
        assert admitted.returncode == 0, admitted.stderr
        assert admitted.stdout.startswith(f"{server.ws_url}/ws/streaming/download/")
        assert "?token=" in admitted.stdout  # a reference that can be handed on as it is


def test_a_live_upload_asks_for_its_webp_too(server: LivefileProcess, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_turned_by_exif())
    args = ("upload", str(path), "--live", "--idle-timeout", "0.3", "--image")
    uploaded = livefile(*args, "--server", server.ws_url)
    assert uploaded.returncode == 0, uploaded.stderr
    _reference, webp_reference, result = uploaded.stdout.splitlines()
    assert json.loads(result)["derived"][0]["reference"]["uri"] == webp_reference
    with DownloadClient(webp_reference, timeout=WAIT) as watcher:
        assert watcher.wait_for_end(WAIT).transfer_status is TransferStatus.COMPLETED
