"""What this process has done since it started, counted for ``/metrics``.

One ``Counters`` per process (``COUNTERS``): the endpoints add to it as things happen — upload
data received, resource bytes sent, uploads ended, HTTP responses, WebSocket closes — and
``http_metrics`` reads it. Plain integers on the event loop's thread: no locks, and an increment
costs what an attribute update costs. Labels are bounded sets (route templates, never paths).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

CONTENT_ROUTE = "/resources/{resource_id}/content"
UNMATCHED_ROUTE = "unmatched"  # a path no route matched (404), or answered before routing


@dataclass
class Counters:
    received_bytes: int = 0  # upload data (binary messages) accepted
    sent_bytes: Counter[str] = field(default_factory=Counter)  # by way: websocket, http
    uploads: Counter[str] = field(default_factory=Counter)  # by outcome: completed, failed
    # By method, route template and status code.
    http_responses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    # By connection kind (upload, download, other), close code and who closed (server, client).
    websocket_closes: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    # BlurHashes answered by POST /blurhashes, by where they were found: described, memory,
    # redis, computed (see images/blurhashes.py).
    blurhash_lookups: Counter[str] = field(default_factory=Counter)


COUNTERS = Counters()


def websocket_kind(path: str) -> str:
    if path.startswith("/ws/streaming/upload"):
        return "upload"
    if path.startswith("/ws/streaming/download/"):
        return "download"
    return "other"
