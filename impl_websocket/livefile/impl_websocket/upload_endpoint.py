"""The upload WebSocket endpoint: carries frames between the socket, the upload protocol machine
and the resource manager, and turns every way an upload can end into a truthful status.

A connection carries one upload, or — when ``StartUpload`` asks ``keepOpen`` — one after another,
each a complete upload of its own (resource, quotas, statuses, FAILED if the connection ends
before its acknowledgement).

Two dialects (``Dialect``): a client that negotiated ``livefile.v1`` gets every extension; one
that named no subprotocol gets step-streaming's protocol exactly — ``ReadyForUpload`` with its
reference only, no statuses on the connection, an MD5 ``UploadAcknowledged`` spelt as the Java
server spells it, and the close left to the client (``1000 Upload completed``), as
step-streaming's own clients expect. Its data is one binary message, usually fragmented: under
``livefile serve`` each fragment arrives as it comes (``FRAGMENTS_EXTENSION``).

In livefile's dialect an upload outlives a lost connection (when resume is on): instead of
FAILED it is parked, waiting for its client, and a connection that opens with ``ResumeUpload``
goes on with it (``upload_resume.py``, ``resumable_uploads.py``). A close the client chose (any
code but those of a lost connection) still ends it FAILED at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from opentelemetry import trace
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from livefile.api import close_codes
from livefile.api.errors import (
    JobRefusedError,
    LivefileError,
    PolicyViolationError,
    QuotaExceededError,
)
from livefile.api.messages import (
    SUBPROTOCOL,
    DerivedReference,
    Dialect,
    FinishUpload,
    ReadyForUpload,
    ResumeUpload,
    StartUpload,
    StatusChanged,
    UploadAcknowledged,
    UploadResumed,
)
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceKind,
    ResourceReference,
    TransferStatus,
)
from livefile.impl_common.close_reason import safe_close_reason
from livefile.impl_common.upload_protocol import (
    ProtocolViolation,
    UploadPhase,
    UploadServerProtocol,
)
from livefile.impl_server.access import TokenAuthority
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.upload import NotUtf8Error, UploadProducer
from livefile.impl_server.writer import StoppedError
from livefile.impl_websocket.connections import cancel_quietly
from livefile.impl_websocket.counters import COUNTERS
from livefile.impl_websocket.download_links import DownloadLinks
from livefile.impl_websocket.settings import Settings
from livefile.impl_websocket.tracing import TRACER, upload_ended
from livefile.impl_websocket.upload_resume import ResumeLater, claim_upload
from livefile.impl_websocket.zero_copy import FRAGMENT_KEY, FRAGMENTS_EXTENSION

# After UploadAcknowledged a step-streaming client closes the connection itself (1000 "Upload
# completed"); the server waits this long for it before closing on its own. The upload is
# COMPLETED and recorded before the acknowledgement, so however the connection then ends
# changes nothing.
CLIENT_CLOSE_GRACE = 10.0
# Why a step-streaming upload is refused by an ASGI server without livefile's frame handling:
# its one fragmented message would be buffered whole, up to the server's message size limit.
REASON_NEEDS_FRAMES = (
    f"Single-message uploads need livefile serve; send several messages with {SUBPROTOCOL}"
)

# Disconnect codes of a connection lost rather than closed by the client's choice: no close
# frame (1006), none with a code (1005), going away (1001: a client or server shutting down),
# a server restarting (1012).
LOST_CODES = frozenset({1001, 1005, 1006, 1012})

logger = logging.getLogger(__name__)


class Superseded(ConnectionError):
    """A new connection resumed this connection's upload (this one was half-open)."""


