"""The hot path of a file server: whole files and single ranges of COMPLETED resources, served
straight from ASGI ahead of FastAPI's routing and dependency resolution.

A finished resource never changes (rule 2), so its response headers are built once and kept;
a request then costs a dictionary lookup, a range parse and one positional read. Everything
else — growing or FAILED resources, unknown ids, conditional requests, unsatisfiable ranges,
follow mode, a token that does not grant the resource — passes through untouched to the routes
of ``http_content.py``, which stay the reference for every answer and for the OpenAPI
description. The answers are the same either way; only the cost differs (random 64 KiB range
reads spent most of their time in routing, dependency resolution and header building).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from livefile.api.errors import AccessDeniedError
from livefile.api.model import TransferStatus
from livefile.impl_common.http_ranges import Unsatisfiable, parse_range
from livefile.impl_server.access import Grant
from livefile.impl_server.manager import ResourceManager
from livefile.impl_websocket.access import GRANT_KEY
from livefile.impl_websocket.http_content import resource_headers

CONTENT_PATH = re.compile(r"/resources/([0-9a-f]{32})/content")
CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since", b"if-range"})
RESOURCES_CACHED = 4096
READ_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class FinishedResource:
    """What every answer about a COMPLETED resource shares."""

    size: int
    headers: list[tuple[bytes, bytes]]  # without Content-Length and Content-Range


class CompletedContentFastPath:
    """ASGI middleware answering GET and HEAD of COMPLETED resources' content itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._finished: OrderedDict[str, FinishedResource] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            CONTENT_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] in ("GET", "HEAD")
            else None
        )
        if (
            match is None
            or b"follow" in scope["query_string"]
            or not self._granted(scope, match[1])
        ):
            await self.app(scope, receive, send)
            return
        resource_id = match[1]
        range_header: str | None = None
        for name, value in scope["headers"]:
            if name in CONDITIONAL_HEADERS:
                await self.app(scope, receive, send)  # rare: the full route decides
                return
            if name == b"range":
                range_header = value.decode("latin-1")
        manager: ResourceManager = scope["app"].state.manager
        resource = await self._finished_resource(manager, resource_id)
        if resource is None:
            await self.app(scope, receive, send)
            return
        try:
            wanted = parse_range(range_header, resource.size)
        except Unsatisfiable:
            await self.app(scope, receive, send)  # 416 with its JSON body
            return
        start, stop = (wanted.start, wanted.stop) if wanted else (0, resource.size)
        headers = [*resource.headers, (b"content-length", str(stop - start).encode())]
        if wanted is not None:
            headers.append((b"content-range", f"bytes {start}-{stop - 1}/{resource.size}".encode()))
        head_only = scope["method"] == "HEAD"
        # A small reply is read before the headers go out, so that a failed read can still
        # become an error answer (the full route's) instead of a broken one.
        first = b""
        if not head_only and stop > start:
            first = await manager.read(resource_id, start, min(stop, start + READ_SIZE))
        await send({"type": "http.response.start", "status": 206 if wanted else 200,
                    "headers": headers})  # fmt: skip
        if head_only:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        offset = start + len(first)
        await send({"type": "http.response.body", "body": first, "more_body": offset < stop})
        while offset < stop:
            data = await manager.read(resource_id, offset, min(stop, offset + READ_SIZE))
            offset += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": offset < stop})

    def _granted(self, scope: Scope, resource_id: str) -> bool:
        if scope["app"].state.token_authority is None:
            return True
        grant = scope.get(GRANT_KEY)
        if not isinstance(grant, Grant):
            return False
        try:
            grant.authorize_download(resource_id)
        except AccessDeniedError:
            return False  # the full route gives the documented refusal
        return True

    async def _finished_resource(
        self, manager: ResourceManager, resource_id: str
    ) -> FinishedResource | None:
        if (cached := self._finished.get(resource_id)) is not None:
            self._finished.move_to_end(resource_id)
            return cached
        entry = await manager.entry(resource_id)
        if entry is None or entry.status.transfer_status is not TransferStatus.COMPLETED:
            return None
        headers = resource_headers(entry, entry.status)
        resource = FinishedResource(
            entry.status.current_size,
            [(name.lower().encode("latin-1"), value.encode("latin-1"))
             for name, value in headers.items()],
        )  # fmt: skip
        self._finished[resource_id] = resource
        if len(self._finished) > RESOURCES_CACHED:
            self._finished.popitem(last=False)
        return resource
