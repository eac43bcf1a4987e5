"""Protocol messages: the "@" discriminator, camelCase fields, tolerant and precise parsing."""

import json

import pytest

from livefile.api.errors import ProtocolError
from livefile.api.messages import (
    Lines,
    RequestChunk,
    StartUpload,
    StatusChanged,
    UploadAcknowledged,
    parse_message,
)
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceMetadata,
    ResourceStatus,
    TransferStatus,
)


def test_start_upload_round_trips_in_wire_form() -> None:
    message = StartUpload(metadata=ResourceMetadata(filename="a.txt", mime_type="text/plain"))
    wire = json.loads(message.to_json())
    assert wire == {
        "@": "StartUpload",
        "metadata": {"filename": "a.txt", "mimeType": "text/plain", "supportsLineAccess": False},
        "checksumAlgorithm": "md5",
        "keepOpen": False,
    }
    assert parse_message(message.to_json()) == message


def test_start_upload_without_checksum_algorithm_means_md5_as_in_step_streaming() -> None:
    message = parse_message('{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"}}')
    assert isinstance(message, StartUpload)
    assert message.checksum_algorithm is ChecksumAlgorithm.MD5
    assert message.keep_open is False  # step-streaming's clients: one upload per connection


def test_start_upload_keep_open_must_be_a_json_boolean() -> None:
    start = '{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"},"keepOpen":%s}'
    message = parse_message(start % "true")
    assert isinstance(message, StartUpload)
    assert message.keep_open is True
    with pytest.raises(ProtocolError, match="keepOpen"):
        parse_message(start % '"yes"')


def test_start_upload_with_an_unknown_checksum_algorithm_is_refused() -> None:
    with pytest.raises(ProtocolError, match="checksumAlgorithm"):
        parse_message(
            '{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"},'
            '"checksumAlgorithm":"sha1"}'
        )


def test_status_changed_writes_null_line_count_explicitly() -> None:
    status = ResourceStatus(transfer_status=TransferStatus.IN_PROGRESS, current_size=5)
    wire = json.loads(StatusChanged(resource_status=status).to_json())
    assert wire["resourceStatus"] == {
        "transferStatus": "IN_PROGRESS",
        "currentSize": 5,
        "numberOfLines": None,
    }


def test_unknown_fields_are_ignored() -> None:
    message = parse_message('{"@":"RequestChunk","startOffset":1,"endOffset":2,"future":true}')
    assert message == RequestChunk(start_offset=1, end_offset=2)


def test_step_streaming_misspelling_of_number_of_lines_is_accepted() -> None:
    text = '{"@":"UploadAcknowledged","size":3,"checksum":"x","numberOflines":2}'
    message = parse_message(text)
    assert isinstance(message, UploadAcknowledged)
    assert message.number_of_lines == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "Malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"startOffset": 1}', 'Missing message type property "@"'),
        ('{"@": "Launch"}', "Unknown message type 'Launch'"),
        ('{"@":"RequestChunk","startOffset":1.5,"endOffset":2}', "startOffset"),
        ('{"@":"RequestChunk","startOffset":"1","endOffset":2}', "startOffset"),
        ('{"@":"StartUpload","metadata":{"filename":"a"}}', "mimeType"),
        ('{"@":"StartUpload","metadata":{"filename":"../x","mimeType":"a/b"}}', "separators"),
        ('{"@":"StartUpload","metadata":{"filename":"a\\nb","mimeType":"a/b"}}', "control"),
        ('{"@":"StartUpload","metadata":{"filename":"a","mimeType":"text"}}', "MIME type"),
    ],
)
def test_bad_messages_raise_protocol_error_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_message(text)


def test_lines_paging_fields_are_left_out_until_set() -> None:
    plain = Lines(lines=["a\n"])
    assert json.loads(plain.to_json()) == {"@": "Lines", "lines": ["a\n"], "requestId": None}
    paged = Lines(
        lines=["a\n"],
        starting_line_index=4,
        next_line_index=5,
        number_of_lines=9,
        more=True,
        growing=False,
    )
    assert json.loads(paged.to_json()) == {
        "@": "Lines",
        "lines": ["a\n"],
        "requestId": None,
        "startingLineIndex": 4,
        "nextLineIndex": 5,
        "numberOfLines": 9,
        "more": True,
        "growing": False,
    }
    assert parse_message(paged.to_json()) == paged
    assert parse_message('{"@":"Lines","lines":[]}') == Lines(lines=[])
