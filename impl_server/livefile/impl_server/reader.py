"""The one reader every consumer of a resource uses, bounded by the published status in one place.

WebSocket download sessions, the HTTP routes, the SSE stream and producers that read another
resource (a repack reading its source) all read through ``Reader``: a range, lines, the bytes
from an offset on as they are published (``follow``), or the file itself for zero-copy sends.
``check_range`` and ``check_lines`` are the only places that decide what may be read; nothing
unpublished is ever served, whatever the file's physical length.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from livefile.api.errors import RangeNotReadableError, ResourceFailedError
from livefile.api.interfaces import CatalogEntry, StatusSubscription, Storage
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.impl_server.file_threads import in_file_thread
from livefile.impl_server.line_index import read_lines

# A small read from the page cache takes microseconds, less than the hop to a worker thread and
# back: like nginx without aio threads, the loop reads it itself.
INLINE_READ_MAX = 256 * 1024
# What one read of a long range or of a follow takes at a time: bounded memory per reader.
READ_PIECE = 4 * 1024 * 1024


@dataclass(frozen=True)
class LinesPage:
    """Lines ``start .. start + len(lines) - 1`` of a resource, read at ``status``."""

    start: int
    lines: list[bytes]
    status: ResourceStatus

    @property
    def next_start(self) -> int:
        """Where the next page begins."""
        return self.start + len(self.lines)

    @property
    def at_end(self) -> bool:
        """Whether no line follows this page yet (more may come while the resource grows)."""
        total = self.status.number_of_lines or 0
        return self.next_start >= total

    @property
    def more(self) -> bool:
        """Whether lines from ``next_start`` on can be read now."""
        return not self.at_end

    @property
    def growing(self) -> bool:
        """Whether the resource had not ended when the page was read: lines may still come."""
        return not self.status.is_terminal


def check_range(status: ResourceStatus, start: int, end: int) -> None:
    """Raise ``RangeNotReadableError`` unless ``0 <= start <= end <= currentSize``."""
    size = status.current_size
    if not 0 <= start <= end <= size:
        raise RangeNotReadableError(
            f"Requested range [{start}, {end}) is not within [0, {size}]", status
        )


def check_lines(status: ResourceStatus, start: int, count: int) -> None:
    """Raise ``RangeNotReadableError`` unless lines ``[start, start + count)`` are published."""
    total = status.number_of_lines or 0
    if not (start >= 0 and count >= 0 and start + count <= total):
        raise RangeNotReadableError(
            f"Requested lines [{start}, {start + count}) are not within [0, {total}]", status
        )


class NoLineAccessError(Exception):
    """Lines were asked of a resource stored without a line index."""


class Reader:
    """Reads one resource (``ResourceReader``)."""

    def __init__(
        self,
        entry: CatalogEntry,
        storage: Storage,
        current_status: Callable[[], Awaitable[ResourceStatus | None]],
        subscribe: Callable[[], Awaitable[StatusSubscription | None]],
    ) -> None:
        self.entry = entry
        self._storage = storage
        self.path = storage.path(entry.resource_id)
        self.index_path = storage.index_path(entry.resource_id)
        self._current_status = current_status
        self._subscribe = subscribe

    @property
    def resource_id(self) -> str:
        return self.entry.resource_id

    async def status(self) -> ResourceStatus:
        status = await self._current_status()
        return status if status is not None else self.entry.status

    async def read(self, start: int, end: int, status: ResourceStatus | None = None) -> bytes:
        """Bytes ``[start, end)``, checked against ``status`` (the newest one if None)."""
        check_range(status or await self.status(), start, end)
        return await self.read_published(start, end)

    async def read_published(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` that the caller has checked with ``check_range``."""
        if end - start <= INLINE_READ_MAX:
            return self._storage.read(self.resource_id, start, end)
        return await in_file_thread(self._storage.read, self.resource_id, start, end)

    async def iter_published(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` that the caller has checked, in pieces of at most
        ``READ_PIECE`` (a composed resource's pieces follow its parts, so none is copied to
        join them)."""
        for offset in range(start, end, READ_PIECE):
            yield await self.read_published(offset, min(end, offset + READ_PIECE))

    async def read_lines(
        self,
        start: int,
        count: int,
        max_bytes: int,
        *,
        clamp: bool = False,
        status: ResourceStatus | None = None,
    ) -> LinesPage:
        """Lines from ``start``: ``count`` of them, or fewer when they hold more than
        ``max_bytes`` (always at least one). With ``clamp``, a page that reaches past the last
        published line ends there instead of being refused; ``start`` must still be within
        ``[0, numberOfLines]``."""
        status = status or await self.status()
        if status.number_of_lines is None:
            raise NoLineAccessError("The resource has no line access")
        if clamp and 0 <= start <= status.number_of_lines and count >= 0:
            count = min(count, status.number_of_lines - start)
        check_lines(status, start, count)
        # Every line holds at least one byte, so no more than ``max_bytes`` lines fit in a
        # reply: a request for billions of lines reads no more of the index than that.
        count = min(count, max(max_bytes, 1))
        raw = await in_file_thread(
            read_lines,
            self.path,
            self.index_path,
            start,
            count,
            status.number_of_lines,
            status.current_size,
            max_bytes,
        )
        return LinesPage(start, raw, status)

    async def follow(self, start: int = 0) -> AsyncIterator[bytes]:
        """Bytes from ``start`` on, in pieces of at most ``READ_PIECE``, as they are published;
        ends with the resource (``ResourceFailedError`` after the last byte of a FAILED one).
        A start beyond the published size waits for the bytes to get there."""
        subscription = await self._subscribe()
        if subscription is None:
            raise ResourceFailedError(f"resource {self.resource_id} vanished")
        sent = start
        try:
            async for current in subscription:
                while sent < current.current_size:
                    stop = min(current.current_size, sent + READ_PIECE)
                    yield await self.read_published(sent, stop)
                    sent = stop
                if current.transfer_status is TransferStatus.FAILED:
                    raise self._failure(current)
        finally:
            subscription.close()

    async def wait_for(
        self,
        enough: Callable[[ResourceStatus], bool],
        on_not_yet: Callable[[ResourceStatus], None] | None = None,
    ) -> ResourceStatus:
        """The first status, the current one included, for which ``enough`` holds, or the
        COMPLETED one; ``on_not_yet`` hears each status before that. ``ResourceFailedError``
        when the resource ends FAILED first."""
        subscription = await self._subscribe()
        if subscription is None:
            raise ResourceFailedError(f"resource {self.resource_id} vanished")
        try:
            async for current in subscription:
                if current.transfer_status is TransferStatus.FAILED:
                    raise self._failure(current)
                if current.is_terminal or enough(current):
                    return current
                if on_not_yet is not None:
                    on_not_yet(current)
        finally:
            subscription.close()
        raise ResourceFailedError(f"the statuses of {self.resource_id} ended early")

    def _failure(self, status: ResourceStatus) -> ResourceFailedError:
        reason = status.error.message if status.error else "no reason given"
        return ResourceFailedError(
            f"resource {self.resource_id} FAILED at {status.current_size} bytes: {reason}",
            status.current_size,
        )

    @property
    def one_file(self) -> bool:
        """Whether the published bytes are those of ``path``, for zero-copy sends (``open_fd``);
        False for a resource composed of other resources' files (a bundle's ZIP)."""
        return True

    def open_fd(self) -> int:
        """A read-only descriptor of the resource's file, for zero-copy sends of ranges that
        the caller has checked (the caller closes it)."""
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
