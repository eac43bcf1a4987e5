"""The CORS configuration (``cors.py``) and the one decision Starlette's middleware makes with
it, for the cases the real-socket tests do not start a server for: ``*`` and bad origins."""

from __future__ import annotations

import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from livefile.impl_websocket.cors import cors_options, parse_origins


async def answer(app: CORSMiddleware, origin: str) -> dict[bytes, bytes]:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/healthz",
        "headers": [(b"origin", origin.encode())],
    }
    started: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    await app(scope, receive, send)
    return dict(started[0]["headers"])


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_star_lets_every_origin_read_without_credentials() -> None:
    headers = await answer(CORSMiddleware(ok, **cors_options(parse_origins("*"))), "http://x.y")
    assert headers[b"access-control-allow-origin"] == b"*"
    assert b"access-control-allow-credentials" not in headers


def test_origins_are_split_on_commas_and_trimmed() -> None:
    assert parse_origins(" https://a.example , http://localhost:3000,") == [
        "https://a.example",
        "http://localhost:3000",
    ]
    assert parse_origins("") == []


@pytest.mark.parametrize(
    "origin", ["a.example", "https://a.example/", "ftp://a.example", "https://", "https://a/b"]
)
def test_anything_but_an_origin_is_refused_with_the_form_to_use(origin: str) -> None:
    with pytest.raises(ValueError, match=r"is not an origin: write scheme://host\[:port\]"):
        parse_origins(origin)
