"""Resource references: building the download URI and taking it apart again."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from livefile.api.model import is_valid_id

UPLOAD_PATH = "/ws/streaming/upload"
DOWNLOAD_PATH_PREFIX = "/ws/streaming/download/"
CONTEXT_PARAMETER = "streamingUploadContextId"
DEFAULT_SERVER = "ws://127.0.0.1:8080"


@dataclass(frozen=True)
class ParsedReference:
    """A download reference split into the server's base URL and the resource id."""

    ws_base: str  # e.g. ws://host:port (with any path prefix before /ws/streaming)
    resource_id: str
    query: str

    @property
    def download_uri(self) -> str:
        uri = f"{self.ws_base}{DOWNLOAD_PATH_PREFIX}{self.resource_id}"
        return f"{uri}?{self.query}" if self.query else uri

    @property
    def token(self) -> str | None:
        """The access token the reference carries in ``?token=``, if any."""
        values = parse_qs(self.query).get("token")
        return values[0] if values else None

    @property
    def http_base(self) -> str:
        return http_base_url(self.ws_base)


def http_base_url(ws_base: str) -> str:
    """The http(s):// form of a ws(s):// base URL (for the server's HTTP routes)."""
    scheme, rest = ws_base.split("://", 1)
    return f"{'https' if scheme == 'wss' else 'http'}://{rest}"


def parse_reference(reference: str) -> ParsedReference:
    """Accept a ``ws(s)://…/ws/streaming/download/{id}`` or ``http(s)://…/resources/{id}`` URI."""
    parts = urlsplit(reference)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ValueError(f"Not a livefile reference: {reference!r}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path
    for marker in (DOWNLOAD_PATH_PREFIX, "/resources/"):
        prefix, found, rest = path.partition(marker)
        if found:
            resource_id = rest.split("/", 1)[0]
            if not is_valid_id(resource_id):
                raise ValueError(f"Not a livefile resource id: {resource_id!r}")
            base = urlunsplit((scheme, parts.netloc, prefix, "", ""))
            return ParsedReference(base, resource_id, parts.query)
    raise ValueError(f"Not a livefile reference: {reference!r}")


def reference_or_id(text: str, server: str) -> str:
    """``text`` as a reference: a bare resource id is taken as one on ``server``."""
    if is_valid_id(text):
        return f"{ws_base_url(server)}{DOWNLOAD_PATH_PREFIX}{text}"
    return text


def ws_base_url(server: str) -> str:
    """Normalise a server URL given by a user (http, https, ws, wss, or host:port) to ws(s)://."""
    if "://" not in server:
        server = f"ws://{server}"
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"Unsupported server URL scheme: {parts.scheme!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
