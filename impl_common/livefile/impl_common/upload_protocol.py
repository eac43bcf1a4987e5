"""The upload exchange as sans-I/O state machines, one per side.

Server: ``StartUpload`` → (server sends ``ReadyForUpload``) → binary data messages →
``FinishUpload`` → (server sends ``UploadAcknowledged``) → close; or, when ``StartUpload`` asked
``keepOpen``, back to awaiting the next ``StartUpload`` on the same connection. A connection may
open with ``ResumeUpload`` instead (→ ``UploadResumed``, then data and ``FinishUpload`` as
above; or → ``UploadAcknowledged`` at once for an upload that had completed). Anything else is
a protocol violation that names the close code and a reason; the I/O layer only carries the
frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from livefile.api import close_codes
from livefile.api.errors import ProtocolError
from livefile.api.messages import (
    FinishUpload,
    ReadyForUpload,
    ResumeUpload,
    StartUpload,
    StatusChanged,
    UploadAcknowledged,
    UploadResumed,
    parse_message,
)


@dataclass
class ProtocolViolation(Exception):
    """The peer broke the protocol; close the connection with ``code`` and ``reason``."""

    code: int
    reason: str

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class UploadPhase(enum.Enum):
    AWAITING_START = "awaiting StartUpload"
    STARTING = "creating the resource"
    UPLOADING = "uploading"
    FINISHING = "finishing"
    DONE = "done"


class UploadServerProtocol:
    """What the server may receive on an upload connection, and when."""

    def __init__(self) -> None:
        self.phase = UploadPhase.AWAITING_START
        self.keep_open = False  # what the current upload's StartUpload asked
        self.completed = 0  # uploads acknowledged on this connection

    def receive_text(self, text: str) -> StartUpload | ResumeUpload | FinishUpload:
        try:
            message = parse_message(text)
        except ProtocolError as exc:
            raise ProtocolViolation(close_codes.PROTOCOL_ERROR, str(exc)) from None
        if isinstance(message, StartUpload) and self.phase is UploadPhase.AWAITING_START:
            self.phase = UploadPhase.STARTING
            self.keep_open = message.keep_open
            return message
        if (
            isinstance(message, ResumeUpload)
            and self.phase is UploadPhase.AWAITING_START
            and not self.completed
        ):
            self.phase = UploadPhase.STARTING
            self.keep_open = False  # a resumed upload ends its connection
            return message
        if isinstance(message, FinishUpload) and self.phase is UploadPhase.UPLOADING:
            self.phase = UploadPhase.FINISHING
            return message
        raise ProtocolViolation(
            close_codes.PROTOCOL_ERROR,
            f"Unexpected {message.kind} while {self.phase.value}",
        )

    def receive_data(self) -> None:
        if self.phase is not UploadPhase.UPLOADING:
            raise ProtocolViolation(
                close_codes.PROTOCOL_ERROR, f"Unexpected binary data while {self.phase.value}"
            )

    def resource_ready(self) -> None:
        assert self.phase is UploadPhase.STARTING
        self.phase = UploadPhase.UPLOADING

    def resumed_completed(self) -> None:
        """``ResumeUpload`` named an upload that had completed: it is acknowledged again and
        the connection ends."""
        assert self.phase is UploadPhase.STARTING
        self.completed += 1
        self.phase = UploadPhase.DONE

    def acknowledged(self) -> None:
        """The upload is acknowledged: the connection ends, or awaits the next upload."""
        assert self.phase is UploadPhase.FINISHING
        self.completed += 1
        self.phase = UploadPhase.AWAITING_START if self.keep_open else UploadPhase.DONE


class UploadClientProtocol:
    """What the client may receive on an upload connection, and when.

    A client that has all its data may send ``StartUpload``, the data and ``FinishUpload`` back
    to back, without waiting for ``ReadyForUpload`` (the server handles them in order): then
    the reference arrives while finishing.
    """

    def __init__(self, resuming: bool = False) -> None:
        # Resuming: ``ResumeUpload`` was sent, ``UploadResumed`` (or, for an upload that had
        # completed, ``UploadAcknowledged``) comes first.
        self.phase = UploadPhase.STARTING
        self.resuming = resuming
        self.ready = False  # ReadyForUpload (or UploadResumed) received

    def receive_text(
        self, text: str
    ) -> ReadyForUpload | UploadResumed | StatusChanged | UploadAcknowledged:
        message = parse_message(text)
        if self.resuming and not self.ready:
            if isinstance(message, UploadResumed):
                self.ready = True
                self.phase = UploadPhase.UPLOADING
                return message
            if isinstance(message, UploadAcknowledged):
                self.ready = True
                self.phase = UploadPhase.DONE
                return message
            raise ProtocolError(f"Unexpected {message.kind} from the server while resuming")
        if (
            isinstance(message, ReadyForUpload)
            and not self.ready
            and self.phase
            in (
                UploadPhase.STARTING,
                UploadPhase.FINISHING,
            )
        ):
            self.ready = True
            if self.phase is UploadPhase.STARTING:
                self.phase = UploadPhase.UPLOADING
            return message
        if (
            isinstance(message, StatusChanged)
            and self.ready
            and self.phase in (UploadPhase.UPLOADING, UploadPhase.FINISHING)
        ):
            return message
        if (
            isinstance(message, UploadAcknowledged)
            and self.ready
            and self.phase is UploadPhase.FINISHING
        ):
            self.phase = UploadPhase.DONE
            return message
        raise ProtocolError(f"Unexpected {message.kind} from the server while {self.phase.value}")

    def finishing(self) -> None:
        """``FinishUpload`` is being sent: after ``ReadyForUpload``, or pipelined before it."""
        if self.phase not in (UploadPhase.UPLOADING, UploadPhase.STARTING):
            raise ProtocolError(f"Cannot finish an upload while {self.phase.value}")
        self.phase = UploadPhase.FINISHING
