"""The browser pages: ``/view/{id}`` tails one resource, ``/view/contexts/{id}`` lists a
context's resources as they appear.

The pages are static files shipped in this package (``static/viewer``): plain HTML, CSS and
JavaScript modules, no build step and nothing from another origin. They hold no resource data:
the page's script reads everything through the HTTP API with the token it was opened with, so
access control applies to every request for data, and the pages themselves are open (see
``access.OPEN_PREFIXES``). Assets are served from a fixed list: a name from the URL never
becomes a path.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

VIEW_PREFIX = "/view/"
_ASSETS = files("livefile.impl_websocket") / "static" / "viewer"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
ASSET_NAMES = ("viewer.css", "common.js", "ansi.js", "log_view.js", "resource.js", "context.js")
# The page's own script and styles only; log text is only ever set as text, and this makes sure
# nothing in a resource could run in the page even so.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " frame-ancestors 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the token in the page's address stays here
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> Response:
    body = (_ASSETS / name).read_bytes()
    suffix = name[name.rindex(".") :]
    return Response(body, media_type=_MEDIA_TYPES[suffix], headers=_HEADERS)


@router.get("/view/contexts/{context_id}")
async def context_page(context_id: str) -> Response:
    """The page of an upload context: its resources as they are created, with their statuses."""
    return _file("context.html")


@router.get("/view/static/{name}")
async def asset(name: str) -> Response:
    if name not in ASSET_NAMES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    return _file(name)


@router.get("/view/{resource_id}")
async def resource_page(resource_id: str) -> Response:
    """The page of one resource: a text resource's lines followed live, a binary one's status."""
    return _file("resource.html")
