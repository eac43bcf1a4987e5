"""/docs (Swagger UI) and /redoc (ReDoc) without internet, and with access control on: the
pages come from ``docs_router``, their scripts and styles from the fastapi-offline package
(``FastAPIOffline`` in ``app.py``, served under ``DOCS_ASSETS_PATH``), and a
Content-Security-Policy on the two pages keeps the browser from reaching any other host:
ReDoc's bundle still shows a logo from its CDN, which the policy blocks rather than let an
offline browser wait for it."""

from __future__ import annotations

import html
import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
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


# With access control on, the pages are opened as ``/docs?token=…`` (an address bar sends no
# header), and their own requests must show that token too: FastAPI's pages fetch the
# description without it and show "Failed to load API definition". These pages read the token
# from their own address in the browser — it is never written into the HTML — and send it to
# this server only. Swagger UI adds it as a bearer token to the description's request and to
# "Try it out" (unless "Authorize" set one); ReDoc, which takes no headers, asks for the
# description with ``?token=``.
_SWAGGER_UI = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link type="text/css" rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="shortcut icon" href="{assets}/favicon.png">
<title>{title} - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
const config = {config};
const token = new URLSearchParams(window.location.search).get("token");
config.requestInterceptor = (request) => {{
  const here = new URL(request.url, window.location.href).origin === window.location.origin;
  request.headers = request.headers || {{}};
  if (token && here && !request.headers.Authorization) {{
    request.headers.Authorization = "Bearer " + token;
  }}
  return request;
}};
config.presets = [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset];
window.ui = SwaggerUIBundle(config);
</script>
</body>
</html>
"""
_REDOC = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="shortcut icon" href="{assets}/favicon.png">
<title>{title} - ReDoc</title>
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<noscript>ReDoc needs JavaScript to show the documentation.</noscript>
<div id="redoc"></div>
<script src="{assets}/redoc.standalone.js"></script>
<script>
const description = {config}.url;
const token = new URLSearchParams(window.location.search).get("token");
const url = token ? description + "?token=" + encodeURIComponent(token) : description;
Redoc.init(url, {{}}, document.getElementById("redoc"));
</script>
</body>
</html>
"""


def _script_value(value: object) -> str:
    """``value`` as a JavaScript literal that cannot end the ``<script>`` element."""
    return json.dumps(value).replace("<", "\\u003c")


def docs_router(assets_path: str) -> APIRouter:
    """``/docs`` and ``/redoc`` of the application's description (in place of fastapi-offline's
    pages, whose requests carry no token), with their scripts and styles from ``assets_path``."""
    router = APIRouter(include_in_schema=False)

    def page(request: Request, template: str, config: dict[str, object]) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        config["url"] = f"{root}{request.app.openapi_url}"
        return HTMLResponse(
            template.format(
                assets=html.escape(root + assets_path),
                title=html.escape(request.app.title),
                config=_script_value(config),
            )
        )

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        config: dict[str, object] = {
            "dom_id": "#swagger-ui",
            "layout": "BaseLayout",
            "deepLinking": True,
            "showExtensions": True,
            "showCommonExtensions": True,
        }
        return page(request, _SWAGGER_UI, config)

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        return page(request, _REDOC, {})

    return router
