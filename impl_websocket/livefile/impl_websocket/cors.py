"""Cross-origin requests (CORS): which pages on other origins may read livefile's HTTP answers.

Off unless ``LIVEFILE_CORS_ORIGINS`` lists origins. Starlette's ``CORSMiddleware`` makes every
decision (preflights, ``Access-Control-Allow-Origin``, ``Vary: Origin``); this module only says
how it is configured. It sits outside access control, so that a preflight (which carries no
token) is answered and a refusal (401, 403) is readable by the page. The HTTP protocol's
immediate answers (``server.py``) bypass ASGI, so they leave any request that carries an
``Origin`` to the ASGI path while CORS is on (``http_fast_content.needs_asgi``): the middleware
stays the one place that decides.

Credentials: livefile authenticates with bearer tokens, never cookies, so
``Access-Control-Allow-Credentials`` is not sent. A page sends its token in an ``Authorization``
header (allowed in preflights) with ``fetch``'s default ``credentials: "same-origin"``, or as the
``token`` query parameter where it cannot set headers (``EventSource``); a request made with
``credentials: "include"`` (or ``EventSource``'s ``withCredentials: true``) is refused by the
browser.
"""

from __future__ import annotations

from typing import Any

from livefile.impl_websocket.content_plan import (
    NEXT_LINE_HEADER,
    REVISION_HEADER,
    SIZE_HEADER,
    STATUS_HEADER,
)

# What a page's script may read besides the CORS-safelisted response headers.
EXPOSED_HEADERS = (
    "Content-Range",
    "Content-Length",
    "Content-Disposition",
    "Accept-Ranges",
    "ETag",
    "Link",
    "WWW-Authenticate",
    STATUS_HEADER,
    SIZE_HEADER,
    REVISION_HEADER,
    NEXT_LINE_HEADER,
)
# Request headers a page may send: the token, and what range and conditional requests need.
ALLOWED_HEADERS = (
    "Authorization",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Modified-Since",
    "Content-Type",
)
ALLOWED_METHODS = ("GET", "HEAD", "POST", "DELETE")
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


def parse_origins(value: str) -> list[str]:
    """``https://a.example, http://localhost:3000`` as a list; ``*`` allows every origin.
    ValueError names the first entry that is not an origin (scheme://host[:port], no path)."""
    origins = [origin.strip() for origin in value.split(",") if origin.strip()]
    for origin in origins:
        if origin == "*":
            continue
        scheme, separator, rest = origin.partition("://")
        if not separator or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(
                f"{origin!r} is not an origin: write scheme://host[:port], without a path"
                " or a trailing slash (or * for every origin)"
            )
    return origins


def cors_options(origins: list[str]) -> dict[str, Any]:
    """The keyword arguments of ``CORSMiddleware`` for these allowed origins."""
    return {
        "allow_origins": origins,
        "allow_methods": ALLOWED_METHODS,
        "allow_headers": ALLOWED_HEADERS,
        "allow_credentials": False,
        "expose_headers": EXPOSED_HEADERS,
        "max_age": PREFLIGHT_MAX_AGE,
    }
