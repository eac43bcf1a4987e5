"""The client side of a download connection as a sans-I/O state machine.

It turns what the server sends into events — a newer status, the reply to a request, the
reason the server is about to close — and builds the requests to send. It knows nothing of
sockets or event loops, so that every ordering rule can be tested without a server.

The server answers requests strictly in the order it received them, so the pending requests
form a FIFO: binary messages fill the chunk request at its head until exactly the requested
number of bytes has arrived (one empty message for an empty range), and an ``Error`` or
``Lines`` message answers the request at its head. Statuses may arrive at any moment, even
between two binary messages of one reply.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from livefile.api.errors import (
    LivefileError,
    ProtocolError,
    RequestError,
    ResourceNotFoundError,
    UnknownMessageTypeError,
)
from livefile.api.messages import (
    Error,
    Lines,
    RequestChunk,
    RequestLines,
    StatusChanged,
    parse_message,
)
from livefile.api.model import ResourceStatus

NOT_FOUND = "NOT_FOUND"


@dataclass(eq=False)
class ChunkRequest:
    """``RequestChunk{start, end}`` in flight; collects the binary messages of its reply.
    ``joined``: the reply is one ``bytes``; otherwise the list of its messages, which spares a
    reader that takes them one by one (``iter_bytes``) the copy of joining them."""

    request_id: int
    start: int
    end: int
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    joined: bool = True

    @property
    def expected(self) -> int:
        return self.end - self.start


@dataclass(eq=False)
class LinesRequest:
    """``RequestLines{start, count}`` in flight; answered by one ``Lines`` message."""

    request_id: int
    start: int
    count: int


Request = ChunkRequest | LinesRequest


@dataclass(frozen=True)
class StatusReceived:
    """A status newer than every status before it."""

    status: ResourceStatus


@dataclass(frozen=True)
class LinesPage:
    """One ``Lines`` reply: ``lines`` from line ``start`` (lines are numbered from 0).

    ``next_start`` is where the next page starts; ``more`` says whether lines from there can be
    read now, ``growing`` whether the resource had not ended when the page was read (lines may
    still come after the last one); ``number_of_lines`` is how many were published then. A
    server that does not say (step-streaming's) gets them from the request and the newest
    status this client has."""

    start: int
    lines: list[str]
    next_start: int
    more: bool
    growing: bool
    number_of_lines: int | None = None

    @property
    def complete(self) -> bool:
        """Whether no line will ever follow this page: the resource ended and it was read to
        its last line."""
        return not (self.more or self.growing)


@dataclass(frozen=True)
class ReplyReceived:
    """The whole reply to ``request``: bytes for a chunk (its messages' list unless the request
    asked them joined), a ``LinesPage`` for a lines request."""

    request: Request
    value: bytes | list[bytes] | LinesPage


@dataclass(frozen=True)
class RequestFailed:
    """The server answered ``request`` with an ``Error``; the connection stays usable."""

    request: Request
    error: RequestError


@dataclass(frozen=True)
class ConnectionEnding:
    """The server said why it is about to close (e.g. an unknown resource)."""

    error: LivefileError


Event = StatusReceived | ReplyReceived | RequestFailed | ConnectionEnding


class DownloadClientProtocol:
    """What a download client sends and receives, and which reply belongs to which request."""

    def __init__(self, resource_id: str) -> None:
        self.resource_id = resource_id
        self.status: ResourceStatus | None = None
        self._pending: deque[Request] = deque()
        self._next_id = 1

    @property
    def pending(self) -> int:
        """The number of requests sent and not answered yet."""
        return len(self._pending)

    def request_chunk(self, start: int, end: int, joined: bool = True) -> tuple[ChunkRequest, str]:
        """Register a request for bytes ``[start, end)``; returns it and the text to send.

        The range is not checked here: the server judges it against its latest status, which
        may be newer than ours, and answers a bad one with ``Error{BAD_RANGE}``.
        """
        request = ChunkRequest(self._take_id(), start, end, joined=joined)
        self._pending.append(request)
        message = RequestChunk(start_offset=start, end_offset=end, request_id=request.request_id)
        return request, message.to_json()

    def request_lines(self, start: int, count: int) -> tuple[LinesRequest, str]:
        """Register a request for ``count`` lines from ``start``; returns it and the text."""
        request = LinesRequest(self._take_id(), start, count)
        self._pending.append(request)
        message = RequestLines(
            starting_line_index=start, lines_count=count, request_id=request.request_id
        )
        return request, message.to_json()

    def receive_data(self, data: bytes) -> ReplyReceived | None:
        """A binary message: part of the reply to the chunk request at the head of the FIFO.
        Returns the reply once it is whole. Raises ``ProtocolError`` on a stray message."""
        head = self._pending[0] if self._pending else None
        if not isinstance(head, ChunkRequest):
            raise ProtocolError("Binary data arrived while no chunk request was waiting for it")
        head.received += len(data)
        if head.received > head.expected:
            raise ProtocolError(
                f"The server sent {head.received} bytes for a request of {head.expected}"
            )
        head.parts.append(data)
        if head.received < head.expected:
            return None
        self._pending.popleft()
        parts, head.parts = head.parts, []
        if not head.joined:
            return ReplyReceived(head, parts)
        return ReplyReceived(head, parts[0] if len(parts) == 1 else b"".join(parts))

    def receive_text(self, text: str) -> Event | None:
        """A control message. Returns its event, or None for a message that changes nothing
        (a status that is not newer, a message type this client does not know)."""
        try:
            message = parse_message(text)
        except UnknownMessageTypeError:
            # The protocol may grow new messages (DESIGN.md); one this client never asked for
            # cannot be a reply, so skipping it keeps the request order intact.
            return None
        if isinstance(message, StatusChanged):
            return self._receive_status(message.resource_status)
        if isinstance(message, Error):
            return self._receive_error(message)
        if isinstance(message, Lines):
            head = self._head_for(message.request_id, "Lines")
            if not isinstance(head, LinesRequest):
                raise ProtocolError("Lines arrived while a chunk request was waiting for data")
            self._pending.popleft()
            return ReplyReceived(head, self._page(head, message))
        raise ProtocolError(f"Unexpected {message.kind} on a download connection")

    def drain(self) -> list[Request]:
        """Every request still waiting, oldest first; the FIFO is empty afterwards (the
        connection ended and none of them will be answered)."""
        pending = list(self._pending)
        self._pending.clear()
        return pending

    def _page(self, request: LinesRequest, message: Lines) -> LinesPage:
        start = message.starting_line_index
        if start is None:
            start = request.start
        next_start = message.next_line_index
        if next_start is None:
            next_start = start + len(message.lines)
        total = message.number_of_lines
        if total is None and self.status is not None:
            total = self.status.number_of_lines
        more = message.more
        if more is None:
            more = total is not None and next_start < total
        growing = message.growing
        if growing is None:
            growing = self.status is None or not self.status.is_terminal
        return LinesPage(start, message.lines, next_start, more, growing, total)

    def _receive_status(self, status: ResourceStatus) -> StatusReceived | None:
        # The server promises order; should an older status still arrive (say, from a replica
        # lagging behind), dropping it keeps the promise to our own listeners.
        if self.status is not None and not status.is_newer_than(self.status):
            return None
        self.status = status
        return StatusReceived(status)

    def _receive_error(self, message: Error) -> RequestFailed | ConnectionEnding:
        if message.code == NOT_FOUND and message.request_id is None and not self._pending:
            return ConnectionEnding(ResourceNotFoundError(f"Unknown resource {self.resource_id}"))
        head = self._head_for(message.request_id, "Error")
        self._pending.popleft()
        return RequestFailed(head, RequestError(message.code, message.message))

    def _head_for(self, request_id: str | int | None, kind: str) -> Request:
        """The request that a reply of ``kind`` answers: the head of the FIFO. A reply naming
        another request id means the order is lost, and no later reply can be trusted."""
        if not self._pending:
            raise ProtocolError(f"{kind} arrived while no request was waiting for it")
        head = self._pending[0]
        if isinstance(head, ChunkRequest) and head.received:
            raise ProtocolError(f"{kind} arrived in the middle of the data of a chunk reply")
        if request_id is not None and request_id != head.request_id:
            raise ProtocolError(
                f"{kind} for request {request_id!r} arrived while request"
                f" {head.request_id} was the next to be answered"
            )
        return head

    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id
