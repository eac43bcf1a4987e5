"""The progress bar of ``livefile upload``: tqdm on standard error.

Bytes sent drive the bar (percent and time left when the size is known, rate always); the
bytes the server has stored and published follow as ``stored``.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from livefile.client_upload.upload import UploadResult
from livefile.impl_common.progress_bars import bar_options


class UploadProgress:
    """A ``progress(sent, acknowledged)`` callback that draws a bar; ``total`` None for a
    growing file or a pipe (no percent then)."""

    def __init__(self, total: int | None) -> None:
        self._bar = tqdm(**bar_options(total))
        self._stored = -1

    def __call__(self, sent: int, acknowledged: int) -> None:
        if acknowledged != self._stored:
            self._stored = acknowledged
            stored = tqdm.format_sizeof(acknowledged, divisor=1000)
            self._bar.set_postfix_str(f"stored {stored}B", refresh=False)
        self._bar.update(sent - self._bar.n)

    def note(self, message: str) -> None:
        """A line on standard error that leaves the bar intact."""
        self._bar.write(message, file=sys.stderr)

    def end(self, result: UploadResult | None = None) -> None:
        """Show the final figures (if any) and end the bar's line."""
        if result is not None:
            self(result.size, result.size)
        self._bar.close()
