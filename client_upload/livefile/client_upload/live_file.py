"""Following a local file that another process is still writing (a live file)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

EndSignal = Callable[[], bool] | asyncio.Event | threading.Event
"""Says that the writer is done: a callable returning True, or an Event that is set."""


def _ended(signal: EndSignal) -> bool:
    if isinstance(signal, asyncio.Event | threading.Event):
        return signal.is_set()
    return bool(signal())


async def follow_file(
    path: Path, until: EndSignal, poll_interval: float, read_size: int
) -> AsyncIterator[bytes]:
    """The bytes of ``path`` as they are appended, until ``until`` holds and the end is read.

    The end signal is checked before the last read, so bytes written just before the signal
    are never lost. Reads run in a worker thread; an idle file is polled every
    ``poll_interval`` seconds, so new bytes go out within that time.
    """
    source = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            ended = _ended(until)
            chunk = await asyncio.to_thread(source.read, read_size)
            if chunk:
                yield chunk
                continue
            if ended:
                return
            await asyncio.sleep(poll_interval)
    finally:
        await asyncio.to_thread(source.close)
