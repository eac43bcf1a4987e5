"""Uploads that outlive their connection: held for a grace period, resumed by their uploader.

A WebSocket upload in livefile's dialect gets a secret resume token with its reference. When its
connection is lost before ``FinishUpload`` its producer is *parked* here instead of failed: what
was received is stored, the status says ``stage: waiting_for_client`` (still IN_PROGRESS, so
watchers keep following), and a timer fails it with ``client_lost`` once the grace period is
over. A new connection that shows the token (``ResumeUpload``) *claims* it and goes on from the
stored size. A claim that arrives while the old connection still looks alive (a half-open TCP
connection the server has not noticed yet) supersedes that connection: it is made to park first.
A connection busy finishing the upload (``FinishUpload``) does not park but ends it: the claim
wakes then and finds it ended (the caller acknowledges a COMPLETED upload again).

Only a hash of the token is kept, in memory and in the record beside the bytes, so that an
upload can be resumed after a restart too (``ResourceManager.recover``).

With several processes (``share``), parking releases the upload instead of holding it here,
and a claim of an upload this process does not hold reopens it (``shared_resume.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from livefile.api.model import ResourceError
from livefile.impl_server.upload import UploadProducer

if TYPE_CHECKING:
    from livefile.impl_server.shared_resume import SharedParking

logger = logging.getLogger(__name__)

WAITING_STAGE = "waiting_for_client"
CLIENT_LOST = ResourceError(
    code="client_lost",
    message="the uploader's connection was lost and it did not resume within the grace period",
)
# Keys of the record beside the bytes: the hash of the token, and (several processes) until
# when a parked upload waits for its client (epoch seconds).
RESUME_TOKEN_HASH = "resumeTokenHash"
RESUME_DEADLINE = "resumeDeadline"
# How long a claim waits for the connection it supersedes to let go of the upload.
SUPERSEDE_PATIENCE = 10.0

RecordWaiting = Callable[[UploadProducer], Awaitable[None]]


def new_resume_token() -> tuple[str, str]:
    """A fresh secret and the hash that is kept of it."""
    token = secrets.token_urlsafe(24)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ResumeRefused(Exception):
    """A ``ResumeUpload`` that cannot be served; ``str`` is the reason for the close."""


class ResumeBusy(Exception):
    """The connection holding the upload did not let go of it in time: try again."""


@dataclass
class _Held:
    producer: UploadProducer
    supersede: Callable[[], None] | None  # stops the connection carrying it, if one does
    # Set once no connection carries it: parked (or released), or ended. A claim waits for it.
    let_go: asyncio.Event = field(default_factory=asyncio.Event)
    expiry: asyncio.Task[None] | None = None


class ResumableUploads:
    """The resumable uploads of this process, running or waiting for their client."""

    def __init__(self, grace: float, record_waiting: RecordWaiting) -> None:
        self.grace = grace
        self._record_waiting = record_waiting  # makes the waiting status durable
        self._held: dict[str, _Held] = {}
        self.shared: SharedParking | None = None

    @property
    def enabled(self) -> bool:
        return self.grace > 0

    def share(self, parking: SharedParking) -> None:
        """Several processes serve the uploads: park by releasing, claim by reopening."""
        self.shared = parking

    def waiting_ids(self) -> list[str]:
        return [rid for rid, held in self._held.items() if held.let_go.is_set()]

    def attach(self, producer: UploadProducer, supersede: Callable[[], None]) -> None:
        """A connection carries ``producer``; ``supersede`` makes it stop (and park)."""
        self._held[producer.resource_id] = _Held(producer, supersede)

    def ended(self, resource_id: str) -> None:
        """The upload completed or failed: nothing to resume any more. A claim waiting for
        the connection that ended it wakes, and finds it gone."""
        held = self._held.pop(resource_id, None)
        if held is None:
            return
        if held.expiry is not None:
            held.expiry.cancel()
        held.let_go.set()

    async def park(self, producer: UploadProducer) -> bool:
        """The connection is lost: store what it sent and wait for the client. False when the
        upload cannot wait (storing failed): the caller fails it."""
        held = self._held.get(producer.resource_id)
        if held is None or held.producer is not producer or producer.ended:
            return False
        try:
            await producer.writer.flush()
        except Exception:
            self._held.pop(producer.resource_id, None)
            return False
        producer.writer.progress(WAITING_STAGE)
        held.supersede = None
        if self.shared is not None:
            return await self._release(held)
        with contextlib.suppress(Exception):  # the catalog away: the status is still published
            await self._record_waiting(producer)
        name = f"resume-grace-{producer.resource_id}"
        held.expiry = asyncio.create_task(self._expire(held), name=name)
        held.let_go.set()
        logger.warning(
            "upload %s waits for its client at %d bytes (resumable for %g s)",
            producer.resource_id,
            producer.writer.written,
            self.grace,
        )
        return True

    async def _release(self, held: _Held) -> bool:
        """Park by letting go: any process may take the upload up (``shared_resume.py``)."""
        producer = held.producer
        try:
            assert self.shared is not None
            await self.shared.park(producer, self.grace)
        except Exception as exc:
            logger.warning("upload %s could not be parked: %s", producer.resource_id, exc)
            return False
        finally:
            # Held until released: a claim meanwhile waits for ``let_go``, then reopens it.
            self._held.pop(producer.resource_id, None)
        held.let_go.set()
        logger.warning(
            "upload %s released at %d bytes, resumable on any worker for %g s",
            producer.resource_id,
            producer.writer.written,
            self.grace,
        )
        return True

    def let_go(self, resource_id: str) -> None:
        """Another process was asked to resume ``resource_id``: a connection holding it here
        is half-open; it stops, and parks the upload."""
        held = self._held.get(resource_id)
        if held is not None and held.supersede is not None:
            held.supersede()

    async def adopt(self, producer: UploadProducer) -> None:
        """Hold an upload reopened after a restart, waiting for its client."""
        self._held[producer.resource_id] = _Held(producer, None)
        await self.park(producer)

    async def claim(
        self, resource_id: str, token: str, supersede: Callable[[], None]
    ) -> UploadProducer | None:
        """The upload ``token`` resumes, now carried by the connection ``supersede`` stops;
        None when there is no such upload to go on with (here, or with several processes,
        anywhere). Raises ``ResumeRefused`` for a wrong token, ``ResumeBusy`` when the
        connection holding it does not let go in time."""
        held = self._held.get(resource_id)
        if held is not None:
            expected = held.producer.resume_token_hash or ""
            if not hmac.compare_digest(token_hash(token), expected):
                raise ResumeRefused(f"Forbidden: wrong resume token for upload {resource_id}")
            await self._superseded(held)
        if self.shared is not None:
            producer = await self.shared.take(resource_id, token)
            if producer is None:
                return None
            held = self._held[resource_id] = _Held(producer, supersede)
        elif held is None or self._held.get(resource_id) is not held or held.producer.ended:
            return None  # none here, or it expired or failed meanwhile
        if held.expiry is not None:
            held.expiry.cancel()
            held.expiry = None
        held.let_go.clear()
        held.supersede = supersede
        held.producer.writer.progress(None)  # no longer waiting: the stage goes
        return held.producer

    async def _superseded(self, held: _Held) -> None:
        """Make the connection carrying ``held`` stop, and wait until it let go of the upload
        (parked it, or ended it: a connection finishing it does not stop for this)."""
        if held.let_go.is_set():
            return
        if held.supersede is not None:
            held.supersede()
        try:
            async with asyncio.timeout(SUPERSEDE_PATIENCE):
                await held.let_go.wait()
        except TimeoutError:
            resource_id = held.producer.resource_id
            raise ResumeBusy(f"Upload {resource_id} is still busy; try again") from None

    async def _expire(self, held: _Held) -> None:
        await asyncio.sleep(self.grace)
        if self._held.get(held.producer.resource_id) is held:
            del self._held[held.producer.resource_id]
            await held.producer.fail(CLIENT_LOST)
            logger.warning(
                "upload %s FAILED: its client did not resume within %g s",
                held.producer.resource_id,
                self.grace,
            )

    async def close(self) -> list[UploadProducer]:
        """Stop every timer (the server is stopping); returns the waiting producers, which the
        caller leaves unfinished for the next start."""
        waiting = []
        for held in self._held.values():
            if held.expiry is not None:
                held.expiry.cancel()
            if held.let_go.is_set():
                waiting.append(held.producer)
        self._held.clear()
        return waiting
