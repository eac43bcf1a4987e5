"""The blocking facade: the async client, run on a private event loop thread.

with DownloadClient(reference) as download:
    for piece in download.iter_bytes():
        ...
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from livefile.api.errors import LivefileError
from livefile.api.model import ResourceStatus
from livefile.client_download.client import (
    CLIENT_TIMEOUT,
    DEFAULT_RECONNECT_FOR,
    LINES_PAGE,
    NOT_CONNECTED,
    AsyncDownloadClient,
    Timeout,
)
from livefile.client_download.connection import StatusListener, StatusPredicate
from livefile.impl_common.download_protocol import LinesPage
from livefile.impl_common.sync_bridge import LoopThread

T = TypeVar("T")


class DownloadClient:
    """Blocking twin of ``AsyncDownloadClient``, with the same methods and semantics.

    Status listeners and predicates run on the client's own loop thread: they must be quick,
    and must not call the client's blocking methods.
    """

    def __init__(
        self,
        reference: str,
        timeout: float | None = 30.0,
        *,
        token: str | None = None,
        reconnect_for: float = DEFAULT_RECONNECT_FOR,
    ) -> None:
        # Parsed here, so that a bad reference raises before a thread is started.
        self._client = AsyncDownloadClient(
            reference, timeout, token=token, reconnect_for=reconnect_for
        )
        self._thread: LoopThread | None = None

    def connect(self) -> DownloadClient:
        if self._thread is None:
            self._thread = LoopThread(f"livefile-download-{self._client.resource_id}")
            try:
                self._thread.run(self._client.connect())
            except BaseException:
                self._stop_thread()
                raise
        return self

    def close(self) -> None:
        """Close the connection and stop the loop thread; closing twice is harmless."""
        if self._thread is None:
            return
        try:
            self._thread.run(self._client.close())
        finally:
            self._stop_thread()

    def __enter__(self) -> DownloadClient:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def resource_id(self) -> str:
        return self._client.resource_id

    @property
    def status(self) -> ResourceStatus:
        return self._client.status

    def add_status_listener(self, listener: StatusListener) -> Callable[[], None]:
        return self._client.add_status_listener(listener)

    def wait_for_status(
        self, predicate: StatusPredicate, timeout: Timeout = CLIENT_TIMEOUT
    ) -> ResourceStatus:
        return self._loop.run(self._client.wait_for_status(predicate, timeout))

    def wait_for_end(self, timeout: float | None = None) -> ResourceStatus:
        return self._loop.run(self._client.wait_for_end(timeout))

    def read(self, start: int, end: int) -> bytes:
        return self._loop.run(self._client.read(start, end))

    def lines(self, start: int, count: int) -> list[str]:
        return self._loop.run(self._client.lines(start, count))

    def lines_page(self, start: int, count: int = LINES_PAGE) -> LinesPage:
        return self._loop.run(self._client.lines_page(start, count))

    def iter_bytes(self, start: int = 0) -> Iterator[bytes]:
        return self._iterate(self._client.iter_bytes, start)

    def iter_lines(self, start: int = 0) -> Iterator[str]:
        return self._iterate(self._client.iter_lines, start)

    def save(self, path: str | Path) -> ResourceStatus:
        return self._loop.run(self._client.save(path))

    @property
    def _loop(self) -> LoopThread:
        if self._thread is None:
            raise LivefileError(NOT_CONNECTED)
        return self._thread

    def _iterate(self, make: Callable[[int], AsyncGenerator[T, None]], start: int) -> Iterator[T]:
        yield from self._loop.iterate(make(start))

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._thread.close()
            self._thread = None
