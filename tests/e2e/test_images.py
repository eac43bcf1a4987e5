"""Images normalized to WebP by a real server: a derived resource whose metadata carries the
image's width, height and BlurHash, started by the upload SDK, the CLI or ``POST
/resources/{id}/image``; refusals with their codes; ``POST /blurhashes`` and its caches, shared
through Redis. Every test image is made here with Pillow, small.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import blurhash  # type: ignore[import-untyped]
import jwt
from PIL import Image, ImageCms, ImageOps

from livefile.api.messages import DerivedReference
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.e2e.test_repack import follow_to_end
from tests.support.metrics import scrape
from tests.support.raw_upload import RawUpload, upload
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0
BLUE, RED = (0, 0, 255), (255, 0, 0)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- test images ---------------------------------------------------------------------------


def encoded(image: Image.Image, format: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def jpeg_turned_by_exif() -> bytes:
    """60x40 as stored, left half blue, right half red; EXIF orientation 6 (turn it a quarter
    clockwise to show it), a GPS position, and an ICC profile."""
    image = Image.new("RGB", (60, 40), RED)
    image.paste(BLUE, (0, 0, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}  # GPSInfo: latitude
    return encoded(image, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=SRGB_ICC)


def png_half_transparent() -> bytes:
    image = Image.new("RGBA", (30, 20), (0, 128, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 15, 20))
    return encoded(image, "PNG")


def animated_gif(frames: int = 5) -> bytes:
    images = [Image.new("RGB", (20, 16), (i * 50, 0, 255 - i * 50)) for i in range(frames)]
    return encoded(
        images[0],
        "GIF",
        save_all=True,
        append_images=images[1:],
        duration=[100, 200, 100, 50, 70][:frames],
        loop=0,
    )


def cmyk_jpeg() -> bytes:
    return encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with a few bytes of data:
    a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    noise = Image.frombytes("RGB", (120, 120), bytes(range(256)) * 168 + bytes(192))
    whole = encoded(noise, "JPEG", quality=90)
    return whole[: len(whole) * 6 // 10]


def rows_of(image: Image.Image) -> list[list[Any]]:
    """The pixels as blurhash's encoder takes them: rows of RGB triples."""
    width, height = image.size
    pixels = image.get_flattened_data()
    return [list(pixels[row * width : (row + 1) * width]) for row in range(height)]


def library_blurhash(source: bytes) -> str:
    """blurhash's own hash of the thumbnail the docs describe: decoded at reduced scale
    (draft), EXIF orientation applied, transparency over white, at most 64x64 (LANCZOS), 4x3
    components."""
    with Image.open(io.BytesIO(source)) as image:
        image.draft("RGB", (64, 64))
        shown = ImageOps.exif_transpose(image).convert("RGBA")
    white = Image.new("RGBA", shown.size, (255, 255, 255, 255))
    shown = Image.alpha_composite(white, shown).convert("RGB")
    shown.thumbnail((64, 64), Image.Resampling.LANCZOS)
    return str(blurhash.encode(rows_of(shown), components_x=4, components_y=3))


# --- helpers -------------------------------------------------------------------------------


