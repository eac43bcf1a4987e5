"""/docs (Swagger UI) and /redoc (ReDoc) without internet: their scripts and styles come from
the fastapi-offline package (``FastAPIOffline`` in ``app.py``, served under
``DOCS_ASSETS_PATH``), and a Content-Security-Policy on the two pages keeps the browser from
reaching any other host: ReDoc's bundle still shows a logo from its CDN, which the policy blocks
rather than let an offline browser wait for it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PAGES = frozenset({"/docs", "/redoc"})
# The pages' own inline script and styles; ReDoc's web worker and images come from blob: URLs.
DOCS_POLICY = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    b" img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'"
)


class DocsPolicy:
    """ASGI middleware adding ``DOCS_POLICY`` to the answers of ``DOCS_PAGES``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOCS_PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"content-security-policy", DOCS_POLICY)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)
