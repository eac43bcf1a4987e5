"""An image file normalized to WebP, and summarized by its size and BlurHash: blocking, pure
functions of a file (the image producer runs them in a worker thread).

What comes out: the image as the viewer should see it — EXIF orientation applied, CMYK turned
into RGB (through its ICC profile when it has one), alpha kept — encoded as WebP at the given
quality and method, with the ICC profile kept (``keep_icc``) and every other piece of metadata
(EXIF with its GPS position, XMP, comments) dropped. Animated GIF, PNG (APNG) and WebP stay
animated, frame durations and loop count kept; the extra frames of a multi-page TIFF or an MPO
(the JPEG variant cameras write, whose second picture is another rendering) are not animation:
only the first is kept.

Safety, each an ``ImageError`` with a ``code``, checked from the header before anything is
decoded: a file larger than ``max_bytes``, a format outside ``ALLOWED_FORMATS``
(``unsupported_format``: Pillow also reads AVIF, ICO, PSD, TGA, PCX, PPM, JPEG 2000, EPS and
more — all refused here), more than ``max_pixels`` pixels or more than ``max_animation_pixels``
pixels in all frames together (``image_too_large``); a file that does not decode
(``invalid_image``). Pillow's own decompression-bomb limit only warns between one and two times
``Image.MAX_IMAGE_PIXELS`` (and warnings are whatever the process's filters make of them): the
pixel limit here is never more than ``Image.MAX_IMAGE_PIXELS``, so an image Pillow would only
warn about is refused here as an error. Nothing global is changed: neither Pillow's limit nor the
warning filters (``warnings.catch_warnings`` would race between threads).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import blurhash  # type: ignore[import-untyped]
from PIL import Image, ImageCms, ImageOps, ImageSequence, UnidentifiedImageError

from livefile.impl_server.jobs import JobFailure

ImageErrorCode = Literal["unsupported_format", "image_too_large", "invalid_image"]

# Pillow's format names; MPO is how Pillow names many cameras' JPEGs.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
# Formats whose extra frames are no animation: TIFF's are pages, MPO's other renderings.
_STILL_FORMATS = frozenset({"TIFF", "MPO"})
# A BlurHash is computed from a thumbnail at most this many pixels wide and high: the hash has
# a handful of components, and a bigger thumbnail only costs time (the pure-Python encoder).
BLURHASH_SIZE = 64
_ORIENTATION_TAG = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # orientations that turn the picture a quarter
_WHITE = (255, 255, 255, 255)
# The most pixels Pillow opens without a warning: the highest pixel limit there can be here.
PILLOW_PIXEL_LIMIT = Image.MAX_IMAGE_PIXELS or 0


class ImageError(JobFailure):
    """The image was refused or could not be read; ``code`` names why, for the status."""

    def __init__(self, code: ImageErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code: ImageErrorCode = code


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 256 * 1024**2  # the image file
    max_pixels: int = 64_000_000  # width x height (after no decoding: from the header)
    max_animation_pixels: int = 1_000_000_000  # width x height x frames


@dataclass(frozen=True)
class WebpOptions:
    quality: int = 80  # 0-100, lossy
    method: int = 4  # 0 (fast) to 6 (smallest)
    keep_icc: bool = True  # the colour profile; every other piece of metadata is dropped
    components_x: int = 4  # the BlurHash's components, 1-9 each
    components_y: int = 3


@dataclass(frozen=True)
class ImageSummary:
    """What the image looks like: its size as shown (orientation applied) and its BlurHash."""

    width: int
    height: int
    blurhash: str


@dataclass(frozen=True)
class Converted:
    webp: bytes
    summary: ImageSummary
    frames: int


def to_webp(path: Path, limits: ImageLimits, options: WebpOptions) -> Converted:
    """``path``'s image as WebP, with its summary. Raises ``ImageError``."""
    with open_image(path, limits) as image:
        animated = _is_animation(image)
        frames = _frames(image, limits) if animated else 1
        icc = image.info.get("icc_profile") if options.keep_icc else None
        try:
            webp = _animation(image, icc, options) if animated else _still(image, icc, options)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError("invalid_image", f"the image does not decode: {exc}") from None
    summary = summarize(path, limits, options.components_x, options.components_y)
    return Converted(webp, summary, frames)