def post_json(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def upload_image(server: LivefileProcess, data: bytes, filename: str) -> str:
    """Upload ``data``; its id."""
    reference = await upload(server.ws_url, data, filename=filename)
    return reference.rsplit("/", 1)[1]


def start_image(server: LivefileProcess, source_id: str) -> dict[str, Any]:
    code, started = get_json(f"{server.http_url}/resources/{source_id}/image", method="POST")
    assert code == 202, started
    assert (started["kind"], started["source"]) == ("image", source_id)
    return dict(started)


def assert_stages_move_forward(seen: list[ResourceStatus]) -> None:
    revisions = [status.revision or 0 for status in seen]
    assert revisions == sorted(revisions)
    stages = [status.stage for status in seen if status.stage is not None]
    assert stages == sorted(stages, key=["waiting", "converting"].index)


async def converted(server: LivefileProcess, data: bytes, filename: str) -> tuple[Image.Image, Any]:
    """``data`` uploaded and converted on request: the WebP, decoded, and its description."""
    started = start_image(server, await upload_image(server, data, filename))
    webp, seen = await follow_to_end(started["reference"]["uri"])
    assert seen[-1].transfer_status is TransferStatus.COMPLETED, seen[-1]
    assert_stages_move_forward(seen)
    info = get_json(f"{server.http_url}/resources/{started['id']}")[1]
    image = Image.open(io.BytesIO(webp))
    assert image.format == "WEBP"
    assert (info["metadata"]["width"], info["metadata"]["height"]) == image.size
    return image, info


async def refused(server: LivefileProcess, data: bytes, filename: str) -> dict[str, Any]:
    """``data`` uploaded and converted on request: the FAILED status's error."""
    source_id = await upload_image(server, data, filename)
    started = start_image(server, source_id)
    async with AsyncDownloadClient(started["reference"]["uri"], timeout=WAIT) as watcher:
        final = await watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.FAILED
    assert final.error is not None
    source = get_json(f"{server.http_url}/resources/{source_id}")[1]
    assert source["status"]["transferStatus"] == "COMPLETED"  # the source is untouched
    return final.error.to_wire()


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def frames(image: Image.Image) -> int:
    return int(getattr(image, "n_frames", 1))


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# --- conversions ---------------------------------------------------------------------------


async def test_an_upload_asking_image_gets_a_webp_turned_by_its_exif_orientation(
    server: LivefileProcess,
) -> None:
    source = jpeg_turned_by_exif()
    announced: list[DerivedReference] = []
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_bytes(
            source, filename="photo.jpg", mime_type="image/jpeg", image=True,
            on_derived=announced.append,
        )  # fmt: skip
    assert [d.kind for d in announced] == ["image"]
    assert result.derived == tuple(announced)
    webp, seen = await follow_to_end(announced[0].reference.uri)
    assert seen[-1].transfer_status is TransferStatus.COMPLETED
    assert_stages_move_forward(seen)
    image = Image.open(io.BytesIO(webp))
    assert (image.format, image.size) == ("WEBP", (40, 60))  # 60x40 turned a quarter
    shown = image.convert("RGB")
    assert close(pixel(shown, (20, 10)), BLUE)  # the stored left half is now on top
    assert close(pixel(shown, (20, 50)), RED)
    assert image.info.get("icc_profile") == SRGB_ICC  # the colour profile is kept
    assert "exif" not in image.info
    assert not image.getexif()
    info = get_json(f"{server.http_url}/resources/{announced[0].id}")[1]
    assert info["kind"] == "image"
    assert info["sources"] == [result.resource_id]
    assert info["metadata"] == {
        "filename": "photo.webp",
        "mimeType": "image/webp",
        "supportsLineAccess": False,
        "width": 40,
        "height": 60,
        "blurhash": library_blurhash(source),
    }
    listed = get_json(f"{server.http_url}/resources/{result.resource_id}")[1]
    assert listed["derived"] == [{"id": announced[0].id, "kind": "image"}]
    assert "width" not in listed["metadata"]  # the source itself is not described


async def test_a_png_keeps_its_transparency(server: LivefileProcess) -> None:
    image, info = await converted(server, png_half_transparent(), "logo.png")
    assert image.mode == "RGBA"
    assert image.size == (30, 20)
    assert pixel(image, (5, 10))[3] == 0
    assert pixel(image, (25, 10))[3] == 255
    assert close(pixel(image, (25, 10))[:3], (0, 128, 0))
    assert info["metadata"]["blurhash"] == library_blurhash(png_half_transparent())


async def test_an_animated_gif_stays_animated(server: LivefileProcess) -> None:
    image, info = await converted(server, animated_gif(), "spinner.gif")
    assert getattr(image, "is_animated", False)
    assert frames(image) == 5
    first = pixel(image.convert("RGB"), (5, 5))
    image.seek(4)
    last = pixel(image.convert("RGB"), (5, 5))
    assert close(first, (0, 0, 255))
    durations = []
    for index in range(frames(image)):
        image.seek(index)
        image.load()  # WebP says a frame's duration once it is loaded
        durations.append(image.info["duration"])
    assert durations == [100, 200, 100, 50, 70]
    assert image.info["loop"] == 0
    assert close(last, (200, 0, 55))
    assert info["metadata"]["filename"] == "spinner.webp"


async def test_a_cmyk_jpeg_becomes_rgb(server: LivefileProcess) -> None:
    image, _ = await converted(server, cmyk_jpeg(), "print.jpg")
    assert image.mode == "RGB"
    assert close(pixel(image, (16, 16)), RED, tolerance=60)


# --- refusals ------------------------------------------------------------------------------


async def test_a_png_declaring_200_megapixels_is_refused_as_too_large(
    server: LivefileProcess,
) -> None:
    bomb = png_declaring(14_143, 14_143)
    assert len(bomb) < 1024
    error = await refused(server, bomb, "bomb.png")
    assert error["code"] == "image_too_large", error


async def test_a_truncated_jpeg_is_an_invalid_image(server: LivefileProcess) -> None:
    error = await refused(server, truncated_jpeg(), "cut.jpg")
    assert error["code"] == "invalid_image", error


async def test_a_text_file_is_an_unsupported_format(server: LivefileProcess) -> None:
    error = await refused(server, b"just some text\n" * 10, "notes.jpg")
    assert error["code"] == "unsupported_format", error


async def test_limits_are_settings_and_descriptions_survive_a_restart(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    # 5 frames of 20x16 are 1,600 pixels, 3 are 960.
    flags = ("--image-max-animation-pixels", "1000", "--image-max-size", "2000")
    server = start_server(*flags, data_dir=tmp_path / "data")
    error = await refused(server, animated_gif(5), "long.gif")
    assert error["code"] == "image_too_large", error
    assert "animation" in error["message"], error
    short, info = await converted(server, animated_gif(3), "short.gif")
    assert frames(short) == 3
    big = encoded(Image.frombytes("L", (100, 100), random.Random(1).randbytes(10_000)), "PNG")
    assert len(big) > 2000
    error = await refused(server, big, "big.png")
    assert error["code"] == "image_too_large", error
    assert "bytes" in error["message"], error
    # An image growing past the size limit is refused before it has even ended.
    async with RawUpload(server.ws_url, filename="huge.png", options={"image": True}) as raw:
        (derived,) = raw.ready["derived"]
        await raw.write(big)
        async with AsyncDownloadClient(derived["reference"]["uri"], timeout=WAIT) as watcher:
            final = await watcher.wait_for_end(WAIT)
        assert final.error is not None
        assert final.error.code == "image_too_large"
        source = get_json(f"{server.http_url}/resources/{raw.resource_id}")[1]
        assert source["status"]["transferStatus"] == "IN_PROGRESS"
        await raw.finish()
    # The description is in the catalog and the record beside the bytes: a restart keeps it.
    server.stop()
    server.start()
    after = get_json(f"{server.http_url}/resources/{info['id']}")[1]["metadata"]
    assert after == info["metadata"]
    assert after["width"] == 20
    assert after["blurhash"]


async def test_the_webp_waits_for_its_whole_image(server: LivefileProcess) -> None:
    photo = jpeg_turned_by_exif()
    async with RawUpload(server.ws_url, filename="a.jpg", options={"image": True}) as raw:
        (derived,) = raw.ready["derived"]
        async with AsyncDownloadClient(derived["reference"]["uri"], timeout=WAIT) as watcher:
            await raw.write(photo[:-10])
            await watcher.wait_for_status(lambda s: s.stage == "waiting", WAIT)
            await asyncio.sleep(0.5)  # a chance to start too early, which it must not take
            assert watcher.status.stage == "waiting"
            assert not watcher.status.is_terminal
            await raw.write(photo[-10:])
            await raw.finish()
            final = await watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.COMPLETED


async def test_a_source_that_fails_fails_its_webp(server: LivefileProcess) -> None:
    async with RawUpload(server.ws_url, filename="a.jpg", options={"image": True}) as raw:
        (derived,) = raw.ready["derived"]
        await raw.write(jpeg_turned_by_exif()[:100])
        code, answer = post_json(f"{server.http_url}/blurhashes", {"resources": [raw.resource_id]})
        assert code == 200
        assert answer["results"][0]["error"]["code"] == "not_completed"
    # The uploader went away without FinishUpload: the image is FAILED, and so is its WebP.
    async with AsyncDownloadClient(derived["reference"]["uri"], timeout=WAIT) as watcher:
        final = await watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.FAILED
    assert final.error is not None
    assert final.error.code == "source_failed"


async def test_an_uploader_cannot_set_the_description(server: LivefileProcess) -> None:
    metadata = {"filename": "a.jpg", "mimeType": "image/jpeg", "width": 9, "blurhash": "L00000"}
    async with RawUpload(server.ws_url, options={"metadata": metadata}) as raw:
        await raw.write(b"x")
        await raw.finish()
    info = get_json(f"{server.http_url}/resources/{raw.resource_id}")[1]
    assert info["metadata"] == {
        "filename": "a.jpg",
        "mimeType": "image/jpeg",
        "supportsLineAccess": False,
    }


# --- POST /blurhashes ----------------------------------------------------------------------


async def test_blurhashes_come_from_the_image_its_derived_webp_or_the_cache(
    server: LivefileProcess,
) -> None:
    photo, png = jpeg_turned_by_exif(), png_half_transparent()
    converted_id = await upload_image(server, photo, "photo.jpg")
    started = start_image(server, converted_id)
    await follow_to_end(started["reference"]["uri"])
    plain_id = await upload_image(server, png, "plain.png")
    text_id = await upload_image(server, b"hello\n", "hello.txt")
    before = scrape(server.http_url)
    url = f"{server.http_url}/blurhashes"
    ids = [converted_id, started["id"], plain_id, text_id, "0" * 32]
    code, answer = post_json(url, {"resources": ids})
    assert code == 200, answer
    results = answer["results"]
    assert [r["id"] for r in results] == ids
    described = {"blurhash": library_blurhash(photo), "width": 40, "height": 60}
    assert {k: results[0][k] for k in described} == described
    assert {k: results[1][k] for k in described} == described
    assert (results[2]["blurhash"], results[2]["width"], results[2]["height"]) == (
        library_blurhash(png), 30, 20,
    )  # fmt: skip
    assert results[3]["error"]["code"] == "unsupported_format"
    assert results[4]["error"]["code"] == "not_found"
    again = post_json(url, {"resources": [plain_id]})[1]["results"][0]
    assert again["blurhash"] == results[2]["blurhash"]
    after = scrape(server.http_url)

    def added(found: str) -> float:
        series = f'livefile_blurhash_lookups_total{{found="{found}"}}'
        return after[series] - before[series]

    assert (added("described"), added("computed"), added("memory")) == (2, 1, 1)
    assert post_json(url, {"resources": []})[0] == 422
    assert post_json(url, {"resources": ["0" * 32] * 101})[0] == 422


async def test_a_blurhash_computed_by_one_worker_is_found_by_another_through_redis(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    shared = ("--redis-url", redis_server.url, "--lease-seconds", "3")
    first = start_server(*shared, data_dir=tmp_path / "shared")
    second = start_server(*shared, data_dir=tmp_path / "shared")
    png = png_half_transparent()
    source_id = await upload_image(first, png, "plain.png")
    body = {"resources": [source_id]}
    computed = post_json(f"{first.http_url}/blurhashes", body)[1]["results"][0]
    found = post_json(f"{second.http_url}/blurhashes", body)[1]["results"][0]
    assert found == computed
    assert computed["blurhash"] == library_blurhash(png)
    assert scrape(first.http_url)['livefile_blurhash_lookups_total{found="computed"}'] == 1
    metrics = scrape(second.http_url)
    assert metrics['livefile_blurhash_lookups_total{found="redis"}'] == 1
    assert metrics['livefile_blurhash_lookups_total{found="computed"}'] == 0
    # A conversion on one worker is described in the shared catalog for the other.
    started = start_image(first, source_id)
    await follow_to_end(started["reference"]["uri"])
    info = get_json(f"{second.http_url}/resources/{started['id']}")[1]
    assert (info["metadata"]["width"], info["metadata"]["height"]) == (30, 20)
    assert info["metadata"]["blurhash"] == computed["blurhash"]


async def test_access_to_images_and_blurhashes_is_that_of_their_sources(
    start_server: ServerFactory,
) -> None:
    secret = "livefile-images-secret-of-32-bytes!"
    server = start_server(env={"LIVEFILE_JWT_SECRET": secret})

    def token(scope: str, resource: str | None = None) -> str:
        now = int(time.time())
        claims = {"aud": "livefile", "iat": now, "exp": now + 300, "scope": scope}
        return jwt.encode(claims | ({"resource": resource} if resource else {}), secret)

    def post(path: str, bearer: str, body: Any = None) -> int:
        request = urllib.request.Request(
            f"{server.http_url}{path}",
            data=json.dumps(body).encode() if body is not None else b"",
            method="POST",
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    admin = token("admin")
    async with AsyncUploadClient(server.ws_url, timeout=WAIT, token=admin) as client:
        mine = (await client.upload_bytes(png_half_transparent(), filename="a.png")).resource_id
        other = (await client.upload_bytes(png_half_transparent(), filename="b.png")).resource_id
    reader = token("download", mine)
    assert post(f"/resources/{mine}/image", reader) == 403  # reading is not deriving
    assert post(f"/resources/{mine}/image", token("upload download", mine)) == 202
    assert post(f"/resources/{other}/image", token("upload download", mine)) == 403
    assert post("/blurhashes", reader, {"resources": [mine]}) == 200
    assert post("/blurhashes", reader, {"resources": [mine, other]}) == 403
    assert post("/blurhashes", token("upload"), {"resources": [mine]}) == 403


def test_livefile_upload_image_prints_the_webp_reference(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_turned_by_exif())
    cli = [sys.executable, "-m", "livefile.impl_common.cli"]
    uploaded = subprocess.run(
        [*cli, "upload", str(path), "--image", "--server", server.ws_url],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    _reference, derived, result = uploaded.stdout.splitlines()
    assert json.loads(result)["derived"][0]["kind"] == "image"
    assert json.loads(result)["derived"][0]["reference"]["uri"] == derived
    out = tmp_path / "photo.webp"
    got = subprocess.run([*cli, "get", derived, "-o", str(out)], capture_output=True, timeout=WAIT)
    assert got.returncode == 0, got.stderr
    assert Image.open(out).size == (40, 60)
