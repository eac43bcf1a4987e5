"""Line semantics shared by the server and the clients, without I/O.

A line ends just after ``\\n`` (a ``\\r\\n`` line keeps its ``\\r``). While a resource grows only
complete lines count; once it has ended, a final line without a line break counts as one more.
"""

from __future__ import annotations

NEWLINE = 0x0A


def line_ends(data: bytes | memoryview, base: int) -> list[int]:
    """The absolute offsets just past each ``\\n`` in ``data``, which starts at offset ``base``."""
    buffer = bytes(data) if isinstance(data, memoryview) else data
    ends: list[int] = []
    position = buffer.find(b"\n")
    while position >= 0:
        ends.append(base + position + 1)
        position = buffer.find(b"\n", position + 1)
    return ends


def line_count(complete_lines: int, last_line_end: int, size: int, ended: bool) -> int:
    """Lines a reader may request: complete ones, plus a trailing unterminated one at the end."""
    if ended and size > last_line_end:
        return complete_lines + 1
    return complete_lines