def summarize(
    path: Path, limits: ImageLimits, components_x: int, components_y: int
) -> ImageSummary:
    """``path``'s size as shown and BlurHash (of its first frame, alpha over white), from a
    thumbnail of at most ``BLURHASH_SIZE`` pixels — a JPEG decoded at reduced scale for it.
    Raises ``ImageError``."""
    with open_image(path, limits) as image:
        width, height = image.size
        if _orientation(image) in _SWAPS_SIDES:
            width, height = height, width
        try:
            image.draft("RGB", (BLURHASH_SIZE, BLURHASH_SIZE))
            ImageOps.exif_transpose(image, in_place=True)
            flat = _flattened(_displayable(image, None)[0])
            flat.thumbnail((BLURHASH_SIZE, BLURHASH_SIZE), Image.Resampling.LANCZOS)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError("invalid_image", f"the image does not decode: {exc}") from None
    return ImageSummary(width, height, blurhash_of(flat, components_x, components_y))


def blurhash_of(thumbnail: Image.Image, components_x: int, components_y: int) -> str:
    """The BlurHash of an RGB thumbnail (blurhash's encoder takes rows of RGB triples)."""
    data = thumbnail.tobytes()
    width, height = thumbnail.size
    stride = width * 3
    rows = [
        [data[offset : offset + 3] for offset in range(row * stride, (row + 1) * stride, 3)]
        for row in range(height)
    ]
    return str(blurhash.encode(rows, components_x=components_x, components_y=components_y))


@contextmanager
def open_image(path: Path, limits: ImageLimits) -> Iterator[Image.Image]:
    """The image in ``path``, its header read and checked against ``limits``; nothing decoded."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageError(
            "image_too_large",
            f"the file has {size} bytes, more than the {limits.max_bytes} allowed",
        )
    try:
        image = Image.open(path, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        allowed = ", ".join(ALLOWED_FORMATS)
        raise ImageError(
            "unsupported_format", f"not an image in a format allowed ({allowed})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image_too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("invalid_image", f"the image header does not read: {exc}") from None
    with image:
        width, height = image.size
        most = (
            min(limits.max_pixels, PILLOW_PIXEL_LIMIT) if PILLOW_PIXEL_LIMIT else limits.max_pixels
        )
        if width * height > most:
            raise ImageError(
                "image_too_large",
                f"{width}x{height} is {width * height} pixels, more than the {most} allowed",
            )
        if width * height == 0:
            raise ImageError("invalid_image", f"the image is {width}x{height}")
        yield image


def _is_animation(image: Image.Image) -> bool:
    return bool(getattr(image, "is_animated", False)) and image.format not in _STILL_FORMATS


def _frames(image: Image.Image, limits: ImageLimits) -> int:
    """Frames of an animation (counted from their headers), within the limit."""
    try:
        frames = int(getattr(image, "n_frames", 1))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("invalid_image", f"the animation does not read: {exc}") from None
    width, height = image.size
    if frames * width * height > limits.max_animation_pixels:
        raise ImageError(
            "image_too_large",
            f"{frames} frames of {width}x{height} are more than the"
            f" {limits.max_animation_pixels} pixels allowed in an animation",
        )
    return frames


def _still(image: Image.Image, icc: bytes | None, options: WebpOptions) -> bytes:
    ImageOps.exif_transpose(image, in_place=True)
    image, icc = _displayable(image, icc)
    out = io.BytesIO()
    image.save(out, "WEBP", quality=options.quality, method=options.method, icc_profile=icc)
    return out.getvalue()


def _animation(image: Image.Image, icc: bytes | None, options: WebpOptions) -> bytes:
    # Frames may last differently: WebP's encoder takes each one's duration in a list.
    durations = [int(frame.info.get("duration", 0)) for frame in ImageSequence.Iterator(image)]
    image.seek(0)
    out = io.BytesIO()
    image.save(
        out,
        "WEBP",
        save_all=True,
        quality=options.quality,
        method=options.method,
        icc_profile=icc,
        duration=durations,
        loop=int(image.info.get("loop", 0)),
    )
    return out.getvalue()


def _displayable(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """``image`` in RGB, or RGBA when it has transparency, and the ICC profile that goes with
    it: CMYK is converted through its own profile to sRGB (which WebP assumes without one)."""
    if image.mode == "CMYK":
        return _cmyk_to_srgb(image, icc), None
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and float greyscale: scaled to 8 bits (a plain convert would clip to white).
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in ("RGB", "RGBA"):
        return image, icc
    return image.convert("RGBA" if image.has_transparency_data else "RGB"), icc


def _cmyk_to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below
        else:
            if converted is not None:
                return converted
    return image.convert("RGB")


def _flattened(image: Image.Image) -> Image.Image:
    """``image`` in RGB, transparency composited over white."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    return Image.alpha_composite(Image.new("RGBA", image.size, _WHITE), image).convert("RGB")


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1
