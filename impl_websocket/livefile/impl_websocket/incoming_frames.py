"""Taking large binary messages out of a server's incoming WebSocket bytes before websockets'
parser sees them.

websockets parses a frame by appending every received chunk to one growing buffer, slicing the
payload out of it and unmasking the slice: three copies of every byte, with the buffer's
reallocations on top. For an upload, which is almost only large binary messages, those copies
were a fifth of the server's CPU. ``FrameSplitter`` follows the frame boundaries itself: a
whole, masked, unfragmented binary frame of at least ``TAKE_MIN`` bytes is gathered here from
the chunks as they arrive and unmasked once, and every other byte (text, control frames,
fragments, frames the protocol state does not allow) goes on to websockets unchanged and in
order, so its parser always stands at a frame boundary when the splitter takes a frame.
"""

from __future__ import annotations

from collections.abc import Callable

try:  # websockets' C unmasking; its pure-Python fallback otherwise, as websockets does
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the wheels ship the extension
    from websockets.utils import apply_mask

# Below this the copies saved do not pay for a frame's bookkeeping here.
TAKE_MIN = 16 * 1024
_FIN_BINARY = 0x82  # FIN set, RSV1-3 clear, opcode 2
_MASKED = 0x80
_LENGTH_16 = 126
_LENGTH_64 = 127

# Whether a binary frame of this many bytes may be taken here (the protocol's state: open, no
# fragmented message under way, no extension that would transform payloads, within the size
# limit; a frame over it goes to websockets, which refuses it with 1009).
MayTake = Callable[[int], bool]
# Hands bytes to websockets' parser; False when the parser failed and the rest is to be dropped.
PassOn = Callable[[bytes], bool]
# Receives a taken frame's unmasked payload: one whole binary message.
Deliver = Callable[[bytes], None]


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


class FrameSplitter:
    """Splits a server's incoming bytes, from a frame boundary on, between large binary frames
    taken here and everything else, passed on to websockets."""

    def __init__(self, may_take: MayTake, pass_on: PassOn, deliver: Deliver) -> None:
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
            if self._missing:
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
                header = bytes(self._header) + bytes(view[pos : pos + 14])
                size = header_size(header) if len(header) >= 2 else 15
                if len(header) < size:  # the rest comes with the next chunk
                    if unsent < pos and not self._send(bytes(view[unsent:pos])):
                        return
                    self._header += view[pos:end]
                    return
                in_this_chunk = size - len(self._header)
                length = payload_length(header)
                if (
                    header[0] == _FIN_BINARY
                    and header[1] & _MASKED
                    and length >= TAKE_MIN
                    and self._may_take(length)
                ):
                    if unsent < pos and not self._send(bytes(view[unsent:pos])):
                        return
                    self._mask = header[size - 4 : size]
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

    def _send(self, data: bytes) -> bool:
        if not self._pass_on(data):
            self._stopped = True
        return not self._stopped

    def _complete(self) -> None:
        pieces, self._pieces = self._pieces, []
        payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._deliver(apply_mask(payload, self._mask))
