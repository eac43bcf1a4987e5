"""``plan_content``, the one planner of every content answer, case by case (no I/O): a growing
resource is never cut at its published size, a FAILED one is a cut-short 409 unless
``?partial=true`` asks for its bytes (docs/protocol.md, HTTP)."""

from __future__ import annotations

import pytest

from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceError, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_websocket.content_plan import (
    LIVE_END,
    ContentPlan,
    ContentRequest,
    ResourceFacts,
    plan_content,
)

PUBLISHED = 1000


def facts(transfer: TransferStatus, size: int = PUBLISHED) -> ResourceFacts:
    error = (
        ResourceError(code="disconnected", message="gone") if transfer.value == "FAILED" else None
    )
    status = ResourceStatus(transfer_status=transfer, current_size=size, error=error)
    entry = CatalogEntry(
        resource_id="0" * 32,
        metadata=ResourceMetadata(filename="a.bin", mime_type="application/octet-stream"),
        status=status,
        upload_context_id=None,
        checksum="abc" if transfer is TransferStatus.COMPLETED else None,
        created_at=0.0,
        updated_at=0.0,
    )
    return ResourceFacts.of(entry, status)


def plan(
    transfer: TransferStatus,
    range_: str | None = None,
    *,
    follow: bool = False,
    partial: bool = False,
    head_only: bool = False,
) -> ContentPlan:
    request = ContentRequest(head_only=head_only, follow=follow, partial=partial, range=range_)
    return plan_content(facts(transfer), request)


@pytest.mark.parametrize("follow", [False, True])
def test_growing_without_range_is_followed_from_the_start(follow: bool) -> None:
    answer = plan(TransferStatus.IN_PROGRESS, follow=follow)
    assert (answer.status, answer.start, answer.stop, answer.waits) == (200, 0, None, True)
    assert "Content-Length" not in answer.headers()


@pytest.mark.parametrize("follow", [False, True])
@pytest.mark.parametrize("start", [500, PUBLISHED, 5000])
def test_growing_open_range_is_a_206_to_the_end_with_an_unknown_length(
    follow: bool, start: int
) -> None:
    answer = plan(TransferStatus.IN_PROGRESS, f"bytes={start}-", follow=follow)
    assert (answer.status, answer.start, answer.stop, answer.waits) == (206, start, None, True)
    assert answer.headers()["Content-Range"] == f"bytes {start}-{LIVE_END - 1}/*"


def test_growing_bounded_range_within_the_published_bytes_is_answered_at_once() -> None:
    answer = plan(TransferStatus.IN_PROGRESS, "bytes=10-19")
    assert (answer.status, answer.start, answer.stop, answer.waits) == (206, 10, 20, False)
    assert answer.headers()["Content-Range"] == "bytes 10-19/*"


def test_growing_bounded_range_past_the_published_bytes_is_waited_for() -> None:
    answer = plan(TransferStatus.IN_PROGRESS, "bytes=900-1999")
    assert (answer.status, answer.start, answer.stop, answer.waits) == (206, 900, 2000, True)
    assert answer.headers()["Content-Length"] == "1100"
    assert answer.headers()["Content-Range"] == "bytes 900-1999/*"


def test_growing_suffix_range_is_ignored() -> None:
    answer = plan(TransferStatus.IN_PROGRESS, "bytes=-10")
    assert (answer.status, answer.start, answer.stop) == (200, 0, None)


@pytest.mark.parametrize("range_", [None, "bytes=0-", "bytes=10-19", "bytes=-10"])
@pytest.mark.parametrize("head_only", [False, True])
def test_failed_is_a_409_cut_short(range_: str | None, head_only: bool) -> None:
    answer = plan(TransferStatus.FAILED, range_, head_only=head_only)
    assert (answer.status, answer.cut_short, answer.head_only) == (409, True, head_only)
    assert answer.problem is not None
    assert answer.problem["currentSize"] == PUBLISHED
    assert "gone" in answer.problem["detail"]
    assert "?partial=true" in answer.problem["detail"]


def test_failed_with_partial_serves_its_bytes() -> None:
    whole = plan(TransferStatus.FAILED, partial=True)
    assert (whole.status, whole.start, whole.stop) == (200, 0, PUBLISHED)
    part = plan(TransferStatus.FAILED, "bytes=10-", partial=True)
    assert part.headers()["Content-Range"] == f"bytes 10-{PUBLISHED - 1}/{PUBLISHED}"


def test_growing_with_partial_is_what_is_published_now() -> None:
    whole = plan(TransferStatus.IN_PROGRESS, partial=True)
    assert (whole.status, whole.stop, whole.waits) == (200, PUBLISHED, False)
    assert whole.headers()["Content-Length"] == str(PUBLISHED)
    beyond = plan(TransferStatus.IN_PROGRESS, "bytes=5000-", partial=True)
    assert (beyond.status, beyond.headers()["Content-Range"]) == (416, "bytes */*")
    followed = plan(TransferStatus.IN_PROGRESS, "bytes=5000-", partial=True, follow=True)
    assert (followed.status, followed.waits) == (206, True)


def test_completed_is_plain_http() -> None:
    assert plan(TransferStatus.COMPLETED).status == 200
    answer = plan(TransferStatus.COMPLETED, "bytes=10-")
    assert answer.headers()["Content-Range"] == f"bytes 10-{PUBLISHED - 1}/{PUBLISHED}"
    resumed_whole = plan(TransferStatus.COMPLETED, f"bytes={PUBLISHED}-")
    assert (resumed_whole.status, resumed_whole.headers()["Content-Range"]) == (
        416, f"bytes */{PUBLISHED}",
    )  # fmt: skip
