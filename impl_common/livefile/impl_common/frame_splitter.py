"""Taking large binary messages out of incoming WebSocket bytes before websockets' parser sees
them, at either end of a connection.

websockets parses a frame by appending every received chunk to one growing buffer and slicing
the payload out of it (and unmasking the slice, on a server): two or three copies of every
byte, with the buffer's reallocations on top. An upload is almost only large binary messages
to the server, a download almost only large binary messages to the client; those copies were
a fifth of the server's CPU in an upload. ``FrameSplitter`` follows the frame boundaries
itself: a whole, unfragmented binary frame of at least ``TAKE_MIN`` bytes is gathered from the
chunks as they arrive and joined (and unmasked) once, and every other byte (text, control
frames, fragments, frames the protocol state does not allow) goes on to websockets unchanged
and in order, so its parser always stands at a frame boundary when the splitter takes a frame.

On a server it can also take **fragmented binary messages** (``deliver_fragment``): the first
frame BINARY with FIN=0, then CONTINUATION frames up to one with FIN=1 — how step-streaming's
clients send a whole upload, of any size, as one message. websockets would gather such a
message whole (refusing it past its size limit); here each fragment's payload is unmasked and
handed on as it arrives, whatever the frames' sizes, one delivery per chunk of incoming bytes
(a chunk's fragments joined), so memory stays bounded by a chunk and watchers follow the
upload live. Control frames (ping, pong, close) may come between fragments: they go to
websockets in order, after the data that preceded them. A data frame that is not a
continuation in the middle of such a message breaks RFC 6455 and is refused (``fail``).

Written without I/O and without importing websockets: the caller hands in how to unmask and
what websockets' state allows.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

# Below this the copies saved do not pay for a frame's bookkeeping here.
TAKE_MIN = 16 * 1024
_FIN_BINARY = 0x82  # FIN set, RSV1-3 clear, opcode 2
_FIRST_FRAGMENT = 0x02  # FIN clear, RSV1-3 clear, opcode 2: a binary message begins
_FIN = 0x80
_RSV_AND_OPCODE = 0x7F
_CONTINUATION = 0x00
_CONTROL = 0x08  # opcodes 8 and above are control frames
_MASKED = 0x80
_LENGTH_16 = 126
_LENGTH_64 = 127
_LONGEST_HEADER = 14  # two bytes, a 64-bit length, a mask

# Whether a binary frame of this many bytes may be taken here (the protocol's state: open, no
# fragmented message under way, no extension that would transform payloads, within the size
# limit; a frame over it goes to websockets, which refuses it with 1009).
MayTake = Callable[[int], bool]
# Hands bytes to websockets' parser; False when the parser failed and the rest is to be dropped.
PassOn = Callable[[bytes], bool]
# Receives a taken frame's payload (unmasked): one whole binary message.
Deliver = Callable[[bytes], None]
# websockets' ``apply_mask(data, mask)`` (C, SSE2): a server unmasks what clients send.
Unmask = Callable[[memoryview | bytes, bytes], bytes]
# Receives the payload of fragments of a fragmented binary message as they arrive, and whether
# this delivery ends the message.
DeliverFragment = Callable[[bytes, bool], None]
# Whether a fragmented binary message may begin now (open, no message under way in websockets,
# no extension that would transform payloads).
MayBegin = Callable[[], bool]
# The peer broke the framing rules: close the connection (1002) with this reason.
Fail = Callable[[str], None]


def at_frame_boundary(parser: Generator[Any, Any, Any] | None) -> bool:
    """Whether websockets' incoming parser (``Protocol.parser``) waits for the first byte of a
    frame with nothing buffered: suspended, innermost, in ``StreamReader.at_eof``, which
    returns as soon as there is a byte. Mid-frame it is inside ``Frame.parse`` instead. Any
    other shape (another websockets) answers False: the splitter is then never used."""
    inner: Any = parser
    while (deeper := getattr(inner, "gi_yieldfrom", None)) is not None:
        inner = deeper
    return getattr(inner, "__name__", None) == "at_eof"


def header_size(first_two: bytes | bytearray | memoryview) -> int:
    """The size of a frame's header, from its first two bytes."""
    length_code = first_two[1] & 0x7F
    extended = 2 if length_code == _LENGTH_16 else 8 if length_code == _LENGTH_64 else 0
    return 2 + extended + (4 if first_two[1] & _MASKED else 0)


def payload_length(header: bytes) -> int:
    length_code = header[1] & 0x7F
    if length_code == _LENGTH_16:
        return int.from_bytes(header[2:4], "big")
    if length_code == _LENGTH_64:
        return int.from_bytes(header[2:10], "big")
    return length_code


def websockets_allows_fragments(protocol: Any) -> bool:
    """Whether a fragmented binary message may begin now in websockets' ``Protocol``: open, no
    message under way, no extension that would transform payloads."""
    return (
        protocol.state.name == "OPEN" and protocol.current_size is None and not protocol.extensions
    )


def websockets_accepts(protocol: Any, length: int) -> bool:
    """Whether websockets' ``Protocol`` (either side) takes a whole binary frame of ``length``
    bytes as a message now: open (``State.OPEN``), no fragmented message under way, no
    extension that would transform payloads, within its size limit."""
    return (
        protocol.state.name == "OPEN"
        and protocol.current_size is None
        and not protocol.extensions
        and (protocol.max_message_size is None or length <= protocol.max_message_size)
    )


