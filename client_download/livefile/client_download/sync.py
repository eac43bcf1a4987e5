"""The blocking facade: the same client, run on a private event loop thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from livefile.api.model import ResourceStatus
from livefile.client_download.client import AsyncDownloadClient, StatusListener
from livefile.impl_common.sync_bridge import LoopThread


class DownloadClient:
    """Blocking twin of ``AsyncDownloadClient``: ``with DownloadClient(reference) as d:``.

    Status listeners run on the client's loop thread and must not block.
    """

    def __init__(self, reference: str, timeout: float = 30.0) -> None:
        self._thread = LoopThread("livefile-download")
        self._client = self._thread.run(_make(reference, timeout))

    def connect(self) -> DownloadClient:
        try:
            self._thread.run(self._client.connect())
        except BaseException:
            self._thread.close()
            raise
        return self

    def close(self) -> None:
        try:
            self._thread.run(self._client.close())
        finally:
            self._thread.close()

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
        self, predicate: Callable[[ResourceStatus], bool], timeout: float | None = None
    ) -> ResourceStatus:
        return self._thread.run(self._client.wait_for_status(predicate, timeout))

    def wait_for_end(self, timeout: float | None = None) -> ResourceStatus:
        return self._thread.run(self._client.wait_for_end(timeout))

    def read(self, start: int, end: int) -> bytes:
        return self._thread.run(self._client.read(start, end))

    def lines(self, start: int, count: int) -> list[str]:
        return self._thread.run(self._client.lines(start, count))

    def iter_bytes(self, start: int = 0) -> Iterator[bytes]:
        return self._thread.iterate(self._client.iter_bytes(start))

    def iter_lines(self, start: int = 0) -> Iterator[str]:
        return self._thread.iterate(self._client.iter_lines(start))

    def save(self, path: str | Path) -> ResourceStatus:
        return self._thread.run(self._client.save(path))


async def _make(reference: str, timeout: float) -> AsyncDownloadClient:
    # Created on the loop thread: its asyncio primitives belong to that loop.
    return AsyncDownloadClient(reference, timeout)
