"""Close reasons that fit a close frame, and their meaning for the SDKs."""

from __future__ import annotations

from livefile.api import close_codes
from livefile.api.errors import (
    AuthenticationError,
    AuthorizationError,
    ChecksumMismatchError,
    ConnectionLostError,
    LivefileError,
    PolicyViolationError,
    ProtocolError,
    QuotaExceededError,
    ResourceNotFoundError,
    ServerError,
)


def safe_close_reason(reason: str) -> str:
    """``reason`` cut at a code-point boundary so that its UTF-8 form fits a close frame."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= close_codes.MAX_REASON_BYTES:
        return reason
    return encoded[: close_codes.MAX_REASON_BYTES].decode("utf-8", errors="ignore")


def error_for_close(code: int | None, reason: str) -> LivefileError:
    """The exception an SDK raises when the server closed with ``code`` and ``reason``."""
    if reason.startswith(close_codes.QUOTA_PREFIX):
        return QuotaExceededError(reason[len(close_codes.QUOTA_PREFIX) :])
    if reason.startswith(close_codes.CHECKSUM_PREFIX):
        return ChecksumMismatchError(reason)
    if code == close_codes.POLICY_VIOLATION:
        if reason.startswith(close_codes.UNAUTHORIZED_PREFIX):
            return AuthenticationError(reason)
        if reason.startswith(close_codes.FORBIDDEN_PREFIX):
            return AuthorizationError(reason)
    detail = f"closed with {code}" + (f": {reason}" if reason else "")
    if code == close_codes.POLICY_VIOLATION:
        return PolicyViolationError(detail)
    if code in (
        close_codes.PROTOCOL_ERROR,
        close_codes.UNSUPPORTED_DATA,
        close_codes.INVALID_DATA,
        close_codes.MESSAGE_TOO_BIG,
    ):
        return ProtocolError(detail)
    if code in (close_codes.INTERNAL_ERROR, close_codes.GOING_AWAY, close_codes.TRY_AGAIN_LATER):
        return ServerError(detail)
    return ConnectionLostError(f"Connection {detail}" if code else "Connection lost")


def error_for_http_status(status: int, detail: str) -> LivefileError:
    """The exception an SDK raises for an HTTP error answer with ``detail`` (its JSON
    ``detail``)."""
    if status == 401:
        return AuthenticationError(detail)
    if status == 403:
        return AuthorizationError(detail)
    if status == 404:
        return ResourceNotFoundError(detail)
    return ServerError(f"HTTP {status}: {detail}")
