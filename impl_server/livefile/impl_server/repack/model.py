"""The repack engine's vocabulary: its limits, its one error, its summary and the byte source it
reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from livefile.impl_server.jobs import JobFailure

RepackErrorCode = Literal[
    "encrypted_archive",
    "entry_count_limit",
    "unpacked_size_limit",
    "ratio_limit",
    "unsafe_path",
    "unsafe_entry",
    "invalid_archive",
    "unsupported_format",
]


@dataclass(frozen=True)
class RepackLimits:
    """Safety limits, all on by default. Every limit counts bytes actually produced, never sizes
    an archive declares."""

    max_entries: int = 10_000
    """Headers read (files, directories and skipped links alike) before refusing."""
    max_unpacked_bytes: int = 4 * 1024**3
    """File bytes produced; the caller lowers it to the resource quota when that is smaller."""
    max_ratio: float = 200.0
    """Bytes produced per byte of input consumed, checked once ``ratio_floor`` bytes are produced.
    A real, very repetitive log reaches ~100:1, so a cap near that would refuse genuine logs."""
    ratio_floor: int = 64 * 1024**2
    max_path_bytes: int = 1024
    """Longest entry name, in UTF-8 bytes, after normalisation."""
    compression_level: int = 6
    """Deflate level for entries whose first 64 KiB shrink; others are stored."""

    def __post_init__(self) -> None:
        if not 0 <= self.compression_level <= 9:
            raise ValueError(f"compression_level must be 0..9, not {self.compression_level}")
        if min(self.max_entries, self.max_unpacked_bytes, self.max_path_bytes) < 0:
            raise ValueError("limits cannot be negative")
        if self.max_ratio <= 0:
            raise ValueError("max_ratio must be positive")


class RepackError(JobFailure):
    """The archive was refused or could not be read; ``code`` names why, for the status."""

    def __init__(self, code: RepackErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code: RepackErrorCode = code


@dataclass(frozen=True)
class RepackSummary:
    entries_written: int
    """Files in the output ZIP."""
    entries_skipped: int
    """Symbolic links, hard links, devices, FIFOs and sockets left out (see the package doc)."""
    unpacked_bytes: int
    """Bytes produced by unpacking: the output entries' sizes, plus any data that skipped entries
    carried (normally none)."""
    consumed_bytes: int
    """Bytes of input read."""
    output_bytes: int
    """Length of the ZIP handed to the sink."""
    format: str
    """What was detected from the magic bytes: ``zip``, ``tar``, ``tar.gz``, ``7z``, ``rar``,
    ``gz`` (one compressed file), ``file`` (no archive), …"""


class Source(Protocol):
    """A blocking byte source, such as a binary file object or a reader of a growing resource."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes, blocking while the source is still growing; ``b""`` only at its
        very end."""
        ...
