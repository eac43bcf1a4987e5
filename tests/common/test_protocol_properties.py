"""Property tests (hypothesis) of the client-side protocol machines: whatever the server sends,
each machine ends in a defined state or raises a livefile error, and a server that keeps the
protocol has every reply matched to its request."""

from __future__ import annotations

import json
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from livefile.api.errors import LivefileError
from livefile.api.messages import Error, Lines, StatusChanged
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.impl_common.download_protocol import (
    ChunkRequest,
    ConnectionEnding,
    DownloadClientProtocol,
    Event,
    LinesPage,
    LinesRequest,
    ReplyReceived,
    RequestFailed,
    StatusReceived,
)
from livefile.impl_common.upload_protocol import UploadClientProtocol, UploadPhase

RESOURCE = "a" * 32


def status_text(size: int, transfer: TransferStatus = TransferStatus.IN_PROGRESS) -> str:
    status = ResourceStatus(transfer_status=transfer, current_size=size)
    return StatusChanged(resource_status=status).to_json()


# A request the client makes: ("chunk", length) or ("lines", count); how the server answers:
# "ok" (the data split at the given cuts, or the lines) or "error".
requests = st.lists(
    st.tuples(
        st.sampled_from(["chunk", "lines"]),
        st.integers(min_value=0, max_value=300),
        st.sampled_from(["ok", "error"]),
        st.lists(st.integers(min_value=1, max_value=300), max_size=4),
    ),
    max_size=8,
)


@given(requests=requests, statuses=st.lists(st.integers(0, 10_000), max_size=12))
def test_a_server_keeping_the_protocol_has_every_reply_matched_in_order(
    requests: list[tuple[str, int, str, list[int]]], statuses: list[int]
) -> None:
    machine = DownloadClientProtocol(RESOURCE)
    sent: list[tuple[ChunkRequest | LinesRequest, object]] = []
    frames: list[str | bytes] = []
    status_iter = iter(statuses)
    for kind, size, answer, cuts in requests:
        if kind == "chunk":
            chunk, _ = machine.request_chunk(1000, 1000 + size)
            data = bytes(index % 251 for index in range(size))
            expected: object = data
            if answer == "ok":
                points = sorted({0, size, *(cut for cut in cuts if cut < size)})
                pieces = [data[a:b] for a, b in pairwise(points)] or [b""]
                for piece in pieces:
                    frames.append(piece)
                    # Statuses may arrive between the pieces of one reply.
                    if (next_status := next(status_iter, None)) is not None:
                        frames.append(status_text(next_status))
            sent.append((chunk, expected if answer == "ok" else "error"))
            request_id = chunk.request_id
        else:
            lines_request, _ = machine.request_lines(0, size)
            lines = [f"line {index}\n" for index in range(size % 7)]
            if answer == "ok":
                frames.append(Lines(lines=lines, request_id=lines_request.request_id).to_json())
            sent.append((lines_request, lines if answer == "ok" else "error"))
            request_id = lines_request.request_id
        if answer == "error":
            frames.append(Error(code="BAD_RANGE", message="no", request_id=request_id).to_json())
    replies: list[tuple[object, object]] = []
    newest = -1
    for frame in frames:
        event = (
            machine.receive_data(frame) if isinstance(frame, bytes) else machine.receive_text(frame)
        )
        if isinstance(event, ReplyReceived):
            value = event.value
            replies.append((event.request, value.lines if isinstance(value, LinesPage) else value))
        elif isinstance(event, RequestFailed):
            replies.append((event.request, "error"))
        elif isinstance(event, StatusReceived):
            assert event.status.current_size > newest  # only newer statuses come out
            newest = event.status.current_size
    assert replies == sent
    assert machine.pending == 0


# Anything a broken or hostile server might send.
hostile_frames = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40),
    st.builds(status_text, st.integers(0, 100), st.sampled_from(list(TransferStatus))),
    st.builds(
        lambda request_id, count: Lines(lines=["x\n"] * count, request_id=request_id).to_json(),
        st.one_of(st.none(), st.integers(0, 5), st.text(max_size=3)),
        st.integers(0, 3),
    ),
    st.builds(
        lambda code, request_id: Error(code=code, message="m", request_id=request_id).to_json(),
        st.sampled_from(["NOT_FOUND", "BAD_RANGE", "BAD_REQUEST"]),
        st.one_of(st.none(), st.integers(0, 5)),
    ),
    st.sampled_from(['{"@":"Hello"}', "[]", '{"@":"RequestChunk"}', "null", '{"@":1}']),
)


@given(
    requests=st.lists(st.tuples(st.booleans(), st.integers(0, 8)), max_size=4),
    frames=st.lists(hostile_frames, max_size=12),
)
def test_any_frames_give_defined_events_or_a_livefile_error(
    requests: list[tuple[bool, int]], frames: list[str | bytes]
) -> None:
    machine = DownloadClientProtocol(RESOURCE)
    for is_chunk, size in requests:
        if is_chunk:
            machine.request_chunk(0, size)
        else:
            machine.request_lines(0, size)
    for frame in frames:
        before = machine.pending
        event: Event | None
        try:
            if isinstance(frame, bytes):
                event = machine.receive_data(frame)
            else:
                event = machine.receive_text(frame)
        except LivefileError:
            return  # the connection ends with this error; nothing else may escape
        assert event is None or isinstance(
            event, StatusReceived | ReplyReceived | RequestFailed | ConnectionEnding
        )
        # A reply answers exactly one request; nothing else changes the FIFO.
        answered = isinstance(event, ReplyReceived | RequestFailed)
        assert machine.pending == before - (1 if answered else 0)


upload_server_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            '{"@":"ReadyForUpload","reference":{"uri":"ws://h/ws/streaming/download/x"}}',
            status_text(5),
            '{"@":"UploadAcknowledged","size":5,"checksum":"c"}',
            '{"@":"RequestChunk","startOffset":0,"endOffset":1}',
            json.dumps({"@": "Error", "code": "X", "message": "m"}),
        ]
    ),
)


@given(texts=st.lists(upload_server_texts, max_size=10), finish_at=st.integers(0, 10))
def test_upload_client_machine_any_sequence_is_a_defined_phase_or_a_livefile_error(
    texts: list[str], finish_at: int
) -> None:
    machine = UploadClientProtocol()
    for position, text in enumerate(texts):
        if position == finish_at and machine.phase is UploadPhase.UPLOADING:
            machine.finishing()
        before = machine.phase
        try:
            machine.receive_text(text)
        except LivefileError:
            assert machine.phase is before  # a refused message changes nothing
            return
        assert isinstance(machine.phase, UploadPhase)
