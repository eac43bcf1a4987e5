"""The upload SDK's replay buffer: what is kept for a resume, and what is let go."""

from __future__ import annotations

import pytest

from livefile.client_upload.replay import ReplayBuffer


def filled(*pieces: bytes, limit: int = 100) -> ReplayBuffer:
    buffer = ReplayBuffer(limit)
    for piece in pieces:
        buffer.add(memoryview(piece))
    return buffer


def test_the_bytes_from_any_held_offset_are_given_back_once_and_in_order() -> None:
    buffer = filled(b"abc", b"defg", b"hi")
    assert b"".join(buffer.since(0)) == b"abcdefghi"
    assert b"".join(buffer.since(5)) == b"fghi"
    assert b"".join(buffer.since(9)) == b""


def test_acknowledged_bytes_are_let_go_even_within_a_piece() -> None:
    buffer = filled(b"abc", b"defg", b"hi")
    buffer.release(5)
    assert (buffer.start, buffer.size) == (5, 4)
    assert b"".join(buffer.since(5)) == b"fghi"
    with pytest.raises(ValueError, match="not within"):
        list(buffer.since(4))


def test_it_is_full_beyond_its_limit_but_always_takes_one_piece() -> None:
    buffer = ReplayBuffer(4)
    assert not buffer.full(10)
    buffer.add(memoryview(b"abc"))
    assert buffer.full(2)
    assert not buffer.full(1)


def test_a_mutable_buffer_is_copied_an_immutable_one_is_not() -> None:
    mutable = bytearray(b"abc")
    immutable = b"xyz"
    buffer = ReplayBuffer(100)
    buffer.add(memoryview(mutable))
    buffer.add(memoryview(immutable))
    mutable[0:3] = b"ZZZ"  # the caller reuses its buffer
    assert b"".join(buffer.since(0)) == b"abcxyz"
    assert next(buffer.since(3)).obj is immutable
