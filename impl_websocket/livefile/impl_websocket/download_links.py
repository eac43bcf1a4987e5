"""Download references as a client reached the server: ``ws(s)://host/ws/streaming/download/{id}``
with the scheme and ``Host`` of the request (plus any root path), and, when the server can sign,
a download token for that one resource — a reference is then a complete grant that can be handed
on as it is."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from livefile.impl_server.access import Scope, TokenAuthority
from livefile.impl_websocket.access import TOKEN_PARAMETER

# Stands in for the resource id when the URI's prefix is built once per connection.
_ID_PLACEHOLDER = "0" * 32
_WS_SCHEME = {"http": "ws", "https": "wss"}


class DownloadLinks:
    """Builds the references of one connection (``url_for`` is a route search: done once)."""

    def __init__(
        self, connection: HTTPConnection, authority: TokenAuthority | None, token_ttl: float
    ) -> None:
        self._connection = connection
        self._authority = authority
        self._token_ttl = token_ttl
        self._base: str | None = None

    def uri(self, resource_id: str) -> str:
        if self._base is None:
            sample = str(self._connection.url_for("download", resource_id=_ID_PLACEHOLDER))
            assert sample.endswith(_ID_PLACEHOLDER), sample  # the id is the path's last segment
            scheme, rest = sample.split("://", 1)
            self._base = f"{_WS_SCHEME.get(scheme, scheme)}://{rest.removesuffix(_ID_PLACEHOLDER)}"
        uri = self._base + resource_id
        if self._authority is None or not self._authority.can_sign:
            return uri
        token = self._authority.mint([Scope.DOWNLOAD], self._token_ttl, resource_id=resource_id)
        return f"{uri}?{TOKEN_PARAMETER}={token}"
