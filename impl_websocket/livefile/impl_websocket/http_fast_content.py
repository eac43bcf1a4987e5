"""The hot path of a file server: whole files and single ranges of COMPLETED resources, served
straight from ASGI ahead of FastAPI's routing and dependency resolution.

A finished resource never changes (rule 2), so its response headers are built once and kept;
a request then costs a dictionary lookup, a range parse and one positional read. Once a
resource's headers are cached, ``answer_now`` lets the HTTP protocol itself (``server.py``)
answer small requests for it synchronously, in one write, without an ASGI task at all. Everything
else — growing or FAILED resources, unknown ids, conditional requests, unsatisfiable ranges,
follow mode, a token that does not grant the resource — passes through untouched to the routes
of ``http_content.py``, which stay the reference for every answer and for the OpenAPI
description. The answers are the same either way; only the cost differs (random 64 KiB range
reads spent most of their time in routing, dependency resolution and header building).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from livefile.api.errors import AccessDeniedError
from livefile.api.model import TransferStatus
from livefile.impl_common.http_ranges import Unsatisfiable, parse_range
from livefile.impl_common.lru import LruCache
from livefile.impl_server.access import Grant, TokenAuthority
from livefile.impl_server.manager import INLINE_READ_MAX, ResourceManager
from livefile.impl_websocket.access import GRANT_KEY, token_of
from livefile.impl_websocket.http_content import resource_headers

CONTENT_PATH = re.compile(r"/resources/([0-9a-f]{32})/content")
CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since", b"if-range"})
RESOURCES_CACHED = 4096
DESCRIPTORS_KEPT = 64
READ_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class FinishedResource:
    """What every answer about a COMPLETED resource shares."""

    size: int
    headers: list[tuple[bytes, bytes]]  # without Content-Length and Content-Range


class FinishedFiles:
    """The cached headers of finished resources (bounded, least recently used out first)."""

    def __init__(self, capacity: int = RESOURCES_CACHED) -> None:
        self._resources: LruCache[str, FinishedResource] = LruCache(capacity)
        self._descriptors: LruCache[str, int] = LruCache(DESCRIPTORS_KEPT)

    def descriptor(self, manager: ResourceManager, resource_id: str) -> int:
        """An open read-only descriptor of the resource's file, kept for the next request
        (a finished file never changes); the least recently used are closed beyond a few."""
        fd = self._descriptors.get(resource_id)
        if fd is not None:
            return fd
        fd = os.open(manager.storage.path(resource_id), os.O_RDONLY | os.O_CLOEXEC)
        if (pushed_out := self._descriptors.put(resource_id, fd)) is not None:
            os.close(pushed_out)
        return fd

    def get(self, resource_id: str) -> FinishedResource | None:
        return self._resources.get(resource_id)

    async def load(self, manager: ResourceManager, resource_id: str) -> FinishedResource | None:
        if (cached := self.get(resource_id)) is not None:
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
        self._resources.put(resource_id, resource)
        return resource


@dataclass(frozen=True)
class Answer:
    """How to answer a request about a finished resource: bytes ``[start, stop)``."""

    status: int
    headers: list[tuple[bytes, bytes]]
    start: int
    stop: int
    head_only: bool


def content_request(scope: Scope) -> str | None:
    """The resource id of a GET or HEAD of ``/resources/{id}/content`` not in follow mode."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return None
    match = CONTENT_PATH.fullmatch(scope["path"])
    if match is None or b"follow" in scope["query_string"]:
        return None
    return match[1]


def plan_answer(scope: Scope, resource: FinishedResource) -> Answer | None:
    """The answer to ``scope``, or None when the full route must give it (a conditional
    request, an unsatisfiable range and its JSON body)."""
    range_header: str | None = None
    for name, value in scope["headers"]:
        if name in CONDITIONAL_HEADERS:
            return None
        if name == b"range":
            range_header = value.decode("latin-1")
    try:
        wanted = parse_range(range_header, resource.size)
    except Unsatisfiable:
        return None
    start, stop = (wanted.start, wanted.stop) if wanted else (0, resource.size)
    headers = [*resource.headers, (b"content-length", str(stop - start).encode())]
    if wanted is not None:
        headers.append((b"content-range", f"bytes {start}-{stop - 1}/{resource.size}".encode()))
    return Answer(206 if wanted else 200, headers, start, stop, scope["method"] == "HEAD")


def granted(state: Any, scope: Scope, resource_id: str, grant: object = None) -> bool:
    """Whether the request may read the resource; False lets the full route refuse it."""
    authority: TokenAuthority | None = state.token_authority
    if authority is None:
        return True
    try:
        if not isinstance(grant, Grant):
            grant = authority.verify(token_of(HTTPConnection(scope)))
        grant.authorize_download(resource_id)
    except AccessDeniedError:
        return False
    return True


@dataclass(frozen=True)
class ImmediateAnswer:
    """An answer the HTTP protocol can give at once: ``answer``'s bytes are those of ``fd``
    (a kept descriptor of the finished file; -1 when there is no body)."""

    answer: Answer
    fd: int


def answer_now(state: Any, scope: Scope) -> ImmediateAnswer | None:
    """The answer, without waiting, to a request for at most ``INLINE_READ_MAX`` bytes of a
    resource whose headers are cached; None for anything else."""
    resource_id = content_request(scope)
    if resource_id is None:
        return None
    finished_files: FinishedFiles = state.finished_files
    resource = finished_files.get(resource_id)
    if resource is None or not granted(state, scope, resource_id):
        return None
    answer = plan_answer(scope, resource)
    if answer is None or answer.stop - answer.start > INLINE_READ_MAX:
        return None
    if answer.head_only or answer.stop == answer.start:
        return ImmediateAnswer(answer, -1)
    try:
        return ImmediateAnswer(answer, finished_files.descriptor(state.manager, resource_id))
    except OSError:
        return None  # the full route reports it


class CompletedContentFastPath:
    """ASGI middleware answering GET and HEAD of COMPLETED resources' content itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resource_id = content_request(scope)
        state: Any = scope["app"].state
        if resource_id is None or not granted(state, scope, resource_id, scope.get(GRANT_KEY)):
            await self.app(scope, receive, send)
            return
        manager: ResourceManager = state.manager
        finished_files: FinishedFiles = state.finished_files
        resource = await finished_files.load(manager, resource_id)
        answer = plan_answer(scope, resource) if resource is not None else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        start, stop = answer.start, answer.stop
        # A small reply is read before the headers go out, so that a failed read can still
        # become an error answer (the full route's) instead of a broken one.
        first = b""
        if not answer.head_only and stop > start:
            first = await manager.read(resource_id, start, min(stop, start + READ_SIZE))
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": answer.headers})  # fmt: skip
        if answer.head_only:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        offset = start + len(first)
        await send({"type": "http.response.body", "body": first, "more_body": offset < stop})
        while offset < stop:
            data = await manager.read(resource_id, offset, min(stop, offset + READ_SIZE))
            offset += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": offset < stop})
