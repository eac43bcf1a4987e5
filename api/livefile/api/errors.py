"""The errors of livefile, shared by the server and the SDKs.

Every error carries the peer's reason where there is one. The SDKs raise these; the server maps
them to close codes and ``Error`` messages.
"""

from __future__ import annotations


class LivefileError(Exception):
    """Base of every livefile error."""


class QuotaExceededError(LivefileError):
    """A quota refused the resource or its size (close 1008 ``QuotaExceededException: …``)."""


class StorageQuotaError(QuotaExceededError):
    """The data directory holds as many bytes as the server allows
    (``LIVEFILE_MAX_STORAGE_BYTES``): no new resource until some are deleted (HTTP 507)."""


class ChecksumMismatchError(LivefileError):
    """The server's checksum of the uploaded bytes differs from the client's."""


class ConnectionLostError(LivefileError):
    """The connection ended before the exchange finished."""


class ProtocolError(LivefileError):
    """A peer sent something the protocol does not allow."""


class UnknownMessageTypeError(ProtocolError):
    """A well-formed message of a type this side does not know (the protocol may grow new
    ones, so a client can skip it where a server must refuse it)."""


class ServerError(LivefileError):
    """The server reported an error of its own (close 1011) or refused a request."""


class PolicyViolationError(ServerError):
    """The server refused the request by policy (close 1008), e.g. a missing upload context."""


class AccessDeniedError(PolicyViolationError):
    """Access control refused the request (close 1008 with an ``Unauthorized:`` or
    ``Forbidden:`` reason, or HTTP 401/403)."""


class AuthenticationError(AccessDeniedError):
    """No valid token: missing, malformed, wrongly signed, expired, not yet valid, or for
    another audience (HTTP 401)."""


class AuthorizationError(AccessDeniedError):
    """A valid token that does not grant this request: wrong scope, another resource or
    another upload context (HTTP 403)."""


class ResourceNotFoundError(LivefileError):
    """No resource with that id exists."""


class ResourceFailedError(LivefileError):
    """The resource ended FAILED; the bytes received before the failure remain readable."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class RangeNotReadableError(LivefileError):
    """A read asked for bytes or lines beyond what the resource has published."""

    def __init__(self, message: str, status: object = None) -> None:
        super().__init__(message)
        self.status = status  # the ResourceStatus the range was checked against


class JobRefusedError(ServerError):
    """The server cannot take another job now (its queue is full): try again later."""


class RequestError(LivefileError):
    """The server answered a download request with an ``Error`` message (e.g. a bad range)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = message


class LivefileTimeoutError(LivefileError, TimeoutError):
    """A wait took longer than its timeout."""
