"""The progress bar of ``livefile get``: tqdm on standard error.

Percent and time left once the resource's final size is known (it ended, now or while being
followed); before that, bytes received and the rate.
"""

from __future__ import annotations

from tqdm import tqdm

from livefile.api.model import ResourceStatus
from livefile.client_download.client import AsyncDownloadClient
from livefile.impl_common.progress_bars import KNOWN_SIZE, bar_options


class DownloadProgress:
    """A bar of the bytes received from ``download``; ``close()`` ends it."""

    def __init__(self, download: AsyncDownloadClient) -> None:
        status = download.status
        self._bar = tqdm(**bar_options(status.current_size if status.is_terminal else None))
        self._remove = download.add_status_listener(self._status)

    def _status(self, status: ResourceStatus) -> None:
        if status.is_terminal and self._bar.total is None:
            # The size is final now: percent and time left from here on.
            self._bar.total = status.current_size
            self._bar.bar_format = KNOWN_SIZE

    def update(self, received: int) -> None:
        self._bar.update(received)

    def close(self) -> None:
        self._remove()
        self._bar.close()