class FrameSplitter:
    """Splits incoming bytes, from a frame boundary on, between large binary frames taken here
    and everything else, passed on to websockets. With ``unmask`` (a server) it takes masked
    frames only, as clients must send; without (a client), unmasked frames only, as servers
    must send: a frame breaking that rule goes to websockets, which refuses it."""

    def __init__(
        self,
        may_take: MayTake,
        pass_on: PassOn,
        deliver: Deliver,
        unmask: Unmask | None = None,
        fragments: tuple[MayBegin, DeliverFragment, Fail] | None = None,
    ) -> None:
        self._unmask = unmask
        # Taking fragmented binary messages too (a server only: the fragments are unmasked).
        self._fragments = fragments if unmask is not None else None
        self._in_message = False  # a fragmented binary message taken here is under way
        self._streaming = 0  # bytes still to come of the fragment being streamed
        self._offset = 0  # bytes of that fragment already streamed (for the mask's phase)
        self._fin = False  # that fragment ends its message
        self._gathered: list[bytes] = []  # fragment payload of this chunk, not yet delivered
        self._masked = _MASKED if unmask is not None else 0
        self._may_take = may_take
        self._pass_on = pass_on
        self._deliver = deliver
        self._header = bytearray()  # a header begun at the end of the last chunk
        self._passing = 0  # bytes still to come of a frame being passed on
        self._pieces: list[memoryview] = []  # what has arrived of the frame being taken
        self._missing = 0  # bytes still to come of the frame being taken
        self._mask = b""
        self._stopped = False  # websockets' parser failed: the connection is closing

    def feed(self, data: bytes) -> None:
        if self._stopped:
            return
        view = memoryview(data)
        end = len(view)
        pos = 0
        unsent = 0  # view[unsent:pos] is still to be passed on
        while pos < end:
            if self._streaming:
                count = min(self._streaming, end - pos)
                self._gather(view[pos : pos + count])
                self._streaming -= count
                pos = unsent = pos + count
                if not self._streaming and self._fin:
                    self._end_message()
            elif self._missing:
                count = min(self._missing, end - pos)
                self._pieces.append(view[pos : pos + count])
                self._missing -= count
                pos = unsent = pos + count
                if not self._missing:
                    self._complete()
            elif self._passing:
                count = min(self._passing, end - pos)
                self._passing -= count
                pos += count
            else:
                # A header begins here, or began at the end of the last chunk.
                header = bytes(self._header) + bytes(view[pos : pos + _LONGEST_HEADER])
                size = header_size(header) if len(header) >= 2 else _LONGEST_HEADER + 1
                if len(header) < size:  # the rest comes with the next chunk
                    if unsent < pos and not self._send(bytes(view[unsent:pos])):
                        return
                    self._header += view[pos:end]
                    return
                in_this_chunk = size - len(self._header)
                length = payload_length(header)
                fragment = self._fragment_frame(header)
                if fragment is None:  # the framing is broken: the connection is closing
                    return
                if fragment:
                    if unsent < pos and not self._send(bytes(view[unsent:pos])):
                        return
                    self._mask = header[size - 4 : size]
                    self._in_message = True
                    self._fin = bool(header[0] & _FIN)
                    self._streaming, self._offset = length, 0
                    pos = unsent = pos + in_this_chunk
                    if not length and self._fin:
                        self._end_message()
                elif (
                    header[0] == _FIN_BINARY
                    and header[1] & _MASKED == self._masked
                    and length >= TAKE_MIN
                    and self._may_take(length)
                ):
                    if unsent < pos and not self._send(bytes(view[unsent:pos])):
                        return
                    self._mask = header[size - 4 : size] if self._masked else b""
                    self._missing = length
                    pos = unsent = pos + in_this_chunk
                else:
                    # The part of the header that came with the last chunk goes first; it
                    # precedes everything in this one (the header began there, so pos is 0).
                    if self._header and not self._send(bytes(self._header)):
                        return
                    self._passing = length
                    pos += in_this_chunk
                self._header.clear()
        if unsent < end:
            self._send(data if unsent == 0 else bytes(view[unsent:end]))
        self._deliver_gathered(last=False)

    def _fragment_frame(self, header: bytes) -> bool | None:
        """Whether the frame that begins with ``header`` is a fragment to take here; None when
        it breaks the framing (then the connection is failed)."""
        if self._fragments is None:
            return False
        masked = header[1] & _MASKED == self._masked
        if self._in_message:
            opcode = header[0] & 0x0F
            if opcode >= _CONTROL:
                return False  # a ping, pong or close between fragments: websockets' business
            if header[0] & _RSV_AND_OPCODE == _CONTINUATION and masked:
                return True
            self._deliver_gathered(last=False)
            self._stopped = True
            self._fragments[2](
                "Expected a continuation frame of the fragmented binary message under way"
            )
            return None
        return header[0] == _FIRST_FRAGMENT and masked and self._fragments[0]()

    def _gather(self, piece: memoryview) -> None:
        assert self._unmask is not None
        phase = self._offset % 4
        mask = self._mask[phase:] + self._mask[:phase] if phase else self._mask
        self._gathered.append(self._unmask(piece, mask))
        self._offset += len(piece)

    def _end_message(self) -> None:
        self._in_message = False
        self._deliver_gathered(last=True)

    def _deliver_gathered(self, last: bool) -> None:
        if self._fragments is None or not (self._gathered or last):
            return
        gathered, self._gathered = self._gathered, []
        self._fragments[1](gathered[0] if len(gathered) == 1 else b"".join(gathered), last)

    def _send(self, data: bytes) -> bool:
        # What was taken of a fragmented message before these bytes reaches the app first.
        self._deliver_gathered(last=False)
        if not self._pass_on(data):
            self._stopped = True
        return not self._stopped

    def _complete(self) -> None:
        pieces, self._pieces = self._pieces, []
        if self._unmask is not None:
            payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._deliver(self._unmask(payload, self._mask))
        else:
            self._deliver(pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces))
