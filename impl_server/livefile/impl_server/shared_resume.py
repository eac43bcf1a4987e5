"""Resumable WebSocket uploads when several processes share the catalog (Redis) and the data
directory: a parked upload belongs to no process, so that a resume reaching any of them goes on.

Parking *releases* the upload (``ResourceManager.release``): its bytes are stored and
published, its status — ``stage: waiting_for_client`` — recorded, its lease dropped, and the
record beside its bytes notes the deadline of its grace period (``resumeDeadline``). A
``ResumeUpload`` on any process checks the token against the record's hash and reopens it
(``ResourceManager.reopen_upload``: the lease is the fence, one process at a time), going on
from the stored size with the running checksum recomputed and the revisions continued.

When another process still holds it (its connection looks alive: half-open), this one asks it
through the handover feed to supersede that connection and waits a bounded time (one lease
period: a holder that died meanwhile has lost its lease by then) before refusing ("try again").

Nobody keeps a timer for a parked upload: the lease keeper of every process finds it (its
lease missing) and the recovery policy (``ResourceManager``) keeps it until the deadline, then
ends it FAILED ``client_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Protocol

from livefile.api.errors import ServerError
from livefile.impl_server.file_threads import in_file_thread
from livefile.impl_server.manager import ResourceHeldError, ResourceManager
from livefile.impl_server.resumable_uploads import (
    CLIENT_LOST,
    RESUME_TOKEN_HASH,
    ResumeBusy,
    ResumeRefused,
    token_hash,
)
from livefile.impl_server.upload import UploadProducer

logger = logging.getLogger(__name__)


class Handover(Protocol):
    """Asks the other processes for an upload, and tells them when this one let go of one."""

    async def request_release(self, resource_id: str) -> None: ...

    async def announce_released(self, resource_id: str) -> None: ...


class SharedParking:
    """Parks uploads by releasing them, and takes them up again on any process."""

    def __init__(self, manager: ResourceManager, handover: Handover, patience: float) -> None:
        self._manager = manager
        self._handover = handover
        self._patience = patience  # how long a resume waits for the holder to let go
        self._let_go: dict[str, asyncio.Event] = {}  # uploads asked for, by resume id

    async def park(self, producer: UploadProducer, grace: float) -> None:
        """The upload's bytes are flushed and its waiting status published: note until when
        it waits, release it, and tell whoever asked for it."""
        resource_id = producer.resource_id
        await self._manager.set_resume_deadline(resource_id, time.time() + grace)
        await self._manager.release(producer.writer)
        self.heard_released(resource_id)  # a claim here may wait for it (the feed skips ours)
        with contextlib.suppress(Exception):  # the asker then tries once its patience is over
            await self._handover.announce_released(resource_id)

    def heard_released(self, resource_id: str) -> None:
        """Another process let go of ``resource_id``."""
        event = self._let_go.get(resource_id)
        if event is not None:
            event.set()

    async def take(self, resource_id: str, token: str) -> UploadProducer | None:
        """The upload ``token`` resumes, reopened here; None when it is not unfinished (it
        completed, failed, or its grace period is over: then it ends FAILED ``client_lost``
        now). Raises ``ResumeRefused`` (a wrong token, not resumable) or ``ResumeBusy``."""
        record = await in_file_thread(self._manager.storage.read_meta, resource_id) or {}
        expected = record.get(RESUME_TOKEN_HASH)
        if not isinstance(expected, str):
            raise ResumeRefused(f"Cannot resume upload {resource_id}: it is not resumable")
        if not hmac.compare_digest(token_hash(token), expected):
            raise ResumeRefused(f"Forbidden: wrong resume token for upload {resource_id}")
        try:
            producer = await self._reopen(resource_id)
            if producer is None:
                producer = await self._ask_for(resource_id)
        except ServerError:
            return None  # ended (or unknown)
        if producer is None:
            raise ResumeBusy(f"Upload {resource_id} is held by another server process; try again")
        deadline = await self._manager.set_resume_deadline(resource_id, None)
        if deadline is not None and deadline <= time.time():
            await producer.fail(CLIENT_LOST)  # late: the lease keeper had not ended it yet
            return None
        return producer

    async def _ask_for(self, resource_id: str) -> UploadProducer | None:
        """Ask the process holding the upload to let go; the upload, once it did (or once the
        patience is over: a holder that died has lost its lease by then)."""
        event = self._let_go[resource_id] = asyncio.Event()
        try:
            with contextlib.suppress(Exception):  # Redis away: the patience is all there is
                await self._handover.request_release(resource_id)
            producer = await self._reopen(resource_id)  # it may have let go meanwhile
            if producer is not None:
                return producer
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._patience):
                    await event.wait()
            return await self._reopen(resource_id)
        finally:
            self._let_go.pop(resource_id, None)

    async def _reopen(self, resource_id: str) -> UploadProducer | None:
        """The upload reopened here; None while another process holds it."""
        try:
            return await self._manager.reopen_upload(resource_id)
        except ResourceHeldError:
            return None
