"""Taking up an unfinished resource again: what its stored bytes already hold.

A resumable upload (tus) outlives the process that started it: after a restart, or on another
worker, its writer is reopened to append after the bytes already stored. This module finds what
the new writer must continue from — the stored size, the running checksum of those bytes, a line
index that matches them (a process killed between appending bytes and their line ends leaves the
index behind, or a torn last entry) — and the revision to continue with. Blocking: run in a
thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from livefile.api.model import ChecksumAlgorithm, ResourceStatus
from livefile.impl_common.checksums import Digest, new_digest
from livefile.impl_common.lines import line_ends
from livefile.impl_server.line_index import ENTRY_SIZE, LineIndexWriter, decode

READ_PIECE = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoredPrefix:
    """The bytes a reopened resource already holds; its writer appends after them."""

    size: int
    digest: Digest  # already fed with those bytes
    revision: int  # the revision of the reopened writer's first status


def continued_revision(recorded: ResourceStatus, stored_size: int) -> int:
    """A revision above every one published for the resource so far.

    The status recorded beside the bytes may be older than the last one published (a process
    killed mid-upload publishes checkpoints it never records). A producer that publishes only
    sizes publishes each new revision with a larger size, so no more revisions than bytes stored
    since the recorded status can have followed it."""
    grown = max(0, stored_size - recorded.current_size)
    return (recorded.revision or 0) + grown + 1


def stored_prefix(
    data_path: Path, algorithm: ChecksumAlgorithm, recorded: ResourceStatus
) -> StoredPrefix:
    """Hash the stored bytes of the resource at ``data_path``."""
    digest = new_digest(algorithm)
    size = 0
    try:
        with data_path.open("rb") as source:
            while piece := source.read(READ_PIECE):
                digest.update(piece)
                size += len(piece)
    except FileNotFoundError:
        pass
    return StoredPrefix(size, digest, continued_revision(recorded, size))


def reopen_index(index_path: Path, data_path: Path, size: int) -> LineIndexWriter:
    """The line index of a resource of ``size`` stored bytes, made to match them (entries past
    them and a torn last entry dropped, lines stored after the index's last entry added) and
    opened for appending."""
    with open(index_path, "ab"):
        pass  # make sure it exists
    whole = os.path.getsize(index_path) // ENTRY_SIZE
    last_end = 0
    with open(index_path, "r+b") as index:
        while whole:
            index.seek((whole - 1) * ENTRY_SIZE)
            last_end = decode(index.read(ENTRY_SIZE))[0]
            if last_end <= size:
                break
            whole -= 1
            last_end = 0
        index.truncate(whole * ENTRY_SIZE)
    writer = LineIndexWriter(index_path)
    with data_path.open("rb") as source:
        source.seek(last_end)
        offset = last_end
        while offset < size and (piece := source.read(min(READ_PIECE, size - offset))):
            writer.append(line_ends(piece, offset))
            offset += len(piece)
    writer.last_end = max(writer.last_end, last_end)
    return writer
