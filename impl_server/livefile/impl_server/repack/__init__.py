"""Archive repack: turn an archive, possibly still arriving, into one normalized ZIP.

Blocking and I/O-agnostic: it reads a ``Source`` (``read(size) -> bytes``, blocking while the
source grows) and hands the ZIP's bytes, strictly in order, to a ``sink`` callable. Memory stays
flat in the archive's size: 1 MiB blocks in and out, a 64 KiB sample per entry, a few 1 MiB
chunks being deflated in worker threads, and the central directory (one small record per entry,
so bounded by ``max_entries``). Output is handed on in pieces of up to 1 MiB, and whatever is
pending before the engine waits for more input.

What is read, decided from magic bytes, never the name:

- zip, tar, and tar (or one file) compressed with gzip, bzip2, xz, lzma, zstd, lz4, lzip or
  compress — as a stream, from the first bytes;
- RAR, as a stream, only as far as the system libarchive reads it (Debian's 7z has no RAR codec).
  With libarchive 3.6.2, tried on rarfile's sample archives: RAR 2.9 to 4.x that are neither
  solid nor multi-volume, and RAR5 (solid too), are read; a solid RAR 4 is
  ``unsupported_format``; encrypted headers (RAR 4 and 5) and encrypted RAR 4 entries are
  ``encrypted_archive``; RAR5 entries encrypted under plain headers are not flagged by that
  libarchive and end as ``invalid_archive``; RAR 2.0 and multi-volume sets are
  ``invalid_archive``;
- 7z only from a complete file (``needs_whole_source``, then ``repack_file``);
- anything else (including cpio, ISO or a lone zip inside gzip) is not unpacked: the ZIP holds it
  as one file named after the source (without a compression suffix, if it was compressed).

What is written: every regular file under a safe relative name (see ``names``), with its
modification time; no directory entries (directories are implied by the names, so empty
directories are not kept). Entries whose first 64 KiB shrink by 10% are Deflated at
``compression_level``; others are stored (STORED when short enough to be held whole, Deflate
level 0 when streamed).

Safety, all on by default (``RepackLimits``), each a ``RepackError`` with a ``code``:
encrypted entries or headers, too many entries, too many bytes unpacked, too high a ratio of
unpacked to consumed bytes, unsafe or duplicate names, a truncated or corrupt archive. Limits count
bytes actually produced, as they are produced. Symbolic links, hard links, devices, FIFOs and
sockets are **skipped** (counted in ``RepackSummary.entries_skipped``), never followed or
refused: many ordinary archives (source trees) hold symlinks, and the ZIP holds only regular
files, so no link can point anywhere. In a zip read as a stream a symlink looks like a regular
file (its type is in the central directory only) and arrives as a small file holding its
target's path. Nested archives are stored as files.

On a ``RepackError`` the sink has already been given an incomplete ZIP; before raising, the engine
finishes it as a valid ZIP of the entries completed so far (the entry cut short is left out of its
directory). Errors raised by the source or the sink pass through unchanged, and nothing more is
written after a sink error.
"""

from livefile.impl_server.repack.archive import libarchive_module
from livefile.impl_server.repack.detect import SNIFF_BYTES, needs_whole_source
from livefile.impl_server.repack.engine import repack_file, repack_stream
from livefile.impl_server.repack.model import (
    RepackError,
    RepackErrorCode,
    RepackLimits,
    RepackSummary,
    Source,
)

__all__ = [
    "SNIFF_BYTES",
    "RepackError",
    "RepackErrorCode",
    "RepackLimits",
    "RepackSummary",
    "Source",
    "libarchive_module",
    "needs_whole_source",
    "repack_file",
    "repack_stream",
]
