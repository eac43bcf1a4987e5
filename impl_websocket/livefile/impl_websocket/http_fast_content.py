"""The hot path of a file server: whole files and single ranges of COMPLETED resources, served
straight from ASGI ahead of FastAPI's routing and dependency resolution.

A finished resource never changes (rule 2), so its ``ResourceFacts`` (headers encoded once) are
kept; a request then costs a dictionary lookup, the plan (``content_plan.plan_content``, the same
planner the full route asks) and one positional read. Once a resource's facts are cached,
``answer_now`` lets the HTTP protocol itself (``server.py``) answer small requests for it
synchronously, in one write, without an ASGI task at all. Only plans with a bounded body or a
304 are delivered here; everything else — growing or FAILED resources, unknown ids, unsatisfiable
ranges, follow mode, a token that does not grant the resource — passes through untouched to the
routes of ``http_content.py``, which deliver the same planner's plan and are the reference for
the OpenAPI description. The answers are the same either way; only the cost differs (random
64 KiB range reads spent most of their time in routing, dependency resolution and header
building).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from livefile.api.errors import AccessDeniedError
from livefile.api.model import TransferStatus
from livefile.impl_common.lru import LruCache
from livefile.impl_server.access import Grant, TokenAuthority
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.reader import INLINE_READ_MAX, READ_PIECE, Reader
from livefile.impl_websocket.access import GRANT_KEY, token_of
from livefile.impl_websocket.content_plan import (
    ContentPlan,
    ContentRequest,
    ResourceFacts,
    plan_content,
)
from livefile.impl_websocket.presentation import forced_disposition

CONTENT_PATH = re.compile(r"/resources/([0-9a-f]{32})/content")
RESOURCES_CACHED = 4096
DESCRIPTORS_KEPT = 64


class FinishedFiles:
    """The facts of COMPLETED resources, and a few open descriptors of their files (bounded,
    least recently used out first; a finished file never changes)."""

    def __init__(self, capacity: int = RESOURCES_CACHED) -> None:
        self._facts: LruCache[str, tuple[ResourceFacts, Reader]] = LruCache(capacity)
        self._descriptors: LruCache[str, int] = LruCache(DESCRIPTORS_KEPT)

    def descriptor(self, resource_id: str) -> int:
        """An open read-only descriptor of a cached resource's file (its reader's), kept for
        the next request; only used without yielding to the loop, so closing one pushed out
        is always safe."""
        fd = self._descriptors.get(resource_id)
        if fd is not None:
            return fd
        cached = self._facts.get(resource_id)
        if cached is None:
            raise OSError(f"resource {resource_id} is not cached")
        fd = cached[1].open_fd()
        if (pushed_out := self._descriptors.put(resource_id, fd)) is not None:
            os.close(pushed_out)
        return fd

    def forget(self, resource_id: str) -> None:
        """Drop a deleted resource: its facts, and its descriptor (which would keep serving,
        and keep on disk, the bytes of a file no longer there)."""
        self._facts.pop(resource_id)
        fd = self._descriptors.pop(resource_id)
        if fd is not None:
            os.close(fd)

    def get(self, resource_id: str) -> ResourceFacts | None:
        cached = self._facts.get(resource_id)
        return cached[0] if cached is not None else None

    async def load(
        self, manager: ResourceManager, resource_id: str
    ) -> tuple[ResourceFacts, Reader] | None:
        if (cached := self._facts.get(resource_id)) is not None:
            return cached
        reader = await manager.reader(resource_id)
        if reader is None or reader.entry.status.transfer_status is not TransferStatus.COMPLETED:
            return None
        loaded = (ResourceFacts.of(reader.entry, reader.entry.status), reader)
        self._facts.put(resource_id, loaded)
        return loaded


@dataclass(frozen=True)
class Answer:
    """A plan the fast paths deliver: bytes ``[start, stop)`` of a finished resource."""

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


def plan_answer(scope: Scope, facts: ResourceFacts) -> Answer | None:
    """The plan for ``scope``, when a fast path can deliver it (a bounded body or a 304);
    None when the full route must (a 416 and its JSON body)."""
    wanted: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _PLANNED_HEADERS:
            wanted[name] = value.decode("latin-1")
    disposition = None
    if b"disposition" in scope["query_string"]:
        try:
            disposition = forced_disposition(_query_value(scope, "disposition"))
        except ValueError:
            return None  # the full route refuses it (422)
    plan = plan_content(
        facts,
        ContentRequest(
            head_only=scope["method"] == "HEAD",
            range=wanted.get(b"range"),
            if_range=wanted.get(b"if-range"),
            if_none_match=wanted.get(b"if-none-match"),
            if_modified_since=wanted.get(b"if-modified-since"),
            disposition=disposition,
        ),
    )
    return _deliverable(plan)


def _query_value(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope["query_string"].decode("latin-1")).get(name)
    return values[-1] if values else None


_PLANNED_HEADERS = frozenset({b"range", b"if-range", b"if-none-match", b"if-modified-since"})


def _deliverable(plan: ContentPlan) -> Answer | None:
    if plan.problem is not None or plan.waits or plan.stop is None:
        return None
    if plan.only is not None:  # 304: the kept headers, no body
        headers = [(k.lower().encode(), v.encode()) for k, v in plan.headers().items()]
        return Answer(plan.status, headers, 0, 0, True)
    return Answer(plan.status, plan.encoded_headers(), plan.start, plan.stop, plan.head_only)


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


def needs_asgi(state: Any, scope: Scope) -> bool:
    """Whether a request must go through the ASGI middleware rather than be answered at once:
    every request while tracing is on (each is a span), and one from a browser page (it
    carries an ``Origin``) while CORS is on, so that ``CORSMiddleware`` alone decides its
    headers."""
    if state.tracing_on:
        return True
    return bool(state.cors_on) and any(name == b"origin" for name, _ in scope["headers"])


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
    if resource_id is None or needs_asgi(state, scope):
        return None
    finished_files: FinishedFiles = state.finished_files
    facts = finished_files.get(resource_id)
    if facts is None or not granted(state, scope, resource_id):
        return None
    answer = plan_answer(scope, facts)
    if answer is None or answer.stop - answer.start > INLINE_READ_MAX:
        return None
    if answer.head_only or answer.stop == answer.start:
        return ImmediateAnswer(answer, -1)
    try:
        return ImmediateAnswer(answer, finished_files.descriptor(resource_id))
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
        loaded = await finished_files.load(manager, resource_id)
        answer = plan_answer(scope, loaded[0]) if loaded is not None else None
        if answer is None or loaded is None:
            await self.app(scope, receive, send)
            return
        reader = loaded[1]
        start, stop = answer.start, answer.stop
        # A small reply is read before the headers go out, so that a failed read can still
        # become an error answer (the full route's) instead of a broken one.
        first = b""
        if not answer.head_only and stop > start:
            first = await reader.read_published(start, min(stop, start + READ_PIECE))
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": answer.headers})  # fmt: skip
        if answer.head_only:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        offset = start + len(first)
        await send({"type": "http.response.body", "body": first, "more_body": offset < stop})
        async for data in reader.iter_published(offset, stop):
            offset += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": offset < stop})
