"""Following a local file that another process is still writing (a live file)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

EndSignal = Callable[[], bool] | asyncio.Event | threading.Event
"""Says that the writer is done: a callable returning True, or an Event that is set."""


def has_ended(signal: EndSignal) -> bool:
    if isinstance(signal, asyncio.Event | threading.Event):
        return signal.is_set()
    return bool(signal())


async def follow_file(
    source: BinaryIO, until: EndSignal, poll_interval: float, read_size: int
) -> AsyncIterator[bytes]:
    """The bytes of ``source`` as they are appended, until ``until`` holds and the end is read.

    The end signal is checked *before* the read that finds the end of the file, so bytes
    written just before the signal are never lost. Reads of at most ``read_size`` bytes run in
    a worker thread; at the end of the file it is polled every ``poll_interval`` seconds, so
    new bytes go out within that time.
    """
    while True:
        ended = has_ended(until)
        chunk = await asyncio.to_thread(source.read, read_size)
        if chunk:
            yield chunk
        elif ended:
            return
        else:
            await asyncio.sleep(poll_interval)
