"""Access control at the edge: every request but ``/healthz`` shows a valid token before it
reaches a route, and each route then checks that the token grants it.

Authentication happens in an ASGI middleware, so that no route (``/docs`` and unknown paths
included) can forget it. A refused HTTP request gets 401 or 403 with a JSON ``detail`` and a
``WWW-Authenticate`` header (RFC 6750); a refused WebSocket is accepted and closed at once with
1008 and an ``Unauthorized: …`` or ``Forbidden: …`` reason, which a browser's WebSocket could
not read from a refused handshake.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from livefile.api import close_codes
from livefile.api.errors import AccessDeniedError, AuthenticationError, AuthorizationError
from livefile.api.model import ResourceKind
from livefile.impl_common.close_reason import safe_close_reason
from livefile.impl_server.access import UNRESTRICTED, Grant, TokenAuthority
from livefile.impl_server.access import Scope as TokenScope
from livefile.impl_server.manager import ResourceManager

GRANT_KEY = "livefile.grant"
TOKEN_PARAMETER = "token"
OPEN_PATHS = frozenset({"/healthz"})
# The API's description, open with ``--public-docs``: it says what the routes are, not what
# the resources are.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Swagger UI's and ReDoc's scripts and styles (fastapi-offline's files): the same public files
# for every server, open always, so that the pages' own requests need no token.
DOCS_ASSETS_PATH = "/docs/assets"
# The browser pages (viewer.py): static files that hold no resource data. The page's requests
# for data carry the token and are checked like any other.
OPEN_PREFIXES = ("/view/",)


def token_of(connection: HTTPConnection) -> str | None:
    """The bearer token of a request: the Authorization header, else the ``token`` parameter."""
    authorization = connection.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationError("the Authorization header must use the Bearer scheme")
        return credentials.strip()
    return connection.query_params.get(TOKEN_PARAMETER)


def reason_of(error: AccessDeniedError) -> str:
    """The close reason (and HTTP detail) of a refusal: its kind first, then why."""
    prefix = (
        close_codes.UNAUTHORIZED_PREFIX
        if isinstance(error, AuthenticationError)
        else close_codes.FORBIDDEN_PREFIX
    )
    return f"{prefix}{error}"


def denial_response(error: AccessDeniedError) -> JSONResponse:
    unauthorized = isinstance(error, AuthenticationError)
    code = "invalid_token" if unauthorized else "insufficient_scope"
    description = str(error).replace('"', "'")
    return JSONResponse(
        {"detail": reason_of(error)},
        status_code=401 if unauthorized else 403,
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="livefile", error="{code}", error_description="{description}"'
            )
        },
    )


async def close_denied(websocket: WebSocket, error: AccessDeniedError) -> None:
    """Refuse a WebSocket with 1008 and the reason (accepted first, so the client can read it)."""
    with contextlib.suppress(Exception):
        await websocket.accept()
        await websocket.close(close_codes.POLICY_VIOLATION, safe_close_reason(reason_of(error)))


class AccessControlMiddleware:
    """Verifies the token of every HTTP and WebSocket request but the open paths and hands the
    grant on in the ASGI scope."""

    def __init__(self, app: ASGIApp, authority: TokenAuthority, public_docs: bool = False) -> None:
        self.app = app
        self.authority = authority
        self.open_paths = OPEN_PATHS | DOCS_PATHS if public_docs else OPEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] not in ("http", "websocket")
            or path in self.open_paths
            or (path.startswith(DOCS_ASSETS_PATH + "/") and ".." not in path)
            or (scope["type"] == "http" and path.startswith(OPEN_PREFIXES))
        ):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        try:
            grant = self.authority.verify(token_of(connection))
        except AccessDeniedError as exc:
            if scope["type"] == "websocket":
                await close_denied(WebSocket(scope, receive, send), exc)
            else:
                await denial_response(exc)(scope, receive, send)
            return
        await self.app({**scope, GRANT_KEY: grant}, receive, send)


def grant_of(connection: HTTPConnection) -> Grant:
    """The grant the middleware verified, or everything when access control is off."""
    grant = connection.scope.get(GRANT_KEY)
    if isinstance(grant, Grant):
        return grant
    if connection.app.state.token_authority is None:
        return UNRESTRICTED
    # Access control is on but the middleware did not run: refuse rather than guess.
    raise AuthenticationError("a token is required")


# Declared so that the OpenAPI description and /docs show how to authenticate; the middleware
# has already checked the token by the time these run.
_bearer = HTTPBearer(auto_error=False, description="a livefile JWT (access control on)")
_query_token = APIKeyQuery(
    name=TOKEN_PARAMETER, auto_error=False, description="the same JWT, for clients without headers"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
QueryToken = Annotated[str | None, Depends(_query_token)]


async def authorize_read(grant: Grant, manager: ResourceManager, resource_id: str) -> None:
    """Reading ``resource_id``: a download grant for it — or for the resource it is derived
    from, since a derived resource is that resource's content in another form (not a bundle:
    it holds other members too). The refusal is the same whether the resource exists or
    not."""
    try:
        grant.authorize_download(resource_id)
    except AuthorizationError:
        if grant.resource_id is None or TokenScope.DOWNLOAD not in grant.scopes:
            raise
        entry = await manager.entry(resource_id)
        if (
            entry is None
            or entry.kind is ResourceKind.BUNDLE
            or grant.resource_id not in entry.sources
        ):
            raise


async def download_access(
    resource_id: str, request: Request, _bearer: Credentials, _token: QueryToken
) -> None:
    """Reading the resource in the path."""
    await authorize_read(grant_of(request), request.app.state.manager, resource_id)


async def derive_access(
    resource_id: str, request: Request, _bearer: Credentials, _token: QueryToken
) -> None:
    """Starting a resource derived from the one in the path: reading it, and upload scope."""
    grant = grant_of(request)
    await authorize_read(grant, request.app.state.manager, resource_id)
    grant.authorize_upload(None)


async def context_access(
    context_id: str, request: Request, _bearer: Credentials, _token: QueryToken
) -> None:
    """Describing or following the upload context in the path."""
    grant_of(request).authorize_context(context_id)


async def admin_access(request: Request, _bearer: Credentials, _token: QueryToken) -> None:
    grant_of(request).authorize_admin()


class Denial(BaseModel):
    detail: str


def _denial(description: str) -> dict[str, Any]:
    # The schema inline rather than as a "model": FastAPI would declare a model under the
    # route's own media type (text/plain for /metrics), but a denial is always JSON.
    return {
        "description": description,
        "content": {"application/json": {"schema": Denial.model_json_schema()}},
        "headers": {
            "WWW-Authenticate": {
                "description": "Bearer challenge with the error code (RFC 6750)",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    }


ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _denial("No valid token (access control on)"),
    403: _denial("The token does not grant this request"),
}
