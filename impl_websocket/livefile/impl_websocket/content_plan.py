"""What a GET or HEAD of ``/resources/{id}/content`` answers: the one planner, without I/O.

Every way a content request is served — the full route (``http_content.py``), the ASGI fast path
and the HTTP protocol's immediate answers (``http_fast_content.py``, ``server.py``) — asks
``plan_content`` and delivers the ``ContentPlan`` it returns; the fast paths deliver only plans
they can (a bounded range, or a 304), and pass everything else to the full route, which delivers
the same plan the slow way. No decision about status codes, ranges or headers is made anywhere
else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.impl_common.http_ranges import (
    Unsatisfiable,
    content_disposition,
    etag_matches,
    http_date,
    not_modified_since,
    parse_range,
    range_start,
)

STATUS_HEADER = "X-Livefile-Transfer-Status"
SIZE_HEADER = "X-Livefile-Current-Size"
REVISION_HEADER = "X-Livefile-Revision"
_CONDITIONAL_KEPT = ("ETag", "Last-Modified", "Cache-Control", STATUS_HEADER)


@dataclass(frozen=True)
class ContentRequest:
    """The parts of a request that decide its answer."""

    head_only: bool = False
    follow: bool = False
    range: str | None = None
    if_range: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None

    @property
    def conditional(self) -> bool:
        return (self.if_range or self.if_none_match or self.if_modified_since) is not None


@dataclass(frozen=True)
class ResourceFacts:
    """What every answer about a resource at one status shares (built once per finished
    resource and kept by the fast path)."""

    status: ResourceStatus
    updated_at: float
    headers: dict[str, str]
    encoded: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def of(cls, entry: CatalogEntry, status: ResourceStatus) -> ResourceFacts:
        headers = {
            "Content-Type": entry.metadata.mime_type,
            "Content-Disposition": content_disposition(entry.metadata.filename),
            "Accept-Ranges": "bytes",
            STATUS_HEADER: status.transfer_status.value,
            SIZE_HEADER: str(status.current_size),
            "Cache-Control": "no-cache",
        }
        if status.revision is not None:
            headers[REVISION_HEADER] = str(status.revision)
        if status.transfer_status is TransferStatus.COMPLETED:
            headers["Last-Modified"] = http_date(entry.updated_at)
            if entry.checksum:
                headers["ETag"] = f'"{entry.checksum}"'
        encoded = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ]
        return cls(status, entry.updated_at, headers, encoded)


@dataclass(frozen=True)
class ContentPlan:
    """The answer: ``status`` with ``headers`` (the facts' own, then ``extra``), and the bytes
    ``[start, stop)`` — or, with ``stop`` None, every byte from ``start`` on as the resource
    grows. ``problem`` is the JSON body of a 416."""

    status: int
    facts: ResourceFacts
    extra: dict[str, str]
    start: int = 0
    stop: int | None = 0
    head_only: bool = False
    problem: dict[str, Any] | None = None
    only: tuple[str, ...] | None = None  # a 304 keeps only these of the facts' headers

    @property
    def follows(self) -> bool:
        return self.stop is None

    @property
    def length(self) -> int:
        return 0 if self.stop is None else self.stop - self.start

    def headers(self) -> dict[str, str]:
        base = self.facts.headers
        if self.only is not None:
            base = {name: value for name, value in base.items() if name in self.only}
        elif self.problem is not None:  # the body is JSON, not the resource
            base = {
                name: value
                for name, value in base.items()
                if name not in ("Content-Type", "Content-Disposition")
            }
        return {**base, **self.extra}

    def encoded_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as the HTTP protocol writes them (the facts' part encoded once)."""
        assert self.only is None
        assert self.problem is None
        extra = [(name.lower().encode(), value.encode()) for name, value in self.extra.items()]
        return [*self.facts.encoded, *extra]


def plan_content(facts: ResourceFacts, request: ContentRequest) -> ContentPlan:
    """The answer to ``request`` about a resource described by ``facts`` (RFC 9110 ranges and
    conditionals; a growing resource served up to its published size or followed)."""
    status = facts.status
    size = status.current_size
    growing = not status.is_terminal
    etag = facts.headers.get("ETag")

    if status.transfer_status is TransferStatus.COMPLETED and (
        (etag and etag_matches(request.if_none_match, etag))
        or (
            request.if_none_match is None
            and not_modified_since(request.if_modified_since, facts.updated_at)
        )
    ):
        return ContentPlan(304, facts, {}, head_only=True, only=_CONDITIONAL_KEPT)

    range_header = request.range
    if request.if_range is not None and not _if_range_holds(request.if_range, facts.headers):
        range_header = None
    start_beyond = None
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        if growing and not request.follow:
            return _unsatisfiable(
                facts,
                "bytes */*",
                f"The resource is still growing: {size} bytes are readable so far;"
                " ask again later or add ?follow=true to wait for the bytes",
            )
        if not growing:
            return _unsatisfiable(
                facts, f"bytes */{size}", f"The range is not within the {size} bytes"
            )
        wanted = None  # follow from a start the resource has not reached yet
        start_beyond = range_start(range_header)

    if growing and (request.follow or wanted is None):
        start = start_beyond if start_beyond is not None else (wanted.start if wanted else 0)
        extra = {"X-Accel-Buffering": "no"}
        return ContentPlan(200, facts, extra, start, None, request.head_only)

    if wanted is None:
        return ContentPlan(200, facts, {"Content-Length": str(size)}, 0, size, request.head_only)
    total = "*" if growing else str(size)
    extra = {
        "Content-Range": f"bytes {wanted.start}-{wanted.stop - 1}/{total}",
        "Content-Length": str(wanted.length),
    }
    return ContentPlan(206, facts, extra, wanted.start, wanted.stop, request.head_only)


def _if_range_holds(if_range: str, headers: dict[str, str]) -> bool:
    """RFC 9110 13.1.5: the range applies only if the validator still identifies the file."""
    etag = headers.get("ETag")
    if if_range.strip().startswith(('"', "W/")):
        return etag is not None and etag_matches(if_range, etag, weak=False)
    return if_range.strip() == headers.get("Last-Modified")


def _unsatisfiable(facts: ResourceFacts, content_range: str, detail: str) -> ContentPlan:
    problem = {
        "detail": detail,
        "currentSize": facts.status.current_size,
        "transferStatus": facts.status.transfer_status.value,
    }
    return ContentPlan(416, facts, {"Content-Range": content_range}, problem=problem)
