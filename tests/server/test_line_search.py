"""``find_lines``: the lines that hold a text, found in bounded scans that page through the
whole resource without missing or repeating a line."""

from __future__ import annotations

from pathlib import Path

from livefile.impl_server.line_index import encode
from livefile.impl_server.line_search import find_lines


def store(tmp_path: Path, lines: list[bytes], final: bytes = b"") -> tuple[Path, Path, int, int]:
    """The data and index files of ``lines`` (each ending in a line break) and an optional
    unterminated final line; returns the paths, the line count and the size."""
    data = b"".join(lines) + final
    ends, offset = [], 0
    for line in lines:
        offset += len(line)
        ends.append(offset)
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "index").write_bytes(encode(ends))
    return tmp_path / "data", tmp_path / "index", len(lines) + (1 if final else 0), len(data)


def search_all(tmp_path: Path, lines: list[bytes], needle: bytes, **options: int) -> list[int]:
    data, index, total, size = store(tmp_path, lines)
    found: list[int] = []
    start = 0
    while start < total:
        matches, start = find_lines(
            data, index, needle, start, total, size,
            options.get("limit", 1000), options.get("scan", 1 << 20), True,
        )  # fmt: skip
        found += matches
    return found


LINES = [
    f"{n:05d} {'error' if n % 7 == 0 else 'fine'} {'x' * (n % 13)}\n".encode() for n in range(5000)
]
EXPECTED = [n for n in range(5000) if n % 7 == 0]


def test_every_matching_line_is_found_once_whatever_the_scan_bound(tmp_path: Path) -> None:
    assert search_all(tmp_path, LINES, b"error") == EXPECTED
    assert search_all(tmp_path, LINES, b"error", scan=100) == EXPECTED
    assert search_all(tmp_path, LINES, b"error", scan=1) == EXPECTED  # one line per scan


def test_the_limit_stops_a_scan_right_after_its_last_match(tmp_path: Path) -> None:
    assert search_all(tmp_path, LINES, b"error", limit=3) == EXPECTED
    data, index, total, size = store(tmp_path, LINES)
    matches, next_start = find_lines(data, index, b"error", 0, total, size, 2, 1 << 20, True)
    assert (matches, next_start) == ([0, 7], 8)


def test_a_scan_reads_at_most_its_bound_and_says_where_it_stopped(tmp_path: Path) -> None:
    data, index, total, size = store(tmp_path, LINES)
    matches, next_start = find_lines(data, index, b"error", 0, total, size, 1000, 200, True)
    assert sum(len(line) for line in LINES[:next_start]) <= 200
    assert sum(len(line) for line in LINES[: next_start + 1]) > 200
    assert matches == [n for n in EXPECTED if n < next_start]


def test_a_line_matches_once_however_often_it_holds_the_text(tmp_path: Path) -> None:
    assert search_all(tmp_path, [b"aaaa\n", b"b\n", b"xaax\n"], b"aa") == [0, 2]


def test_case_is_ignored_for_ascii_letters_when_asked(tmp_path: Path) -> None:
    data, index, total, size = store(tmp_path, [b"Error\n", b"ERROR\n", b"error\n"])
    assert find_lines(data, index, b"error", 0, total, size, 10, 100, True)[0] == [0, 1, 2]
    assert find_lines(data, index, b"ERROR", 0, total, size, 10, 100, False)[0] == [1]


def test_the_final_line_without_a_line_break_is_searched(tmp_path: Path) -> None:
    data, index, total, size = store(tmp_path, [b"one\n", b"two\n"], final=b"the end")
    assert find_lines(data, index, b"end", 0, total, size, 10, 100, True) == ([2], 3)


def test_a_scan_from_a_later_line_finds_only_what_follows(tmp_path: Path) -> None:
    data, index, total, size = store(tmp_path, LINES)
    matches, _ = find_lines(data, index, b"error", 4990, total, size, 10, 1 << 20, True)
    assert matches == [4991, 4998]
