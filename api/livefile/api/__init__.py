"""livefile's data model, protocol messages, errors and backend interfaces. No I/O here."""

from livefile.api.errors import (
    AccessDeniedError,
    AuthenticationError,
    AuthorizationError,
    ChecksumMismatchError,
    ConnectionLostError,
    LivefileError,
    LivefileTimeoutError,
    PolicyViolationError,
    ProtocolError,
    QuotaExceededError,
    RequestError,
    ResourceFailedError,
    ResourceNotFoundError,
    ServerError,
)
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceInfo,
    ResourceMetadata,
    ResourceReference,
    ResourceStatus,
    TransferStatus,
)

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "AuthorizationError",
    "ChecksumAlgorithm",
    "ChecksumMismatchError",
    "ConnectionLostError",
    "LivefileError",
    "LivefileTimeoutError",
    "PolicyViolationError",
    "ProtocolError",
    "QuotaExceededError",
    "RequestError",
    "ResourceFailedError",
    "ResourceInfo",
    "ResourceMetadata",
    "ResourceNotFoundError",
    "ResourceReference",
    "ResourceStatus",
    "ServerError",
    "TransferStatus",
]
