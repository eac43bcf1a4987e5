"""The frame splitter against a reference model: whatever the chunking of the incoming bytes,
large whole binary frames come out as messages (a server's unmasked; a server takes only masked
frames, a client only unmasked ones), and every other byte reaches websockets unchanged and in
order, messages and passed bytes interleaved as they were sent."""

from __future__ import annotations

import itertools
import random
from collections.abc import Generator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import CLIENT, SERVER, Protocol, State
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask
from websockets.uri import parse_uri

from livefile.impl_common.frame_splitter import (
    TAKE_MIN,
    FrameSplitter,
    at_frame_boundary,
    websockets_accepts,
)

LIMIT = 80_000  # the model's message size limit: a larger frame is left to websockets
TEXT, BINARY, CONTINUATION, PING = 0x1, 0x2, 0x0, 0x9

Event = tuple[str, bytes]  # ("pass", bytes handed to websockets) or ("message", payload)


@dataclass(frozen=True)
class FrameSpec:
    opcode: int
    size: int
    fin: bool = True
    masked: bool = True
    rsv1: bool = False

    def encode(self, seed: int) -> tuple[bytes, bytes]:
        """The frame on the wire, and its payload before masking."""
        rng = random.Random(seed)
        payload = rng.randbytes(self.size)
        if self.opcode == TEXT:  # valid UTF-8, for websockets' parser
            payload = bytes(ord("a") + byte % 26 for byte in payload)
        first = (0x80 if self.fin else 0) | (0x40 if self.rsv1 else 0) | self.opcode
        mask_bit = 0x80 if self.masked else 0
        if self.size < 126:
            header = bytes([first, mask_bit | self.size])
        elif self.size < 65536:
            header = bytes([first, mask_bit | 126]) + self.size.to_bytes(2, "big")
        else:
            header = bytes([first, mask_bit | 127]) + self.size.to_bytes(8, "big")
        if not self.masked:
            return header + payload, payload
        mask = rng.randbytes(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return header + mask + masked, payload

    def taken(self, by_server: bool) -> bool:
        return (
            self.opcode == BINARY
            and self.fin
            and self.masked == by_server
            and not self.rsv1
            and TAKE_MIN <= self.size <= LIMIT
        )


frame_specs = st.one_of(
    st.builds(FrameSpec, st.just(BINARY), st.integers(TAKE_MIN, LIMIT)),  # taken
    st.builds(FrameSpec, st.just(BINARY), st.integers(LIMIT + 1, LIMIT + 100)),  # over the limit
    st.builds(FrameSpec, st.just(BINARY), st.integers(0, TAKE_MIN - 1)),  # too small to pay
    st.builds(FrameSpec, st.just(BINARY), st.integers(TAKE_MIN, 70_000), fin=st.just(False)),
    st.builds(FrameSpec, st.just(CONTINUATION), st.integers(0, 70_000)),
    st.builds(FrameSpec, st.just(BINARY), st.integers(TAKE_MIN, 70_000), masked=st.just(False)),
    st.builds(FrameSpec, st.just(TEXT), st.integers(0, 300), masked=st.just(False)),
    st.builds(FrameSpec, st.just(BINARY), st.integers(TAKE_MIN, 20_000), rsv1=st.just(True)),
    st.builds(FrameSpec, st.just(TEXT), st.integers(0, 300)),
    st.builds(FrameSpec, st.just(PING), st.integers(0, 125)),
)


def expected_events(
    frames: list[tuple[FrameSpec, bytes, bytes]], by_server: bool = True
) -> list[Event]:
    events: list[Event] = []
    for spec, wire, payload in frames:
        if spec.taken(by_server):
            events.append(("message", payload))
        elif events and events[-1][0] == "pass":
            events[-1] = ("pass", events[-1][1] + wire)
        else:
            events.append(("pass", wire))
    return events


def run_splitter(stream: bytes, cuts: list[int], by_server: bool = True) -> list[Event]:
    events: list[Event] = []

    def pass_on(data: bytes) -> bool:
        if events and events[-1][0] == "pass":
            events[-1] = ("pass", events[-1][1] + data)
        else:
            events.append(("pass", bytes(data)))
        return True

    splitter = FrameSplitter(
        lambda length: length <= LIMIT,
        pass_on,
        lambda message: events.append(("message", message)),
        apply_mask if by_server else None,
    )
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, stop in itertools.pairwise(bounds):
        if stop > start:
            splitter.feed(stream[start:stop])
    return events


@settings(max_examples=150, deadline=None)
@given(
    by_server=st.booleans(),
    specs=st.lists(frame_specs, min_size=1, max_size=8),
    seed=st.integers(0, 2**32),
    cut_fractions=st.lists(st.floats(0, 1), max_size=12),
    small_cuts=st.lists(st.integers(0, 20), max_size=4),
)
def test_any_chunking_yields_the_taken_messages_and_passes_on_the_rest(
    by_server: bool,
    specs: list[FrameSpec],
    seed: int,
    cut_fractions: list[float],
    small_cuts: list[int],
) -> None:
    frames = [(spec, *spec.encode(seed + i)) for i, spec in enumerate(specs)]
    stream = b"".join(wire for _, wire, _ in frames)
    # Cuts anywhere, and cuts inside the first header (two bytes, extended length, mask).
    cuts = [int(f * len(stream)) for f in cut_fractions] + small_cuts
    assert run_splitter(stream, cuts, by_server) == expected_events(frames, by_server)


@pytest.mark.parametrize("taken", [True, False], ids=["taken", "passed"])
@pytest.mark.parametrize("split", range(1, 14))
def test_a_header_split_across_two_chunks_is_read(taken: bool, split: int) -> None:
    """Every split point of a 14-byte header (two bytes, 64-bit length, mask), the second chunk
    carrying the rest of the header and the start of the payload."""
    specs = [
        FrameSpec(BINARY, 70_000 if taken else LIMIT + 1),
        FrameSpec(TEXT, 5),
        FrameSpec(BINARY, TAKE_MIN),
    ]
    frames = [(spec, *spec.encode(i)) for i, spec in enumerate(specs)]
    stream = b"".join(wire for _, wire, _ in frames)
    assert run_splitter(stream, [split]) == expected_events(frames)


def test_a_header_split_after_every_byte_is_read() -> None:
    specs = [FrameSpec(BINARY, 70_000), FrameSpec(TEXT, 5), FrameSpec(BINARY, TAKE_MIN)]
    frames = [(spec, *spec.encode(i)) for i, spec in enumerate(specs)]
    stream = b"".join(wire for _, wire, _ in frames)
    second, third = len(frames[0][1]), len(frames[0][1]) + len(frames[1][1])
    cuts = [*range(1, 15), *range(second, second + 8), *range(third, third + 9)]
    assert run_splitter(stream, cuts) == expected_events(frames)


def test_nothing_more_is_passed_on_once_websockets_has_failed() -> None:
    passed: list[bytes] = []
    messages: list[bytes] = []

    def fail_at_once(data: bytes) -> bool:
        passed.append(bytes(data))
        return False

    splitter = FrameSplitter(lambda length: True, fail_at_once, messages.append, apply_mask)
    text, _ = FrameSpec(TEXT, 10).encode(1)
    binary, _ = FrameSpec(BINARY, TAKE_MIN).encode(2)
    splitter.feed(text + binary)
    splitter.feed(binary)
    assert (passed, messages) == ([text], [])


@pytest.mark.parametrize("by_server", [True, False], ids=["server", "client"])
def test_websockets_parses_what_is_passed_on_as_the_frames_that_were_not_taken(
    by_server: bool,
) -> None:
    """The passed bytes are whole frames: websockets' own parser, handed only those, reads the
    text, the ping and the small binary message that the splitter left to it."""
    protocol = Protocol(SERVER if by_server else CLIENT, state=State.OPEN)  # past the handshake
    messages: list[bytes] = []

    def pass_on(data: bytes) -> bool:
        protocol.receive_data(data)
        return protocol.parser_exc is None

    splitter = FrameSplitter(
        lambda length: True, pass_on, messages.append, apply_mask if by_server else None
    )
    specs = [
        FrameSpec(TEXT, 20, masked=by_server),
        FrameSpec(BINARY, 100_000, masked=by_server),
        FrameSpec(PING, 4, masked=by_server),
        FrameSpec(BINARY, 100, masked=by_server),
        FrameSpec(BINARY, 30_000, masked=by_server),
    ]
    frames = [(spec, *spec.encode(i)) for i, spec in enumerate(specs)]
    stream = b"".join(wire for _, wire, _ in frames)
    for offset in range(0, len(stream), 4099):
        splitter.feed(stream[offset : offset + 4099])
    parsed = [
        (event.opcode, bytes(event.data))
        for event in protocol.events_received()
        if isinstance(event, Frame)
    ]
    assert parsed == [
        (Opcode.TEXT, frames[0][2]),
        (Opcode.PING, frames[2][2]),
        (Opcode.BINARY, frames[3][2]),
    ]
    assert messages == [frames[1][2], frames[4][2]]
    assert all(type(message) is bytes for message in messages)


def test_websockets_parser_is_at_a_frame_boundary_only_between_frames() -> None:
    protocol = Protocol(SERVER, state=State.OPEN)
    wire, _ = FrameSpec(BINARY, 300).encode(7)  # a 2-byte header, 16-bit length, mask
    assert at_frame_boundary(protocol.parser)
    protocol.receive_data(wire[:1])  # a byte buffered
    assert not at_frame_boundary(protocol.parser)
    protocol.receive_data(wire[1:8])  # the whole header read, nothing of the payload yet
    assert not protocol.reader.buffer
    assert not at_frame_boundary(protocol.parser)
    protocol.receive_data(wire[8:])
    assert at_frame_boundary(protocol.parser)


def test_a_parser_of_another_shape_is_never_at_a_frame_boundary() -> None:
    def elsewhere() -> Generator[None, None, None]:
        yield

    parser = elsewhere()
    next(parser)
    assert not at_frame_boundary(parser)
    assert not at_frame_boundary(None)


def test_websockets_accepts_a_whole_binary_frame_only_when_it_could_be_a_message_now() -> None:
    protocol = Protocol(SERVER, state=State.OPEN, max_size=LIMIT)
    assert websockets_accepts(protocol, LIMIT)
    assert not websockets_accepts(protocol, LIMIT + 1)  # websockets refuses it with 1009
    first_fragment, _ = FrameSpec(BINARY, 10, fin=False).encode(3)
    protocol.receive_data(first_fragment)
    assert not websockets_accepts(protocol, 100)  # a continuation frame must come next
    closing = Protocol(SERVER, state=State.CLOSING)
    assert not websockets_accepts(closing, 100)


def test_after_each_side_of_a_handshake_websockets_parser_is_at_a_frame_boundary() -> None:
    """Where the server and the download SDK start their splitters: if a websockets release
    parsed differently, this fails, rather than the splitters silently staying unused."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws/streaming/download/x"))
    server = ServerProtocol()
    request = client.connect()
    client.send_request(request)
    server.receive_data(b"".join(client.data_to_send()))
    [received] = server.events_received()
    assert isinstance(received, Request)
    assert at_frame_boundary(server.parser)
    server.send_response(server.accept(received))
    client.receive_data(b"".join(server.data_to_send()))
    assert client.state is State.OPEN
    assert at_frame_boundary(client.parser)


# --- fragmented binary messages (a step-streaming upload: one message, any size) ----------------

PONG, CLOSE = 0xA, 0x8


def run_fragment_splitter(
    stream: bytes, cuts: list[int], may_begin: bool = True
) -> tuple[list[tuple[str, bytes, bool]], list[str]]:
    """The events of a server's splitter that takes fragments: ("data", payload, last) and
    ("pass", bytes, False), consecutive events of a kind merged; and the failures."""
    events: list[tuple[str, bytes, bool]] = []
    failures: list[str] = []

    def add(kind: str, data: bytes, last: bool) -> None:
        if events and events[-1][0] == kind and not events[-1][2]:
            events[-1] = (kind, events[-1][1] + bytes(data), last)
        else:
            events.append((kind, bytes(data), last))

    def pass_on(data: bytes) -> bool:
        add("pass", data, False)
        return True

    splitter = FrameSplitter(
        lambda length: length <= LIMIT,
        pass_on,
        lambda message: add("message", message, False),
        apply_mask,
        (lambda: may_begin, lambda data, last: add("data", data, last), failures.append),
    )
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, stop in itertools.pairwise(bounds):
        if stop > start:
            splitter.feed(stream[start:stop])
    return events, failures


fragment_sizes = st.lists(st.integers(0, 3_000), min_size=2, max_size=6)
between = st.lists(st.sampled_from([PING, PONG]), max_size=2)


@settings(max_examples=100, deadline=None)
@given(
    sizes=fragment_sizes,
    controls=st.lists(between, min_size=6, max_size=6),
    seed=st.integers(0, 2**32),
    cut_fractions=st.lists(st.floats(0, 1), max_size=12),
    small_cuts=st.lists(st.integers(0, 20), max_size=4),
)
def test_a_fragmented_binary_message_is_delivered_fragment_by_fragment(
    sizes: list[int],
    controls: list[list[int]],
    seed: int,
    cut_fractions: list[float],
    small_cuts: list[int],
) -> None:
    """Whatever the chunking: the fragments' payloads come out unmasked and in order, the last
    delivery says the message ended, and control frames between fragments reach websockets
    after the data that preceded them and before the data that follows."""
    wire: list[bytes] = []
    expected: list[tuple[str, bytes, bool]] = []

    def expect(kind: str, data: bytes, last: bool = False) -> None:
        if expected and expected[-1][0] == kind and not expected[-1][2]:
            expected[-1] = (kind, expected[-1][1] + data, last)
        else:
            expected.append((kind, data, last))

    text, _ = FrameSpec(TEXT, 20).encode(seed)
    wire.append(text)
    expect("pass", text)
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        opcode = BINARY if i == 0 else CONTINUATION
        frame, payload = FrameSpec(opcode, size, fin=last).encode(seed + i + 1)
        wire.append(frame)
        expect("data", payload, last)
        if not last:
            for j, control in enumerate(controls[i]):
                frame, _ = FrameSpec(control, 4).encode(seed + 100 + j)
                wire.append(frame)
                expect("pass", frame)
    after, _ = FrameSpec(TEXT, 10).encode(seed + 200)  # a message after it, for websockets
    wire.append(after)
    expect("pass", after)
    stream = b"".join(wire)
    cuts = [int(f * len(stream)) for f in cut_fractions] + small_cuts
    events, failures = run_fragment_splitter(stream, cuts)
    assert failures == []
    assert normalized(events) == normalized(expected)


def normalized(events: list[tuple[str, bytes, bool]]) -> list[tuple[str, bytes, bool]]:
    """Empty deliveries that do not end the message say nothing: drop them, merge the rest."""
    result: list[tuple[str, bytes, bool]] = []
    for kind, data, last in events:
        if kind == "data" and not data and not last:
            continue
        if result and result[-1][0] == kind and not result[-1][2]:
            result[-1] = (kind, result[-1][1] + data, last)
        else:
            result.append((kind, data, last))
    return result


def test_fragments_split_after_every_byte_are_delivered_in_order() -> None:
    specs = [FrameSpec(BINARY, 300, fin=False), FrameSpec(PING, 3), FrameSpec(CONTINUATION, 7)]
    frames = [(spec, *spec.encode(i)) for i, spec in enumerate(specs)]
    stream = b"".join(wire for _, wire, _ in frames)
    events, failures = run_fragment_splitter(stream, list(range(1, len(stream))))
    assert failures == []
    assert events == [
        ("data", frames[0][2], False),
        ("pass", frames[1][1], False),
        ("data", frames[2][2], True),
    ]


def test_an_empty_fragmented_message_ends_at_once() -> None:
    first, _ = FrameSpec(BINARY, 0, fin=False).encode(1)
    end, _ = FrameSpec(CONTINUATION, 0).encode(2)
    events, failures = run_fragment_splitter(first + end, [])
    assert (events, failures) == ([("data", b"", True)], [])


@pytest.mark.parametrize("intruder", [TEXT, BINARY], ids=["text", "binary"])
def test_a_new_message_inside_a_fragmented_one_fails_the_connection(intruder: int) -> None:
    first, payload = FrameSpec(BINARY, 10, fin=False).encode(1)
    other, _ = FrameSpec(intruder, 5).encode(2)
    events, failures = run_fragment_splitter(first + other + first, [])
    assert events == [("data", payload, False)]
    assert failures == ["Expected a continuation frame of the fragmented binary message under way"]


def test_fragments_go_to_websockets_when_a_message_may_not_begin() -> None:
    first, _ = FrameSpec(BINARY, 10, fin=False).encode(1)
    end, _ = FrameSpec(CONTINUATION, 5).encode(2)
    events, _ = run_fragment_splitter(first + end, [3], may_begin=False)
    assert events == [("pass", first + end, False)]


def test_a_client_splitter_never_takes_fragments() -> None:
    """Fragments are taken on a server only (they must be masked there)."""
    delivered: list[bytes] = []
    passed: list[bytes] = []

    def pass_on(data: bytes) -> bool:
        passed.append(bytes(data))
        return True

    splitter = FrameSplitter(
        lambda length: True,
        pass_on,
        delivered.append,
        None,
        (lambda: True, lambda data, last: delivered.append(data), lambda reason: None),
    )
    first, _ = FrameSpec(BINARY, 10, fin=False, masked=False).encode(1)
    splitter.feed(first)
    assert (delivered, passed) == ([], [first])


def test_websockets_hears_a_close_between_fragments_after_the_data_before_it() -> None:
    protocol = Protocol(SERVER, state=State.OPEN)  # past the handshake
    events: list[bytes] = []
    failures: list[str] = []
    order: list[str] = []

    def pass_on(data: bytes) -> bool:
        protocol.receive_data(data)
        order.extend(f"{e.opcode.name}" for e in protocol.events_received() if isinstance(e, Frame))
        return protocol.parser_exc is None

    splitter = FrameSplitter(
        lambda length: True,
        pass_on,
        events.append,
        apply_mask,
        (lambda: True, lambda data, last: order.append(f"data {len(data)}"), failures.append),
    )
    first, _ = FrameSpec(BINARY, 1000, fin=False).encode(1)
    mask = b"\x01\x02\x03\x04"
    close = bytes([0x80 | CLOSE, 0x80 | 2]) + mask + apply_mask(b"\x03\xe8", mask)  # 1000
    splitter.feed(first[:500])
    splitter.feed(first[500:] + close)
    assert order == ["data 492", "data 508", "CLOSE"]
    assert failures == []
