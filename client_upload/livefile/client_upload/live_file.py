"""Following a local file that another process is still writing (a live file), through log
rotation as ``tail -F`` does.

Rotation comes in two forms, and both are followed:

- **truncation** (logrotate's ``copytruncate``): the file is cut to nothing and written again
  from its start. Noticed when the bytes just before the read position are no longer those
  that were read there (the file is shorter, or was rewritten past that point before the next
  poll), so a rewrite that already outgrew the old size is caught too.
- **replacement** (rename and re-create): the path names another file. The old file is read
  to its end first, then the new one from its start.

Either way reading goes on from the start of the new content, so the upload holds the old
content followed by the new: the honest append-only result. Nothing is dropped or repeated
without a ``Rotation`` being reported.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EndSignal = Callable[[], bool] | asyncio.Event | threading.Event
"""Says that the writer is done: a callable returning True, or an Event that is set."""

# Bytes before the read position that are read again with each read and compared: a rewritten
# file is noticed unless its new content has the very same bytes there.
OVERLAP = 4096

RotationKind = Literal["truncated", "replaced"]


@dataclass(frozen=True)
class Rotation:
    """A followed file was rotated; what comes next is the new content from its start.

    ``kind``: ``"truncated"`` (cut and written again, e.g. ``copytruncate``) or ``"replaced"``
    (the path now names a new file, e.g. rename and re-create). ``offset``: the size of the
    resource before the new content, i.e. where the new content starts in it.
    """

    path: str
    kind: RotationKind
    offset: int

    def describe(self) -> str:
        what = "was truncated" if self.kind == "truncated" else "was replaced by a new file"
        return (
            f"{self.path} {what}; following it from its start, which goes on the resource"
            f" at byte {self.offset}"
        )


RotationCallback = Callable[[Rotation], None]
"""``on_rotation(rotation)``: called when the followed file was rotated (see ``Rotation``)."""


def has_ended(signal: EndSignal) -> bool:
    if isinstance(signal, asyncio.Event | threading.Event):
        return signal.is_set()
    return bool(signal())


class FollowedFile:
    """A file read from its start, which notices when it was truncated or replaced.

    Open it before anything else happens, so that a missing file raises at once
    (FileNotFoundError), and so does a directory (IsADirectoryError) or anything else that is
    not a regular file (ValueError)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1
        self._open()

    def _open(self) -> None:
        mode = os.stat(self.path).st_mode  # before opening: a FIFO's open would block
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(self.path))
        if not stat.S_ISREG(mode):
            raise ValueError(
                f"{self.path} is not a regular file (a pipe is uploaded with upload_stream)"
            )
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        opened = os.fstat(fd)
        self._identity = (opened.st_dev, opened.st_ino)
        self._position = 0  # the next byte of this file to read
        self._tail = b""  # the last bytes read, at most OVERLAP: checked again before each read

    def read(self, size: int) -> memoryview | None:
        """The next bytes (empty at the end of the file), or None when the file is no longer
        what was read so far: it was truncated or rewritten, and is read from its start next."""
        overlap = len(self._tail)
        # One read for the check and the new bytes, so that both are of the same content; the
        # new bytes are handed on as a view, without a copy. Not sized by fstat: some files
        # (/proc's) say 0 bytes and still have content.
        data = memoryview(os.pread(self._fd, overlap + size, self._position - overlap))
        if len(data) < overlap or bytes(data[:overlap]) != self._tail:
            self._restart()
            return None
        chunk = data[overlap:]
        if chunk:
            self._position += len(chunk)
            self._tail = (self._tail + bytes(chunk[-OVERLAP:]))[-OVERLAP:]
        return chunk

    def _restart(self) -> None:
        self._position, self._tail = 0, b""

    def replaced(self) -> bool:
        """Whether the path now names another file (it was renamed and re-created)."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:  # renamed, not re-created yet: the old file is still read
            return False
        return (now.st_dev, now.st_ino) != self._identity

    def reopen(self) -> bool:
        """Follow the file the path names now, from its start; False (and the old file still
        followed) when it went away again before it could be opened."""
        try:
            self._open()
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def follow_file(
    source: FollowedFile,
    until: EndSignal,
    poll_interval: float,
    read_size: int,
    on_rotation: Callable[[RotationKind], None] | None = None,
) -> AsyncIterator[memoryview]:
    """The bytes of ``source`` as they are appended, until ``until`` holds and the end is read.

    The end signal is checked *before* the read that finds the end of the file, so bytes
    written just before the signal are never lost. Reads of at most ``read_size`` bytes run in
    a worker thread; at the end of the file it is polled every ``poll_interval`` seconds, so
    new bytes go out within that time. A rotation calls ``on_rotation`` and reading goes on
    with the new content from its start.
    """
    at_end = False  # the last read found the end of the file
    while True:
        ended = has_ended(until)
        # Checked before the read too, once at the end: bytes its writer still appended to the
        # old file before the new one appeared are read before the new one is followed (checked
        # after the read, they were lost when they came between the two).
        replaced = at_end and await asyncio.to_thread(source.replaced)
        chunk = await asyncio.to_thread(source.read, read_size)
        at_end = chunk is not None and not chunk
        if chunk is None:
            if on_rotation is not None:
                on_rotation("truncated")
        elif chunk:
            yield chunk
        elif replaced and await asyncio.to_thread(source.reopen):
            at_end = False
            if on_rotation is not None:
                on_rotation("replaced")
        elif ended:
            return
        else:
            await asyncio.sleep(poll_interval)
