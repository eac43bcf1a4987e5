"""The image conversion on its own (``images/convert.py``): what its refusals and modes do for
inputs that need no server to show it. The derived resource itself is tested end to end in
``tests/e2e/test_images.py``."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from livefile.impl_server.images import ImageError, ImageLimits, WebpOptions, to_webp

OPTIONS = WebpOptions()


def saved(tmp_path: Path, image: Image.Image, name: str, **options: Any) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("name", ["icon.ico", "old.tga", "scan.pcx", "raw.ppm"])
def test_formats_pillow_reads_outside_the_allow_list_are_unsupported(
    tmp_path: Path, name: str
) -> None:
    path = saved(tmp_path, Image.new("RGB", (16, 16), (9, 9, 9)), name)
    with pytest.raises(ImageError) as refused:
        to_webp(path, ImageLimits(), OPTIONS)
    assert refused.value.code == "unsupported_format"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, expected
def test_images_pillow_would_only_warn_about_are_refused_whatever_the_limit_here(
    tmp_path: Path,
) -> None:
    # 100 megapixels: above Image.MAX_IMAGE_PIXELS, where Pillow only warns.
    path = png_declaring(tmp_path / "warned.png", 10_000, 10_000)
    with pytest.raises(ImageError) as refused:
        to_webp(path, ImageLimits(max_pixels=10**12), OPTIONS)
    assert refused.value.code == "image_too_large"


def test_the_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    path = png_declaring(tmp_path / "big.png", 9_000, 8_000)  # 72 MP, no pixel data at all
    with pytest.raises(ImageError) as refused:
        to_webp(path, ImageLimits(), OPTIONS)
    assert refused.value.code == "image_too_large"
    assert "72000000 pixels" in refused.value.message


def test_a_multi_page_tiff_keeps_its_first_page_as_a_still_image(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    path = saved(tmp_path, pages[0], "pages.tif", save_all=True, append_images=pages[1:])
    converted = to_webp(path, ImageLimits(), OPTIONS)
    webp = Image.open(io.BytesIO(converted.webp))
    assert converted.frames == 1
    assert not getattr(webp, "is_animated", False)
    red = webp.convert("RGB").getpixel((5, 5))
    assert isinstance(red, tuple)
    assert red[0] > 200
    assert red[1] < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey = Image.new("I;16", (16, 16), 32_768)  # half of 65,535: mid grey, not white
    path = saved(tmp_path, grey, "deep.png")
    webp = Image.open(io.BytesIO(to_webp(path, ImageLimits(), OPTIONS).webp))
    value = webp.convert("L").getpixel((8, 8))
    assert isinstance(value, int)
    assert 110 <= value <= 145


def test_an_mpo_keeps_its_first_picture(tmp_path: Path) -> None:
    pictures = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    path = saved(tmp_path, pictures[0], "camera.mpo", save_all=True, append_images=pictures[1:])
    assert Image.open(path).format == "MPO"
    converted = to_webp(path, ImageLimits(), OPTIONS)
    assert converted.frames == 1
    red = Image.open(io.BytesIO(converted.webp)).convert("RGB").getpixel((5, 5))
    assert isinstance(red, tuple)
    assert red[0] > 200


def test_the_same_image_gives_the_same_webp(tmp_path: Path) -> None:
    # A job run again from scratch (its worker died) must produce what it produced before.
    noise = Image.effect_noise((64, 48), 40).convert("RGB")
    path = saved(tmp_path, noise, "noise.jpg", quality=90)
    first, again = (to_webp(path, ImageLimits(), OPTIONS) for _ in range(2))
    assert first.webp == again.webp
    assert first.summary == again.summary
