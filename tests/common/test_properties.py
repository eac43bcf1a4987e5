"""Property tests (hypothesis) of the sans-I/O pieces against simple reference models."""

from __future__ import annotations

import codecs
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from livefile.impl_common.http_ranges import ByteRange, Unsatisfiable, parse_range, range_start
from livefile.impl_common.lines import line_count, line_ends
from livefile.impl_common.transcoding import Utf8Transcoder
from livefile.impl_common.upload_protocol import (
    ProtocolViolation,
    UploadPhase,
    UploadServerProtocol,
)

sizes = st.integers(min_value=0, max_value=10_000)
offsets = st.integers(min_value=0, max_value=20_000)


@given(size=sizes, first=offsets, last=offsets)
def test_closed_range_matches_the_rfc_model(size: int, first: int, last: int) -> None:
    header = f"bytes={first}-{last}"
    if last < first:
        assert parse_range(header, size) is None  # invalid: the header is ignored
    elif first >= size:
        try:
            parse_range(header, size)
        except Unsatisfiable:
            return
        raise AssertionError("a range starting at or past the end must be unsatisfiable")
    else:
        assert parse_range(header, size) == ByteRange(first, min(last + 1, size))


@given(size=sizes, suffix=st.integers(min_value=0, max_value=20_000))
def test_suffix_range_matches_the_rfc_model(size: int, suffix: int) -> None:
    try:
        wanted = parse_range(f"bytes=-{suffix}", size)
    except Unsatisfiable:
        assert suffix == 0 or size == 0
        return
    assert wanted == ByteRange(max(0, size - suffix), size)


@given(header=st.text(max_size=60), size=sizes)
def test_any_header_is_ignored_refused_or_within_bounds(header: str, size: int) -> None:
    try:
        wanted = parse_range(header, size)
    except Unsatisfiable:
        return
    if wanted is not None:
        assert 0 <= wanted.start < wanted.stop <= size


@given(header=st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=60))
def test_range_start_of_any_latin1_header_is_none_or_a_position(header: str) -> None:
    start = range_start(header)
    assert start is None or start >= 0


@given(pieces=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"")), max_size=12))
def test_line_ends_across_messages_match_splitlines(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    ends: list[int] = []
    offset = 0
    for piece in pieces:
        ends += line_ends(piece, offset)
        offset += len(piece)
    reference = data.splitlines(keepends=True)
    complete = [line for line in reference if line.endswith(b"\n")]
    assert len(ends) == len(complete)
    assert [data[start:end] for start, end in zip([0, *ends], ends, strict=False)] == complete
    last_end = ends[-1] if ends else 0
    # Growing: only complete lines count; ended: a final unterminated line counts too.
    assert line_count(len(ends), last_end, len(data), ended=False) == len(complete)
    assert line_count(len(ends), last_end, len(data), ended=True) == len(reference)


@given(
    text=st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=200),
    charset=st.sampled_from(["latin-1", "utf-8", "utf-16-le", "utf-16-be"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_transcoding_any_split_gives_exact_utf8(
    text: str, charset: str, bom: bool, cuts: list[int]
) -> None:
    boms = {"utf-8": codecs.BOM_UTF8, "utf-16-le": codecs.BOM_UTF16_LE,
            "utf-16-be": codecs.BOM_UTF16_BE}  # fmt: skip
    encoded = (boms.get(charset, b"") if bom else b"") + text.encode(charset)
    transcoder = Utf8Transcoder(charset)
    points = sorted({0, len(encoded), *(cut for cut in cuts if cut < len(encoded))})
    out = b"".join(transcoder.feed(encoded[a:b]) for a, b in pairwise(points))
    assert out + transcoder.finish() == text.encode("utf-8")


EVENTS = st.lists(
    st.sampled_from(["start", "start-keep-open", "finish", "data", "garbage", "ready", "ack"]),
    max_size=16,
)
TEXTS = {
    "start": '{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"}}',
    "start-keep-open": (
        '{"@":"StartUpload","metadata":{"filename":"a","mimeType":"a/b"},"keepOpen":true}'
    ),
    "finish": '{"@":"FinishUpload","checksum":"x"}',
    "garbage": "{not json",
}


@given(events=EVENTS)
def test_upload_machine_any_sequence_is_a_defined_state_or_violation(events: list[str]) -> None:
    machine = UploadServerProtocol()
    acknowledged = 0
    keep_open = False  # what the last accepted StartUpload asked
    for event in events:
        before = machine.phase
        try:
            if event in TEXTS:
                machine.receive_text(TEXTS[event])
                if event.startswith("start"):
                    keep_open = event == "start-keep-open"
            elif event == "data":
                machine.receive_data()
            elif event == "ready" and machine.phase is UploadPhase.STARTING:
                machine.resource_ready()
            elif event == "ack" and machine.phase is UploadPhase.FINISHING:
                machine.acknowledged()
                acknowledged += 1
                # Acknowledged: the connection ends, or awaits the next upload if asked to.
                expected = UploadPhase.AWAITING_START if keep_open else UploadPhase.DONE
                assert machine.phase is expected
        except ProtocolViolation as violation:
            refusal = violation
            break
        assert isinstance(machine.phase, UploadPhase)
        assert machine.completed == acknowledged
    else:
        return
    # A refused message closes the connection with 1002 and a reason, and changes nothing.
    assert (refusal.code, bool(refusal.reason)) == (1002, True)
    assert machine.phase is before
