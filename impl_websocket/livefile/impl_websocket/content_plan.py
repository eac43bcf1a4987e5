"""What a GET or HEAD of ``/resources/{id}/content`` answers: the one planner, without I/O.

The rule every answer keeps: no HTTP client that trusts status codes and body framing (curl,
wget, aria2c, with or without resuming) can end with a wrong or silently truncated file and
believe it complete. So a growing resource is never cut at its published size: a body that
reaches past it waits for the bytes (and is dropped, unfinished, if the resource fails or ends
short of it); an open-ended range of a growing resource is a 206 that ends with the resource
(RFC 8673's "very large" last position with an unknown length); and a FAILED resource is a 409
whose body is cut short, unless the client asks for the bytes it left with ``?partial=true``
(which also asks for a growing resource's published bytes, no waiting).

Every way a content request is served — the full route (``http_content.py``), the ASGI fast path
and the HTTP protocol's immediate answers (``http_fast_content.py``, ``server.py``) — asks
``plan_content`` and delivers the ``ContentPlan`` it returns; the fast paths deliver only plans
they can (a bounded range, or a 304), and pass everything else to the full route, which delivers
the same plan the slow way. No decision about status codes, ranges or headers is made anywhere
else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
from livefile.impl_websocket.presentation import Disposition, presentation_of

STATUS_HEADER = "X-Livefile-Transfer-Status"
SIZE_HEADER = "X-Livefile-Current-Size"
REVISION_HEADER = "X-Livefile-Revision"
NEXT_LINE_HEADER = "X-Livefile-Next-Line"  # of /lines pages
DISPOSITION = "Content-Disposition"
_CONDITIONAL_KEPT = ("ETag", "Last-Modified", "Cache-Control", STATUS_HEADER)
# RFC 8673's "very large" position (2^53): past anything a resource reaches, so a range that
# ends there (or has no end) of a growing resource means "until it ends".
LIVE_END = 2**53


@dataclass(frozen=True)
class ContentRequest:
    """The parts of a request that decide its answer."""

    head_only: bool = False
    follow: bool = False
    partial: bool = False  # a FAILED resource's bytes, a growing one's published bytes at once
    range: str | None = None
    if_range: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    disposition: Disposition | None = None  # forces inline or attachment (?disposition=)

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
    filename: str = ""
    disposition: Disposition = Disposition.ATTACHMENT

    @classmethod
    def of(cls, entry: CatalogEntry, status: ResourceStatus) -> ResourceFacts:
        presentation = presentation_of(entry.metadata)
        filename = entry.metadata.filename
        headers = {
            "Content-Type": presentation.content_type,
            DISPOSITION: content_disposition(filename, presentation.disposition),
            **presentation.headers(),
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
        return cls(status, entry.updated_at, headers, encoded, filename, presentation.disposition)


@dataclass(frozen=True)
class ContentPlan:
    """The answer: ``status`` with ``headers`` (the facts' own, then ``extra``), and the bytes
    ``[start, stop)`` — or, with ``stop`` None, every byte from ``start`` on as the resource
    grows. ``waits``: the bytes are delivered as they are published, and the answer is dropped
    unfinished if the resource fails or ends before ``stop`` (or before ``start``, with no
    ``stop``). ``problem`` is the JSON body of a 409 or 416; ``cut_short``: the connection is
    dropped after it, without the body's end, so that a client that ignores status codes
    (curl without ``--fail``) still fails."""

    status: int
    facts: ResourceFacts
    extra: dict[str, str]
    start: int = 0
    stop: int | None = 0
    head_only: bool = False
    problem: dict[str, Any] | None = None
    only: tuple[str, ...] | None = None  # a 304 keeps only these of the facts' headers
    waits: bool = False
    cut_short: bool = False

    @property
    def follows(self) -> bool:
        """The body has no length known in advance (chunked)."""
        return self.waits and self.stop is None

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
                if name not in ("Content-Type", DISPOSITION)
            }
        return {**base, **self.extra}

    def encoded_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as the HTTP protocol writes them (the facts' part encoded once)."""
        assert self.only is None
        assert self.problem is None
        extra = [(name.lower().encode(), value.encode()) for name, value in self.extra.items()]
        facts = self.facts.encoded
        if DISPOSITION in self.extra:  # forced: it replaces the facts' own
            facts = [(name, value) for name, value in facts if name != b"content-disposition"]
        return [*facts, *extra]


def plan_content(facts: ResourceFacts, request: ContentRequest) -> ContentPlan:
    """The answer to ``request`` about a resource described by ``facts`` (RFC 9110 ranges and
    conditionals; see the module's docstring and docs/protocol.md for growing and FAILED
    resources), with the disposition the request forces, if any (``presentation.py``)."""
    plan = _plan(facts, request)
    forced = request.disposition
    if forced in (None, facts.disposition) or plan.problem is not None or plan.only:
        return plan
    disposition = content_disposition(facts.filename, forced)
    return replace(plan, extra={**plan.extra, DISPOSITION: disposition})


def _plan(facts: ResourceFacts, request: ContentRequest) -> ContentPlan:
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

    if status.transfer_status is TransferStatus.FAILED and not request.partial:
        return _failed(facts, request.head_only)

    range_header = request.range
    if request.if_range is not None and not _if_range_holds(request.if_range, facts.headers):
        range_header = None
    if growing and (request.follow or not request.partial):
        return _live(facts, range_header, request.head_only)

    # What is there now: a finished resource, or (``partial``) a growing one's published bytes.
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        if growing:
            return _unsatisfiable(
                facts,
                "bytes */*",
                f"The resource is still growing: {size} bytes are readable so far;"
                " ask again later, or without ?partial=true to wait for the bytes",
            )
        return _unsatisfiable(facts, f"bytes */{size}", f"The range is not within the {size} bytes")
    if wanted is None:
        return ContentPlan(200, facts, {"Content-Length": str(size)}, 0, size, request.head_only)
    total = "*" if growing else str(size)
    extra = {
        "Content-Range": f"bytes {wanted.start}-{wanted.stop - 1}/{total}",
        "Content-Length": str(wanted.length),
    }
    return ContentPlan(206, facts, extra, wanted.start, wanted.stop, request.head_only)


def _live(facts: ResourceFacts, range_header: str | None, head_only: bool) -> ContentPlan:
    """A growing resource: what the client asked for, the bytes waited for as they come.

    No range (or one that is ignored): 200 with every byte from 0 until the resource ends.
    ``bytes=N-``: 206 ``bytes N-<LIVE_END - 1>/*`` until the resource ends — the last position
    is RFC 8673's "very large" one, because a smaller guess would make wget think the file ends
    there; curl reads only the first position, and wget asks again from where the stream ended,
    which a finished resource answers with 416 (nothing left: wget keeps the file as complete).
    ``bytes=a-b``: 206 ``bytes a-b/*``, at once when ``b`` is published, else waited for.
    A suffix range (``bytes=-n``) cannot be placed before the end is known: it is ignored."""
    size = facts.status.current_size
    following = {"X-Accel-Buffering": "no"}
    wanted = None
    if range_start(range_header) is not None:  # not a suffix range
        try:
            wanted = parse_range(range_header, LIVE_END)
        except Unsatisfiable:
            return _unsatisfiable(
                facts, "bytes */*", f"No resource reaches byte {range_start(range_header)}"
            )
    if wanted is None:
        return ContentPlan(200, facts, following, 0, None, head_only, waits=True)
    if wanted.stop >= LIVE_END:  # bytes=N- (or a last position as large as RFC 8673's)
        extra = {**following, "Content-Range": f"bytes {wanted.start}-{LIVE_END - 1}/*"}
        return ContentPlan(206, facts, extra, wanted.start, None, head_only, waits=True)
    extra = {
        "Content-Range": f"bytes {wanted.start}-{wanted.stop - 1}/*",
        "Content-Length": str(wanted.length),
    }
    if wanted.stop <= size:
        return ContentPlan(206, facts, extra, wanted.start, wanted.stop, head_only)
    extra.update(following)
    return ContentPlan(206, facts, extra, wanted.start, wanted.stop, head_only, waits=True)


def _failed(facts: ResourceFacts, head_only: bool) -> ContentPlan:
    status = facts.status
    reason = f" ({status.error.message})" if status.error else ""
    problem = {
        "detail": f"The upload failed{reason}: its {status.current_size} bytes are not the whole"
        " file; add ?partial=true to download them anyway",
        "currentSize": status.current_size,
        "transferStatus": status.transfer_status.value,
    }
    return ContentPlan(409, facts, {}, problem=problem, head_only=head_only, cut_short=True)


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
