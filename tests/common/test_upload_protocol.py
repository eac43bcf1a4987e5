"""The upload protocol machines accept exactly the documented order of messages."""

import pytest

from livefile.api import close_codes
from livefile.api.errors import ProtocolError
from livefile.api.messages import FinishUpload, StartUpload
from livefile.impl_common.upload_protocol import (
    ProtocolViolation,
    UploadClientProtocol,
    UploadPhase,
    UploadServerProtocol,
)

START = '{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"}}'
FINISH = '{"@":"FinishUpload","checksum":"d41d8cd98f00b204e9800998ecf8427e"}'


def test_server_accepts_the_normal_sequence() -> None:
    machine = UploadServerProtocol()
    assert isinstance(machine.receive_text(START), StartUpload)
    machine.resource_ready()
    machine.receive_data()
    assert isinstance(machine.receive_text(FINISH), FinishUpload)
    machine.acknowledged()


def test_data_before_start_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        UploadServerProtocol().receive_data()
    assert caught.value.code == close_codes.PROTOCOL_ERROR
    assert "binary data" in caught.value.reason


def test_finish_first_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="Unexpected FinishUpload"):
        UploadServerProtocol().receive_text(FINISH)


def test_second_start_is_a_protocol_violation() -> None:
    machine = UploadServerProtocol()
    machine.receive_text(START)
    machine.resource_ready()
    with pytest.raises(ProtocolViolation, match="Unexpected StartUpload"):
        machine.receive_text(START)


def test_data_after_finish_is_a_protocol_violation() -> None:
    machine = UploadServerProtocol()
    machine.receive_text(START)
    machine.resource_ready()
    machine.receive_text(FINISH)
    with pytest.raises(ProtocolViolation):
        machine.receive_data()


def test_malformed_json_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="Malformed JSON"):
        UploadServerProtocol().receive_text("{")


def test_client_refuses_an_ack_before_finishing() -> None:
    machine = UploadClientProtocol()
    machine.receive_text('{"@":"ReadyForUpload","reference":{"uri":"ws://h/x"},"resourceId":"r"}')
    with pytest.raises(ProtocolError, match="Unexpected UploadAcknowledged"):
        machine.receive_text('{"@":"UploadAcknowledged","size":0,"checksum":"x"}')


READY_TEXT = '{"@":"ReadyForUpload","reference":{"uri":"ws://h/x"},"resourceId":"r"}'
ACK_TEXT = '{"@":"UploadAcknowledged","size":0,"checksum":"x"}'
STATUS_TEXT = (
    '{"@":"StatusChanged","resourceStatus":{"transferStatus":"IN_PROGRESS","currentSize":1}}'
)


def test_client_may_finish_before_the_reference_and_then_takes_it_and_the_ack() -> None:
    machine = UploadClientProtocol()
    machine.finishing()  # StartUpload, data and FinishUpload sent back to back
    assert machine.receive_text(READY_TEXT).kind == "ReadyForUpload"
    machine.receive_text(STATUS_TEXT)
    assert machine.receive_text(ACK_TEXT).kind == "UploadAcknowledged"
    assert machine.phase is UploadPhase.DONE


def test_client_refuses_an_ack_or_a_status_before_the_reference_even_when_pipelined() -> None:
    machine = UploadClientProtocol()
    machine.finishing()
    with pytest.raises(ProtocolError, match="Unexpected UploadAcknowledged"):
        machine.receive_text(ACK_TEXT)
    with pytest.raises(ProtocolError, match="Unexpected StatusChanged"):
        machine.receive_text(STATUS_TEXT)


def test_client_refuses_a_second_reference() -> None:
    machine = UploadClientProtocol()
    machine.receive_text(READY_TEXT)
    machine.finishing()
    with pytest.raises(ProtocolError, match="Unexpected ReadyForUpload"):
        machine.receive_text(READY_TEXT)
