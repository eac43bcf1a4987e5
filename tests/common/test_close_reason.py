"""Close reasons fit a close frame, and SDKs map them to the right exceptions."""

import pytest

from livefile.api import close_codes
from livefile.api.errors import (
    ChecksumMismatchError,
    ConnectionLostError,
    PolicyViolationError,
    ProtocolError,
    QuotaExceededError,
    ServerError,
)
from livefile.impl_common.close_reason import error_for_close, safe_close_reason


def test_short_reason_is_unchanged() -> None:
    assert safe_close_reason("Upload completed") == "Upload completed"


def test_long_reason_is_cut_to_123_bytes() -> None:
    assert len(safe_close_reason("a" * 200).encode()) == 123


def test_cut_never_splits_a_code_point() -> None:
    reason = "a" * 120 + "\N{ROCKET}" + "zzz"
    cut = safe_close_reason(reason)
    assert cut == "a" * 120
    assert safe_close_reason("a" * 119 + "\N{ROCKET}" + "zzz") == "a" * 119 + "\N{ROCKET}"


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1008, "QuotaExceededException: too big", QuotaExceededError),
        (
            1011,
            "Checksum mismatch after upload! Client checksum=a, server checksum=b",
            ChecksumMismatchError,
        ),
        (1008, close_codes.REASON_MISSING_CONTEXT, PolicyViolationError),
        (1002, "Unexpected FinishUpload", ProtocolError),
        (1011, "boom", ServerError),
        (1001, "Server shutdown", ServerError),
        (1006, "", ConnectionLostError),
        (None, "", ConnectionLostError),
    ],
)
def test_close_maps_to_error(code: int | None, reason: str, expected: type[Exception]) -> None:
    assert type(error_for_close(code, reason)) is expected


def test_quota_error_carries_the_message_without_prefix() -> None:
    assert str(error_for_close(1008, "QuotaExceededException: Size 25 exceeds 10")) == (
        "Size 25 exceeds 10"
    )
