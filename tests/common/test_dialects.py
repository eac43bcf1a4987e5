"""The two dialects' forms of each message: livefile's with every extension, step-streaming's
with exactly the fields its Java peers know (docs/protocol.md, "Two dialects")."""

from __future__ import annotations

import pytest

from livefile.api.messages import (
    SUBPROTOCOL,
    Dialect,
    Lines,
    ReadyForUpload,
    StatusChanged,
    UploadAcknowledged,
)
from livefile.api.model import ChecksumAlgorithm, ResourceReference, ResourceStatus

PLAIN = Dialect.STEP_STREAMING


@pytest.mark.parametrize(
    ("offered", "dialect"),
    [
        ([], PLAIN),
        (["chat"], PLAIN),
        ([SUBPROTOCOL], Dialect.LIVEFILE),
        (["chat", SUBPROTOCOL], Dialect.LIVEFILE),
        (["livefile.v2"], PLAIN),
    ],
)
def test_the_dialect_is_the_one_the_client_offered(offered: list[str], dialect: Dialect) -> None:
    assert Dialect.of(offered) is dialect


def test_ready_for_upload_has_only_the_reference_for_step_streaming() -> None:
    message = ReadyForUpload(
        reference=ResourceReference(uri="ws://h/ws/streaming/download/ab"), resource_id="ab"
    )
    assert message.to_json(PLAIN) == (
        '{"@":"ReadyForUpload","reference":{"uri":"ws://h/ws/streaming/download/ab"}}'
    )
    assert '"resourceId":"ab"' in message.to_json()


@pytest.mark.parametrize("lines", [296, None])
def test_upload_acknowledged_is_spelt_as_the_java_server_spells_it(lines: int | None) -> None:
    message = UploadAcknowledged(
        size=10324,
        checksum="540441d13a31641d7775d91c46c94511",
        checksum_algorithm=ChecksumAlgorithm.MD5,
        number_of_lines=lines,
    )
    expected_lines = "null" if lines is None else str(lines)
    assert message.to_json(PLAIN) == (
        '{"@":"UploadAcknowledged","size":10324,'
        f'"checksum":"540441d13a31641d7775d91c46c94511","numberOflines":{expected_lines}}}'
    )
    assert '"checksumAlgorithm":"md5"' in message.to_json()


def test_a_status_has_its_three_fields_only_for_step_streaming() -> None:
    status = ResourceStatus(
        transfer_status="IN_PROGRESS",
        current_size=1234,
        number_of_lines=None,
        revision=7,
        stage="repacking",
        percent=12.5,
    )
    assert StatusChanged(resource_status=status).to_json(PLAIN) == (
        '{"@":"StatusChanged","resourceStatus":'
        '{"transferStatus":"IN_PROGRESS","currentSize":1234,"numberOfLines":null}}'
    )
    assert '"revision":7' in StatusChanged(resource_status=status).to_json()


def test_lines_have_no_request_id_for_step_streaming() -> None:
    message = Lines(lines=["two\n", "three\n", "foooooooooooooour"], request_id=3)
    assert (
        message.to_json(PLAIN) == '{"@":"Lines","lines":["two\\n","three\\n","foooooooooooooour"]}'
    )
    assert '"requestId":3' in message.to_json()
