"""Range parsing and the header values derived for HTTP downloads."""

import pytest

from livefile.impl_common.http_ranges import (
    ByteRange,
    Unsatisfiable,
    content_disposition,
    etag_matches,
    parse_range,
    range_start,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=10-", ByteRange(10, 1000)),
        ("bytes=-100", ByteRange(900, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),
        ("bytes=990-5000", ByteRange(990, 1000)),
        ("BYTES = 1-1", ByteRange(1, 2)),
    ],
)
def test_single_ranges(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "bytes=",
        "bytes=5-2",
        "bytes=a-b",
        "items=0-1",
        "bytes=-",
        "bytes=0-1,5-6",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(1000)),
        "bytes=1-2-3",
    ],
)
def test_invalid_or_multiple_ranges_mean_the_whole_file(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=0-", 0), ("bytes=-1", 0)],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


def test_content_disposition_quotes_safely_and_keeps_the_exact_name() -> None:
    value = content_disposition('Grüße "x".txt')
    assert value == (
        "attachment; filename=\"Grusse _x_.txt\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22x%22.txt"
    )


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("rapport été 2026.txt", "rapport ete 2026.txt"),  # what curl -J saves
        ("Ærø straße.log", "AEro strasse.log"),
        ("Łódź œuvre.csv", "Lodz oeuvre.csv"),
        ("日本.txt", "__.txt"),  # no ASCII form: one _ per character
        ("a/b\\c%d", "a_b_c_d"),
        ("é", "e"),
    ],
)
def test_content_disposition_fallback_is_the_name_without_its_accents(
    name: str, fallback: str
) -> None:
    assert content_disposition(name).startswith(f'attachment; filename="{fallback}"; ')


def test_content_disposition_leaves_out_bidirectional_controls_of_names_stored_earlier() -> None:
    value = content_disposition("invoice\u202etxt.exe")
    assert value == "attachment; filename=\"invoicetxt.exe\"; filename*=UTF-8''invoicetxt.exe"


def test_etag_comparison_weak_and_strong() -> None:
    assert etag_matches('W/"a", "b"', '"a"')
    assert not etag_matches('W/"a"', '"a"', weak=False)
    assert etag_matches("*", '"z"')
    assert not etag_matches(None, '"a"')


@pytest.mark.parametrize(
    ("header", "start"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=0-", 0),
        ("bytes=" + "9" * 5000 + "-", 10**19),  # beyond any resource, never int() of 5000 digits
        ("bytes=²-", None),  # a Latin-1 superscript is not a digit to HTTP
        ("bytes=-5", None),
        ("bytes=1-2,4-5", None),
        ("items=1-", None),
        ("bytes=", None),
        (None, None),
    ],
)
def test_range_start_reads_only_ascii_digits_of_a_single_range(
    header: str | None, start: int | None
) -> None:
    assert range_start(header) == start
