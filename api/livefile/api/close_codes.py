"""WebSocket close codes livefile uses, and the reason phrases the peers agree on."""

from __future__ import annotations

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
INVALID_DATA = 1007  # RFC 6455: data not consistent with its type (not UTF-8 here)
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

REASON_UPLOAD_COMPLETED = "Upload completed"
REASON_CLIENT_CLOSED = "Client Session closed"
REASON_SERVER_SHUTDOWN = "Server shutdown"
REASON_MISSING_CONTEXT = "Missing parameter streamingUploadContextId"
# A kept-open upload connection that waited too long for its next StartUpload: nothing was lost.
IDLE_PREFIX = "Idle for "
QUOTA_PREFIX = "QuotaExceededException: "
CHECKSUM_PREFIX = "Checksum mismatch"
NOT_UTF8_PREFIX = "Not UTF-8: "  # a line-access upload whose bytes are not UTF-8 (1007)
# An upload (1008) or a watcher (1008) whose resource was deleted, or an upload that expired.
DELETED_PREFIX = "Resource deleted: "
EXPIRED_PREFIX = "Upload expired: "
UNAUTHORIZED_PREFIX = "Unauthorized: "  # no valid token (HTTP 401)
FORBIDDEN_PREFIX = "Forbidden: "  # a valid token that does not grant the request (HTTP 403)

# RFC 6455 allows 123 bytes of reason in a close frame (125 minus the code).
MAX_REASON_BYTES = 123
