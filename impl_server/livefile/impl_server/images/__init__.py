"""Images: normalizing an image to WebP and summarizing it by its BlurHash (``convert``), and
the BlurHash lookups of ``POST /blurhashes`` with their caches (``blurhashes``)."""

from livefile.impl_server.images.convert import (
    ALLOWED_FORMATS,
    BLURHASH_SIZE,
    Converted,
    ImageError,
    ImageLimits,
    ImageSummary,
    WebpOptions,
    summarize,
    to_webp,
)

__all__ = [
    "ALLOWED_FORMATS",
    "BLURHASH_SIZE",
    "Converted",
    "ImageError",
    "ImageLimits",
    "ImageSummary",
    "WebpOptions",
    "summarize",
    "to_webp",
]
