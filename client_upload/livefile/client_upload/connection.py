"""The upload WebSocket: opening it within a timeout, closing it quietly, and reading how it
ended — always in livefile's errors, never in websockets' exceptions."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from livefile.api.errors import ConnectionLostError, LivefileError, LivefileTimeoutError
from livefile.api.messages import SUBPROTOCOL
from livefile.impl_common.close_reason import error_for_close, safe_close_reason

# The server only sends small JSON messages on an upload connection.
MAX_INCOMING_MESSAGE = 1024 * 1024
# websockets' own default; a shorter timeout given by the caller shortens it too.
MAX_CLOSE_TIMEOUT = 10.0


async def open_connection(uri: str, timeout: float, token: str | None = None) -> ClientConnection:
    """Connect to ``uri`` (TCP, TLS and WebSocket handshake together within ``timeout``),
    showing ``token`` as a bearer token when given.

    Compression stays off: permessage-deflate costs more than an order of magnitude of
    throughput on data that does not compress.
    """
    try:
        async with asyncio.timeout(timeout):
            return await connect(
                uri,
                additional_headers=bearer_headers(token),
                compression=None,
                max_size=MAX_INCOMING_MESSAGE,
                # livefile's extensions of step-streaming's protocol (docs/protocol.md).
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                open_timeout=None,  # the timeout above covers the whole opening
                close_timeout=min(timeout, MAX_CLOSE_TIMEOUT),
            )
    except TimeoutError:
        raise LivefileTimeoutError(f"Connecting to {uri} timed out after {timeout} s") from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise ConnectionLostError(f"Cannot connect to {uri}: {exc}") from exc


def bearer_headers(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


def closed_error(ws: ClientConnection) -> LivefileError:
    """The error that the end of ``ws`` means: the server's close code and reason mapped to an
    exception, or a lost connection when no close frame arrived."""
    received = ws.protocol.close_rcvd
    if received is None:
        return ConnectionLostError("The connection to the server was lost")
    return error_for_close(received.code, received.reason)


async def close_quietly(ws: ClientConnection, code: int, reason: str) -> None:
    """Close ``ws`` with ``code`` and ``reason`` unless it is closed already, within the
    connection's close timeout; past it, drop the TCP connection."""
    try:
        async with asyncio.timeout(ws.close_timeout or MAX_CLOSE_TIMEOUT):
            await ws.close(code, safe_close_reason(reason))
    except TimeoutError:
        # close() first waits for the write buffer to drain, with no deadline of its own: a
        # server that stopped reading would hold it until the keepalive gives up (20 s or more).
        drop(ws)
    except Exception:  # already closed, or the close failed: either way it is over
        pass


def drop(ws: ClientConnection) -> None:
    """End the TCP connection at once, without a close handshake (the server then marks the
    upload FAILED, as after any other end before its acknowledgement)."""
    ws.transport.abort()
