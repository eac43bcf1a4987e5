"""The bridge under the SDKs' sync facades: one private event loop in a daemon thread.

The async client is the only implementation; a sync client runs its coroutines on this loop and
waits for the result, so both APIs share one core (as httpx and websockets do).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in its own daemon thread until ``close()``."""

    def __init__(self, name: str = "livefile-sync") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and return its result (its exception is raised here)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a sync livefile call cannot be made from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def iterate(self, generator: AsyncGenerator[T, None]) -> Iterator[T]:
        """Turn an async generator living on the loop into a blocking iterator."""
        try:
            while True:
                try:
                    yield self.run(_anext(generator))
                except StopAsyncIteration:
                    return
        finally:
            # A caller that stops early leaves the generator suspended: close it on its loop
            # now (what it has in flight is dropped), not whenever it is collected.
            if not self._loop.is_closed():
                self.run(generator.aclose())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()
