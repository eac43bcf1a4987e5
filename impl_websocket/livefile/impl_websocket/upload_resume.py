"""``ResumeUpload`` on the upload endpoint: which upload a resuming connection gets, or why not.

The upload is claimed from the resumable uploads (``resumable_uploads.py``; with several
processes any of them takes up a parked upload, ``shared_resume.py``) with its secret token. An
upload that had completed (its acknowledgement was lost with the connection) is acknowledged
again, to the holder of its token only — also when the resume arrived while the old connection
was still finishing it. Anything else is refused with a reason: unknown, deleted, ended FAILED,
another upload context, a wrong token — or "try again" (1013) when the connection holding it (in
this process or another) did not let go in time, so that the client's next attempt gets it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from livefile.api.errors import LivefileError, PolicyViolationError
from livefile.api.messages import ResumeUpload, UploadAcknowledged
from livefile.api.model import TransferStatus, is_valid_id
from livefile.impl_common.checksums import parse_stored
from livefile.impl_server.deletions import DELETED
from livefile.impl_server.file_threads import in_file_thread
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.resumable_uploads import (
    RESUME_TOKEN_HASH,
    ResumeBusy,
    ResumeRefused,
    token_hash,
)
from livefile.impl_server.upload import UploadProducer


class ResumeLater(LivefileError):
    """The upload is held by a connection that did not let go in time: try again."""


async def claim_upload(
    manager: ResourceManager,
    request: ResumeUpload,
    context_id: str | None,
    supersede: Callable[[], None],
) -> UploadProducer | UploadAcknowledged:
    """The producer to go on with, or the acknowledgement of an upload that had completed.
    Raises ``PolicyViolationError`` (a refusal) or ``ResumeLater``."""
    resource_id = request.resource_id
    entry = await manager.entry(resource_id) if is_valid_id(resource_id) else None
    if entry is None:
        if await manager.gone(resource_id):  # its tombstone is kept: GET answers 410
            raise PolicyViolationError(_deleted(resource_id))
        raise PolicyViolationError(f"Cannot resume: unknown upload {resource_id[:40]!r}")
    if entry.upload_context_id != context_id:
        raise PolicyViolationError(f"Forbidden: upload {resource_id} is in another upload context")
    try:
        producer = await manager.resumable.claim(resource_id, request.resume_token, supersede)
    except ResumeRefused as exc:
        raise PolicyViolationError(str(exc)) from None
    except ResumeBusy as exc:
        raise ResumeLater(str(exc)) from None
    if producer is not None:
        return producer
    status = await manager.status(resource_id) or entry.status
    if status.transfer_status is TransferStatus.COMPLETED:
        await _check_token(manager, resource_id, request.resume_token)
        entry = await manager.entry(resource_id) or entry
        algorithm, checksum = parse_stored(entry.checksum or "")
        return UploadAcknowledged(
            size=status.current_size,
            checksum=checksum,
            checksum_algorithm=algorithm,
            number_of_lines=status.number_of_lines,
        )
    if status.transfer_status is TransferStatus.FAILED:
        if status.error is not None and status.error.code == DELETED:  # its deletion runs
            raise PolicyViolationError(_deleted(resource_id))
        why = f" ({status.error.code})" if status.error else ""
        raise PolicyViolationError(f"Cannot resume upload {resource_id}: it FAILED{why}")
    if resource_id in manager.active_ids:
        raise PolicyViolationError(f"Cannot resume upload {resource_id}: it is not resumable")
    raise ResumeLater(f"Upload {resource_id} is not resumable here now; try again")


def _deleted(resource_id: str) -> str:
    return f"Cannot resume upload {resource_id}: it was deleted"


async def _check_token(manager: ResourceManager, resource_id: str, token: str) -> None:
    record = await in_file_thread(manager.storage.read_meta, resource_id) or {}
    expected = record.get(RESUME_TOKEN_HASH)
    if not isinstance(expected, str) or not hmac.compare_digest(token_hash(token), expected):
        raise PolicyViolationError(f"Forbidden: wrong resume token for upload {resource_id}")