class UploadSession:
    """One upload connection from accept to close."""

    def __init__(
        self,
        websocket: WebSocket,
        manager: ResourceManager,
        settings: Settings,
        context_id: str | None,
        derivations: Derivations,
        authority: TokenAuthority | None = None,
        dialect: Dialect = Dialect.LIVEFILE,
        uploader: str | None = None,
    ) -> None:
        self.websocket = websocket
        self.uploader = uploader  # the token's id: it may delete its resources while they run
        self.dialect = dialect
        # Fragments of one binary message arrive one by one (``livefile serve``); elsewhere
        # the ASGI server would gather a step-streaming upload whole.
        self._fragments = FRAGMENTS_EXTENSION in websocket.scope.get("extensions", {})
        self.manager = manager
        self.derivations = derivations
        self.settings = settings
        self.context_id = context_id
        self.authority = authority  # signs the download token of the reference
        self.protocol = UploadServerProtocol()
        self.upload: UploadProducer | None = None
        self._send_lock = asyncio.Lock()
        self._forwarder: asyncio.Task[None] | None = None
        self._started_at = 0.0  # loop time of the current upload's StartUpload
        self._end_logged = False  # the current upload's end is in the log
        self._links = DownloadLinks(websocket, authority, settings.reference_token_ttl)
        self._span = trace.get_current_span()  # the connection's, when tracing is on
        self._superseded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        close: tuple[int, str] | None = None
        error = ResourceError(code="disconnected", message="the uploader's connection ended")
        lost = False  # the connection was lost, not closed: a resumable upload waits
        try:
            self._check_context()
            if self.dialect is Dialect.STEP_STREAMING and not self._fragments:
                raise ProtocolViolation(close_codes.UNSUPPORTED_DATA, REASON_NEEDS_FRAMES)
            await self._serve()
        except ProtocolViolation as exc:
            idle = exc.reason.startswith(close_codes.IDLE_PREFIX)  # between uploads: no refusal
            if self.upload is None and self.context_id is not None and not idle:
                self.manager.contexts.creation_refused(self.context_id, None, exc.reason)
            close = (exc.code, exc.reason)
            error = ResourceError(code="protocol_violation", message=exc.reason)
        except StoppedError as exc:  # deleted or expired while it ran: FAILED already
            prefix = (
                close_codes.EXPIRED_PREFIX
                if exc.error.code == "expired"
                else close_codes.DELETED_PREFIX
            )
            close = (close_codes.POLICY_VIOLATION, f"{prefix}{exc.error.message}")
        except (JobRefusedError, ResumeLater) as exc:  # e.g. a derivation cannot be queued now
            close = (close_codes.TRY_AGAIN_LATER, str(exc))
            error = ResourceError(code="refused", message=str(exc))
        except QuotaExceededError as exc:
            close = (close_codes.POLICY_VIOLATION, f"{close_codes.QUOTA_PREFIX}{exc}")
            error = ResourceError(code="quota_exceeded", message=str(exc))
        except PolicyViolationError as exc:
            close = (close_codes.POLICY_VIOLATION, str(exc))
            error = ResourceError(code="refused", message=str(exc))
        except NotUtf8Error as exc:
            close = (close_codes.INVALID_DATA, str(exc))
            error = ResourceError(code="invalid_utf8", message=str(exc))
        except LivefileError as exc:  # checksum mismatch, storage failure
            close = (close_codes.INTERNAL_ERROR, str(exc))
            error = ResourceError(code="server_error", message=str(exc))
        except WebSocketDisconnect as exc:
            lost = exc.code in LOST_CODES
        except ConnectionError:
            lost = True
        except Exception:
            logger.exception("upload connection failed")
            close = (close_codes.INTERNAL_ERROR, "Internal server error")
            error = ResourceError(code="server_error", message="Internal server error")
        finally:
            await self._stop_forwarder()
            # FAILED is published before the close frame leaves, so a client that reacts to the
            # close already finds the resource in its final, truthful state.
            if self.upload is not None and not self.upload.ended:
                if lost and await self.manager.resumable.park(self.upload):
                    self._end_logged = True  # not ended: waiting for its client
                else:
                    await self.upload.fail(error)
            if self.upload is not None and not self._end_logged:
                self._log_end()
            if close is not None:
                await self._close(*close)

    def _check_context(self) -> None:
        """A missing context is refused at once. An unknown or closed one is refused only for
        ``StartUpload`` (``create_upload`` says so): a ``ResumeUpload`` needs no open context —
        the upload's entry names its context, and the resume token proves its client — so an
        upload in a context goes on after a restart that forgot the context (kept in memory)."""
        if self.context_id is None and self.settings.require_upload_context:
            raise PolicyViolationError(close_codes.REASON_MISSING_CONTEXT)

    async def _serve(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            data = message.get("bytes")
            if data is not None:
                # A fragment is bounded by what one read brings, whatever its message's size.
                if FRAGMENT_KEY not in message and len(data) > self.settings.max_message_size:
                    raise ProtocolViolation(
                        close_codes.MESSAGE_TOO_BIG,
                        f"Binary message of {len(data)} bytes exceeds"
                        f" {self.settings.max_message_size}",
                    )
                self.protocol.receive_data()
                assert self.upload is not None
                COUNTERS.received_bytes += len(data)
                if data:  # an empty message is a keep-alive: only the idle timeout hears it
                    await self.upload.write(data)
                continue
            text = message.get("text") or ""
            if (size := len(text.encode())) > self.settings.max_text_message_size:
                raise ProtocolViolation(
                    close_codes.MESSAGE_TOO_BIG,
                    f"Text message of {size} bytes exceeds {self.settings.max_text_message_size}",
                )
            request = self.protocol.receive_text(text)
            if isinstance(request, StartUpload):
                await self._start(request)
            elif isinstance(request, ResumeUpload):
                if not await self._resume(request):
                    return  # it had completed: acknowledged again
            elif isinstance(request, FinishUpload):
                await self._finish(request)
                if self.protocol.phase is UploadPhase.DONE:
                    if self.dialect is Dialect.STEP_STREAMING:
                        await self._await_client_close()
                    return

    async def _receive(self) -> Message:
        """The next message; a client that stays silent too long is disconnected. Any message
        counts, an empty binary one too (the SDK's keep-alive for a quiet source); WebSocket
        pings do not, and a client that is gone sends nothing, so its upload still FAILS."""
        waiting_for_start = self.protocol.phase is UploadPhase.AWAITING_START
        timeout = (
            self.settings.start_timeout if waiting_for_start else self.settings.upload_idle_timeout
        )
        receiving = asyncio.ensure_future(self.websocket.receive())
        waits: set[asyncio.Future[Any]] = {receiving, self._superseded}
        if self.upload is not None:
            # Storing failed (e.g. the disk is full), or the resource was deleted or expired:
            # end now, not at the next message.
            waits.add(self.upload.writer.storage_failed)
            waits.add(self.upload.writer.stopped)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receiving.done():
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
        if not receiving.cancelled():
            return receiving.result()
        if self._superseded.done():
            raise Superseded("a new connection resumed the upload")
        if self.upload is not None:
            self.upload.writer.check_stopped()
            self.upload.check_storage()
        if waiting_for_start and self.protocol.completed:
            raise ProtocolViolation(
                close_codes.POLICY_VIOLATION,
                f"{close_codes.IDLE_PREFIX}{timeout:g} s after the last upload: connection closed",
            )
        what = "No StartUpload" if waiting_for_start else "No data"
        raise ProtocolViolation(
            close_codes.POLICY_VIOLATION, f"{what} for {timeout:g} s: connection closed"
        )

    async def _await_client_close(self) -> None:
        """step-streaming's client closes after the acknowledgement: give it the time to, and
        discard whatever else it sends meanwhile; then close anyway."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLIENT_CLOSE_GRACE):
                while (await self.websocket.receive())["type"] != "websocket.disconnect":
                    pass
            return
        await self._close(close_codes.NORMAL, close_codes.REASON_UPLOAD_COMPLETED)

    @TRACER.start_as_current_span("livefile.upload.start")
    async def _start(self, request: StartUpload) -> None:
        if self.dialect is Dialect.STEP_STREAMING:
            # step-streaming's protocol: MD5, one upload per connection, nothing derived.
            request = request.model_copy(
                update={"checksum_algorithm": ChecksumAlgorithm.MD5, "keep_open": False}
                | {"repack": False, "image": False}
            )
            self.protocol.keep_open = False
        self.upload = await self.manager.create_upload(
            request.metadata,
            self.context_id,
            request.checksum_algorithm,
            self.uploader,
            resumable=self.dialect is Dialect.LIVEFILE and bool(request.resumable),
        )
        if self.upload.resume_token is not None:
            self.manager.resumable.attach(self.upload, self._supersede)
        self.protocol.resource_ready()
        resource_id = self.upload.resource_id
        self._started_at = asyncio.get_running_loop().time()
        self._end_logged = False
        logger.info(
            "upload %s started: %r (%s%s)%s",
            resource_id,
            request.metadata.filename,
            request.metadata.mime_type,
            ", line access" if request.metadata.supports_line_access else "",
            f" in context {self.context_id}" if self.context_id else "",
        )
        derived = []
        if request.repack:
            repacked = await self.derivations.start_repack(resource_id)
            derived.append(self._derived(repacked, ResourceKind.REPACK))
        if request.image:
            image = await self.derivations.start_image(resource_id)
            derived.append(self._derived(image, ResourceKind.IMAGE))
        reference = ResourceReference(uri=self._links.uri(resource_id))
        ready = ReadyForUpload(
            reference=reference,
            resource_id=resource_id,
            derived=derived or None,
            resume_token=self.upload.resume_token,
        )
        await self._send(ready.to_json(self.dialect))
        if self.dialect is Dialect.LIVEFILE:  # step-streaming's uploader hears nothing more
            self._forwarder = asyncio.create_task(self._forward_statuses(resource_id))

    async def _resume(self, request: ResumeUpload) -> bool:
        """Go on with the upload ``request`` names: True, ``UploadResumed`` sent; False when it
        had completed and was acknowledged again."""
        if self.dialect is Dialect.STEP_STREAMING:
            raise PolicyViolationError(f"ResumeUpload needs the subprotocol {SUBPROTOCOL}")
        claimed = await claim_upload(self.manager, request, self.context_id, self._supersede)
        if isinstance(claimed, UploadAcknowledged):
            self.protocol.resumed_completed()
            await self._send(claimed.to_json())
            await self._close(close_codes.NORMAL, close_codes.REASON_UPLOAD_COMPLETED)
            return False
        self.upload = claimed
        self.protocol.resource_ready()
        self._started_at = asyncio.get_running_loop().time()
        self._end_logged = False
        offset = claimed.writer.written
        logger.info("upload %s resumed at %d bytes", claimed.resource_id, offset)
        resumed = UploadResumed(resource_id=claimed.resource_id, offset=offset)
        await self._send(resumed.to_json())
        self._forwarder = asyncio.create_task(self._forward_statuses(claimed.resource_id))
        return True

    def _supersede(self) -> None:
        if not self._superseded.done():
            self._superseded.set_result(None)

    @TRACER.start_as_current_span("livefile.upload.finish")
    async def _finish(self, request: FinishUpload) -> None:
        assert self.upload is not None
        await self._stop_forwarder()
        status = await self.upload.finish(request.checksum)
        self.protocol.acknowledged()
        ack = UploadAcknowledged(
            size=status.current_size,
            checksum=self.upload.checksum,
            checksum_algorithm=self.upload.checksum_algorithm,
            number_of_lines=status.number_of_lines,
        )
        await self._send(ack.to_json(self.dialect))
        self._log_end()
        if self.protocol.phase is UploadPhase.DONE and self.dialect is Dialect.LIVEFILE:
            await self._close(close_codes.NORMAL, close_codes.REASON_UPLOAD_COMPLETED)
        elif self.protocol.phase is UploadPhase.AWAITING_START:
            self.upload = None  # kept open: the connection now awaits the next StartUpload

    def _log_end(self) -> None:
        """One line for the end of the current upload: id, name, size, status and duration
        (a warning with the reason when it FAILED)."""
        assert self.upload is not None
        self._end_logged = True
        status = self.upload.status
        seconds = asyncio.get_running_loop().time() - self._started_at
        failed = status.transfer_status is TransferStatus.FAILED
        COUNTERS.uploads["failed" if failed else "completed"] += 1
        upload_ended(self._span, status, seconds)
        lines = "" if status.number_of_lines is None else f", {status.number_of_lines} lines"
        why = f" ({status.error.code}: {status.error.message})" if status.error else ""
        logger.log(
            logging.WARNING if failed else logging.INFO,
            "upload %s %s: %r, %d bytes%s in %.2f s%s",
            self.upload.resource_id,
            status.transfer_status.value,
            self.upload.metadata.filename,
            status.current_size,
            lines,
            seconds,
            why,
        )

    async def _forward_statuses(self, resource_id: str) -> None:
        """Tell the uploader of each checkpoint: its progress acknowledged by the server.

        From one checkpoint interval after the start on: an upload that ends sooner learns
        everything from its acknowledgement, and for many small uploads the statuses nobody
        needs (a subscription, a task and two messages each) were the largest cost left.
        """
        await asyncio.sleep(self.settings.checkpoint_interval)
        subscription = await self.manager.subscribe(resource_id)
        if subscription is None:
            return
        try:
            async for status in subscription:
                await self._send(StatusChanged(resource_status=status).to_json())
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            pass
        finally:
            subscription.close()

    async def _stop_forwarder(self) -> None:
        if self._forwarder is not None:
            await cancel_quietly(self._forwarder)
            self._forwarder = None

    def _derived(self, resource_id: str, kind: ResourceKind) -> DerivedReference:
        uri = self._links.uri(resource_id)
        return DerivedReference(id=resource_id, kind=kind, reference=ResourceReference(uri=uri))

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self.websocket.send_text(text)

    async def _close(self, code: int, reason: str) -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with self._send_lock:
                    await self.websocket.close(code, safe_close_reason(reason))
