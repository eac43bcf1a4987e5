"""The bytes an upload may have to send again: those sent since the server's last checkpoint.

A checkpoint (``StatusChanged`` on the upload connection) tells that the server stored and
published everything below its size; what was sent after it may be lost with the connection.
When the upload resumes, the server names the offset it has stored and the rest is sent again
from here — the client's running checksum already covers it, so it is not hashed twice.

Memory is bounded: the writer waits for the next checkpoint rather than hold more than
``limit`` bytes (``full``). Pieces of immutable buffers (``bytes``) are kept without a copy;
others are copied, since their owner may reuse them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class ReplayBuffer:
    """Bytes ``[start, start + size)`` of an upload, in the pieces they were sent in."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = 0
        self.size = 0
        self._pieces: deque[memoryview] = deque()

    @property
    def end(self) -> int:
        return self.start + self.size

    def full(self, more: int) -> bool:
        """Whether holding ``more`` bytes would pass the limit (one piece always fits)."""
        return self.size > 0 and self.size + more > self.limit

    def add(self, piece: memoryview) -> None:
        self._pieces.append(piece if piece.readonly else memoryview(bytes(piece)))
        self.size += len(piece)

    def release(self, offset: int) -> None:
        """The server has stored every byte below ``offset``: they need not be kept."""
        while self._pieces and self.start + len(self._pieces[0]) <= offset:
            first = self._pieces.popleft()
            self.start += len(first)
            self.size -= len(first)
        if self._pieces and self.start < offset:
            cut = offset - self.start
            self._pieces[0] = self._pieces[0][cut:]
            self.start, self.size = offset, self.size - cut

    def since(self, offset: int) -> Iterator[memoryview]:
        """The bytes from ``offset`` on (which must be within those held), piece by piece."""
        if not self.start <= offset <= self.end:
            raise ValueError(f"offset {offset} is not within [{self.start}, {self.end}]")
        position = self.start
        for piece in list(self._pieces):  # a checkpoint may release pieces meanwhile
            if position + len(piece) > offset:
                yield piece[max(0, offset - position) :]
            position += len(piece)
