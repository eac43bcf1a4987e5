"""The download client's protocol machine without sockets: which reply belongs to which
request, and which statuses are news."""

from __future__ import annotations

import json

import pytest

from livefile.api import ProtocolError, RequestError, ResourceNotFoundError, ResourceStatus
from livefile.api.model import TransferStatus
from livefile.impl_common.download_protocol import (
    ConnectionEnding,
    DownloadClientProtocol,
    LinesPage,
    ReplyReceived,
    RequestFailed,
    StatusReceived,
)

RESOURCE = "0" * 32


def status_message(transfer_status: str, size: int) -> str:
    return json.dumps(
        {
            "@": "StatusChanged",
            "resourceStatus": {"transferStatus": transfer_status, "currentSize": size},
        }
    )


def error_message(code: str, request_id: int | None) -> str:
    return json.dumps({"@": "Error", "code": code, "message": "nope", "requestId": request_id})


def test_chunk_request_carries_the_range_and_a_request_id() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    _, text = protocol.request_chunk(5, 9)
    assert json.loads(text) == {
        "@": "RequestChunk",
        "startOffset": 5,
        "endOffset": 9,
        "requestId": 1,
    }


def test_binary_messages_fill_the_oldest_request_until_it_has_its_length() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    first, _ = protocol.request_chunk(0, 5)
    second, _ = protocol.request_chunk(5, 7)
    assert protocol.receive_data(b"ab") is None
    assert protocol.receive_data(b"cde") == ReplyReceived(first, b"abcde")
    assert protocol.receive_data(b"fg") == ReplyReceived(second, b"fg")
    assert protocol.pending == 0


def test_a_reply_asked_unjoined_is_the_list_of_its_messages() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    request, _ = protocol.request_chunk(0, 5, joined=False)
    assert protocol.receive_data(b"ab") is None
    assert protocol.receive_data(b"cde") == ReplyReceived(request, [b"ab", b"cde"])


def test_an_empty_range_is_answered_by_one_empty_message() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    empty, _ = protocol.request_chunk(3, 3)
    assert protocol.receive_data(b"") == ReplyReceived(empty, b"")


def test_a_status_between_two_data_messages_does_not_disturb_the_reply() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    request, _ = protocol.request_chunk(0, 4)
    protocol.receive_data(b"ab")
    event = protocol.receive_text(status_message("IN_PROGRESS", 10))
    assert event == StatusReceived(
        ResourceStatus(transfer_status=TransferStatus.IN_PROGRESS, current_size=10)
    )
    assert protocol.receive_data(b"cd") == ReplyReceived(request, b"abcd")


def test_an_error_answers_the_oldest_request_and_later_replies_still_match() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    bad, _ = protocol.request_chunk(9, 1)
    good, _ = protocol.request_chunk(0, 2)
    event = protocol.receive_text(error_message("BAD_RANGE", 1))
    assert isinstance(event, RequestFailed)
    assert event.request is bad
    assert (event.error.code, event.error.reason) == ("BAD_RANGE", "nope")
    assert isinstance(event.error, RequestError)
    assert protocol.receive_data(b"ok") == ReplyReceived(good, b"ok")


def test_lines_answer_a_lines_request() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    request, text = protocol.request_lines(2, 2)
    assert json.loads(text)["startingLineIndex"] == 2
    reply = json.dumps({"@": "Lines", "lines": ["c\n", "d"], "requestId": 1})
    event = protocol.receive_text(reply)
    assert isinstance(event, ReplyReceived)
    assert event.request is request
    assert isinstance(event.value, LinesPage)
    assert (event.value.start, event.value.lines, event.value.next_start) == (2, ["c\n", "d"], 4)


def test_lines_page_says_where_the_next_page_starts_and_whether_more_may_come() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    status = {"transferStatus": "IN_PROGRESS", "currentSize": 9, "numberOfLines": 3}
    protocol.receive_text(json.dumps({"@": "StatusChanged", "resourceStatus": status}))
    protocol.request_lines(0, 100)
    reply = {
        "@": "Lines",
        "lines": ["a\n"],
        "requestId": 1,
        "startingLineIndex": 0,
        "nextLineIndex": 1,
        "numberOfLines": 3,
        "more": True,
        "growing": True,
    }
    event = protocol.receive_text(json.dumps(reply))
    assert isinstance(event, ReplyReceived)
    assert event.value == LinesPage(0, ["a\n"], 1, more=True, growing=True, number_of_lines=3)


def test_lines_page_of_a_server_that_says_nothing_more_is_judged_by_the_status() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    status = {"transferStatus": "COMPLETED", "currentSize": 6, "numberOfLines": 3}
    protocol.receive_text(json.dumps({"@": "StatusChanged", "resourceStatus": status}))
    protocol.request_lines(1, 2)
    event = protocol.receive_text(json.dumps({"@": "Lines", "lines": ["b\n", "c\n"]}))
    assert isinstance(event, ReplyReceived)
    expected = LinesPage(1, ["b\n", "c\n"], 3, more=False, growing=False, number_of_lines=3)
    assert event.value == expected
    assert event.value.complete


def test_statuses_never_go_backwards() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    assert protocol.receive_text(status_message("IN_PROGRESS", 10)) is not None
    assert protocol.receive_text(status_message("IN_PROGRESS", 4)) is None
    assert protocol.receive_text(status_message("IN_PROGRESS", 10)) is None
    assert protocol.receive_text(status_message("FAILED", 10)) is not None
    assert protocol.receive_text(status_message("COMPLETED", 12)) is None
    assert protocol.status == ResourceStatus(transfer_status=TransferStatus.FAILED, current_size=10)


def test_not_found_on_connect_says_why_the_connection_ends() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    event = protocol.receive_text(error_message("NOT_FOUND", None))
    assert isinstance(event, ConnectionEnding)
    assert isinstance(event.error, ResourceNotFoundError)


def test_unknown_message_types_are_skipped() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    request, _ = protocol.request_chunk(0, 1)
    assert protocol.receive_text('{"@":"CheckpointHint","size":3}') is None
    assert protocol.receive_data(b"x") == ReplyReceived(request, b"x")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param([], b"stray", id="data without a request"),
        pytest.param([(0, 2)], b"three", id="more bytes than requested"),
        pytest.param([], error_message("BAD_RANGE", 1), id="error without a request"),
        pytest.param([(0, 2)], error_message("BAD_RANGE", 7), id="error for another request"),
        pytest.param([(0, 2)], '{"@":"Lines","lines":[]}', id="lines for a chunk request"),
        pytest.param([], '{"@":"ReadyForUpload"}', id="an upload message"),
        pytest.param([], "{not json", id="malformed JSON"),
    ],
)
def test_replies_that_break_the_request_order_are_protocol_errors(
    setup: list[tuple[int, int]], message: bytes | str
) -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    for start, end in setup:
        protocol.request_chunk(start, end)
    with pytest.raises(ProtocolError):
        if isinstance(message, bytes):
            protocol.receive_data(message)
        else:
            protocol.receive_text(message)


def test_an_error_in_the_middle_of_a_data_reply_is_a_protocol_error() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    protocol.request_chunk(0, 4)
    protocol.receive_data(b"ab")
    with pytest.raises(ProtocolError, match="middle"):
        protocol.receive_text(error_message("READ_FAILED", 1))


def test_drain_hands_back_every_waiting_request_oldest_first() -> None:
    protocol = DownloadClientProtocol(RESOURCE)
    first, _ = protocol.request_chunk(0, 1)
    second, _ = protocol.request_lines(0, 1)
    assert protocol.drain() == [first, second]
    assert protocol.pending == 0
