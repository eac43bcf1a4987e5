"""What an input is, from its first bytes alone (never from its name)."""

from __future__ import annotations

import enum

SNIFF_BYTES = 512
"""Enough of the head to tell every kind apart (a tar's magic is at offset 257)."""


class Kind(enum.Enum):
    ZIP = "zip"
    TAR = "tar"
    SEVEN_ZIP = "7z"
    RAR = "rar"
    COMPRESSED = "compressed"
    """A compression filter around a tar, or around one file."""
    PLAIN = "file"
    """No archive: the ZIP holds it alone."""


# Compression filters, each named as libarchive names it. Only these are enabled, one at a time:
# libarchive runs some others (lrzip, lzop, grzip) through an external program.
_FILTERS: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gz", "gzip"),
    (b"\xfd7zXZ\x00", "xz", "xz"),
    (b"\x28\xb5\x2f\xfd", "zst", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4", "lz4"),
    (b"LZIP", "lz", "lzip"),
    (b"\x1f\x9d", "Z", "compress"),
)

COMPRESSION_SUFFIXES = (
    ".gz", ".gzip", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".zst", ".zstd", ".tzst",
    ".lz4", ".lz", ".lzma", ".z",
)  # fmt: skip


def _is_bzip2(head: bytes) -> bool:
    # "BZh" plus a block size digit could start a text file: also require the block (or
    # end-of-stream) magic that follows.
    return (
        head[:3] == b"BZh"
        and head[3:4] in b"123456789"
        and head[4:10] in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
    )


def _is_lzma_alone(head: bytes) -> bool:
    # .lzma has no magic: properties byte 0x5D and a dictionary size that is a power of two.
    if len(head) < 13 or head[0] != 0x5D:
        return False
    dictionary = int.from_bytes(head[1:5], "little")
    return dictionary & (dictionary - 1) == 0 and dictionary >= 4096


def _is_tar(head: bytes) -> bool:
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    # A v7 tar has no magic; its header checksum (spaces in the checksum field) must match.
    field = head[148:156].split(b"\x00", 1)[0].strip()
    try:
        declared = int(field, 8)
    except ValueError:
        return False
    return declared == sum(head[:148]) + 8 * 32 + sum(head[156:512]) and head[0] != 0


def compression_of(head: bytes) -> tuple[str, str] | None:
    """(file suffix, libarchive filter name) of a compressed stream, or None."""
    for magic, suffix, name in _FILTERS:
        if head.startswith(magic):
            return suffix, name
    if _is_bzip2(head):
        return "bz2", "bzip2"
    if _is_lzma_alone(head):
        return "lzma", "lzma"
    return None


def detect(head: bytes) -> Kind:
    """The kind of input starting with ``head`` (pass ``SNIFF_BYTES`` or all there is)."""
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return Kind.SEVEN_ZIP
    if head.startswith((b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")):
        return Kind.RAR
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return Kind.ZIP
    if compression_of(head) is not None:
        return Kind.COMPRESSED
    if _is_tar(head):
        return Kind.TAR
    return Kind.PLAIN


def needs_whole_source(head: bytes) -> bool:
    """True for formats that can only be read once the source is complete (7z keeps its header at
    its end): the caller waits for COMPLETED and calls ``repack_file``. Six bytes of head
    suffice."""
    return detect(head) is Kind.SEVEN_ZIP


def strip_compression_suffix(name: str) -> str:
    lowered = name.lower()
    for suffix in sorted(COMPRESSION_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
