"""Short blocking file operations (open, write, fsync, rename, read) on worker threads, for less
than ``asyncio.to_thread`` costs.

Every file operation of a resource runs off the event loop, so that a slow disk never stalls the
other connections; a small upload makes several such trips (create its files, store its bytes,
make them durable, write its record). ``asyncio.to_thread`` makes each trip through
``concurrent.futures``: a work item on a ``ThreadPoolExecutor``, a concurrent future chained to
an asyncio one, locks and conditions on both sides. A plain queue taken by waiting threads, whose
result comes back with ``call_soon_threadsafe``, does the same: on the 2-core dev machine a trip
cost 35-40 µs instead of 75-100 µs alone, and in the server one tus creation-with-upload of
10 KiB spent 2.1-2.9 ms of CPU instead of 2.6-3.9 ms (``bench/tus.py``, interleaved runs).

Only for short calls: long work (a repack, an image conversion) keeps ``asyncio.to_thread``, so
that it never holds the threads file operations wait for. The caller's context (contextvars: the
current trace span) goes with the call, as with ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# As many as the default executor's (``min(32, cpus + 4)``): a few slow fsyncs must not hold
# every other resource's writes.
MOST_THREADS = min(32, (os.cpu_count() or 1) + 4)

# The loop to answer on, the future it awaits, the caller's context, the function, its arguments.
_Call = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    contextvars.Context,
    Callable[..., Any],
    tuple[Any, ...],
]


class _FileThreads:
    """Threads started on demand, up to ``MOST_THREADS``, taking calls from one queue."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a call
        self._queued = 0  # calls not taken by a thread yet

    def submit(self, call: _Call) -> None:
        with self._lock:
            self._queued += 1
            # A thread more when the calls waiting outnumber the threads waiting: several
            # calls may come before a woken thread takes the first.
            if self._queued > self._idle and self._threads < MOST_THREADS:
                self._threads += 1
                # Daemon: the server finishes its writes before it exits; nothing waits on
                # an idle thread then.
                name = f"livefile-file-{self._threads}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
        self._calls.put(call)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            loop, future, context, function, args = self._calls.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            try:
                result = context.run(function, *args)
            except BaseException as exc:  # handed to the awaiting task, as to_thread does
                _settle(loop, future, None, exc)
            else:
                _settle(loop, future, result, None)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():  # the awaiting task was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits the result any more
        loop.call_soon_threadsafe(settle)


_THREADS = _FileThreads()


async def in_file_thread(function: Callable[..., T], *args: Any) -> T:
    """``await asyncio.to_thread(function, *args)`` for a short blocking file operation."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    _THREADS.submit((loop, future, contextvars.copy_context(), function, args))
    return await future
