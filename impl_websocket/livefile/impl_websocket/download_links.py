"""Download references as a client reached the server: ``ws(s)://host/ws/streaming/download/{id}``
with the scheme and ``Host`` of the request (plus any root path), and, when the server can sign,
a download token for that one resource — a reference is then a complete grant that can be handed
on as it is."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from livefile.impl_server.access import Scope, TokenAuthority
from livefile.impl_websocket.access import TOKEN_PARAMETER
from livefile.impl_websocket.route_urls import url_for_id

_WS_SCHEME = {"http": "ws", "https": "wss"}


class DownloadLinks:
    """Builds the references of one connection (the route's path is looked up once)."""

    def __init__(
        self, connection: HTTPConnection, authority: TokenAuthority | None, token_ttl: float
    ) -> None:
        self._connection = connection
        self._authority = authority
        self._token_ttl = token_ttl
        self._base: str | None = None

    def uri(self, resource_id: str) -> str:
        if self._base is None:
            sample = url_for_id(self._connection, "download", "resource_id", "")
            scheme, rest = sample.split("://", 1)
            self._base = f"{_WS_SCHEME.get(scheme, scheme)}://{rest}"
        uri = self._base + resource_id
        if self._authority is None or not self._authority.can_sign:
            return uri
        token = self._authority.mint([Scope.DOWNLOAD], self._token_ttl, resource_id=resource_id)
        return f"{uri}?{TOKEN_PARAMETER}={token}"
