"""The progress bar of ``livefile upload``: tqdm on standard error.

Bytes sent drive the bar (percent and time left when the size is known, rate always); the
bytes the server has stored and published follow as ``stored``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

from livefile.client_upload.upload import UploadResult

# tqdm's own formats, with the unit after the sizes: "4.2MB/10.0MB", not "4.2M/10.0M".
KNOWN_SIZE = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
UNKNOWN_SIZE = "{n_fmt}B [{elapsed}, {rate_fmt}{postfix}]"


def bar_width() -> dict[str, Any]:
    """tqdm's width arguments: follow the terminal's width, or 80 columns on a terminal that
    says it has none (an unsized pseudo-terminal, where tqdm would draw nothing at all)."""
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):  # not a terminal (--progress): tqdm's plain bar
        return {}
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 80, "nrows": 24}


class UploadProgress:
    """A ``progress(sent, acknowledged)`` callback that draws a bar; ``total`` None for a
    growing file or a pipe (no percent then)."""

    def __init__(self, total: int | None) -> None:
        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            file=sys.stderr,
            **bar_width(),
            mininterval=0.2,
            bar_format=KNOWN_SIZE if total is not None else UNKNOWN_SIZE,
        )
        self._stored = -1

    def __call__(self, sent: int, acknowledged: int) -> None:
        if acknowledged != self._stored:
            self._stored = acknowledged
            self._bar.set_postfix_str(f"stored {self._format(acknowledged)}", refresh=False)
        self._bar.update(sent - self._bar.n)

    def note(self, message: str) -> None:
        """A line on standard error that leaves the bar intact."""
        self._bar.write(message, file=sys.stderr)

    def end(self, result: UploadResult | None = None) -> None:
        """Show the final figures (if any) and end the bar's line."""
        if result is not None:
            self(result.size, result.size)
        self._bar.close()

    @staticmethod
    def _format(size: int) -> str:
        return f"{tqdm.format_sizeof(size, divisor=1000)}B"
