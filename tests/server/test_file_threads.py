"""``in_file_thread``: short blocking calls on worker threads, as ``asyncio.to_thread`` makes
them (result, exception, the caller's context), and a blocked call holds no other."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from livefile.impl_server.file_threads import MOST_THREADS, in_file_thread

current = contextvars.ContextVar("current", default="none")


async def test_the_result_comes_back_from_another_thread() -> None:
    loop_thread = threading.get_ident()
    ident, value = await in_file_thread(lambda x: (threading.get_ident(), x * 2), 21)
    assert value == 42
    assert ident != loop_thread


async def test_an_exception_is_raised_in_the_caller() -> None:
    def fails() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await in_file_thread(fails)


async def test_the_call_runs_in_the_callers_context() -> None:
    current.set("request 7")
    assert await in_file_thread(current.get) == "request 7"


async def test_a_blocked_call_holds_no_other_and_a_cancelled_wait_leaves_the_thread_usable() -> (
    None
):
    release = threading.Event()
    blocked = asyncio.ensure_future(in_file_thread(release.wait, 30))
    # Other calls go on while one thread is blocked (up to MOST_THREADS at once).
    assert MOST_THREADS > 1
    assert await asyncio.gather(*(in_file_thread(len, "abc") for _ in range(50))) == [3] * 50
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    release.set()  # the thread finishes its call; its result goes nowhere
    assert await in_file_thread(len, "ab") == 2
