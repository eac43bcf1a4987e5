"""Watching a resource over the raw download protocol, for the upload SDK's tests.

The upload tests check what the server holds without the download SDK, so that they test one
module only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support.wire import open_ws, read_chunk, receive_json

WAIT = 30.0
Status = dict[str, Any]


async def wait_for_status(
    ws_url: str, resource_id: str, predicate: Callable[[Status], bool], timeout: float = WAIT
) -> Status:
    """The first status of ``resource_id`` (the one sent on connect, or a later one) that
    satisfies ``predicate``, as its wire JSON (``transferStatus``, ``currentSize``, …)."""
    async with open_ws(f"{ws_url}/ws/streaming/download/{resource_id}") as ws:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive_json(ws)
                if message["@"] == "StatusChanged" and predicate(message["resourceStatus"]):
                    status: Status = message["resourceStatus"]
                    return status


async def wait_for_end(ws_url: str, resource_id: str) -> Status:
    """The terminal status (COMPLETED or FAILED) of ``resource_id``."""
    return await wait_for_status(
        ws_url, resource_id, lambda s: s["transferStatus"] in ("COMPLETED", "FAILED")
    )


async def read_range(ws_url: str, resource_id: str, start: int, end: int) -> bytes:
    async with open_ws(f"{ws_url}/ws/streaming/download/{resource_id}") as ws:
        await receive_json(ws)  # the status sent on connect
        return await read_chunk(ws, start, end)
