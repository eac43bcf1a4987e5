"""Line slicing from the on-disk index, checked against ``bytes.splitlines`` (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from livefile.impl_common.lines import line_count, line_ends
from livefile.impl_server.line_index import LineIndexWriter, final_line_count, read_lines

texts = st.lists(st.binary(max_size=30).map(lambda piece: piece.replace(b"\r", b"")), max_size=10)


def stored(folder: Path, pieces: list[bytes]) -> tuple[Path, Path, bytes]:
    """The pieces appended as an upload appends them: bytes, then their line ends."""
    data_path, index_path = folder / "r.bin", folder / "r.idx"
    writer = LineIndexWriter(index_path)
    offset = 0
    with data_path.open("wb") as data_file:
        for piece in pieces:
            data_file.write(piece)
            writer.append(line_ends(piece, offset))
            offset += len(piece)
    writer.close()
    return data_path, index_path, b"".join(pieces)


@given(pieces=texts, ended=st.booleans(), max_bytes=st.integers(1, 80), draw=st.data())
def test_any_block_of_lines_is_the_reference_slice_bounded_by_size(
    pieces: list[bytes], ended: bool, max_bytes: int, draw: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        data_path, index_path, data = stored(Path(folder), pieces)
        reference = data.splitlines(keepends=True)
        if not ended:  # a growing resource publishes complete lines only
            reference = [line for line in reference if line.endswith(b"\n")]
        complete = sum(1 for line in reference if line.endswith(b"\n"))
        last_end = sum(len(line) for line in reference[:complete])
        total = line_count(complete, last_end, len(data), ended)
        assert total == len(reference)
        if ended:
            assert final_line_count(index_path, len(data)) == total
        # Blocks within the bounds (the endpoint refuses others with BAD_RANGE before reading).
        start = draw.draw(st.integers(0, total), label="start")
        count = draw.draw(st.integers(0, total - start), label="count")
        got = read_lines(data_path, index_path, start, count, total, len(data), max_bytes)
        wanted = reference[start : start + count]
        # The reply is the longest prefix within max_bytes, and never empty when lines exist.
        kept = 0
        while kept < len(wanted) and (
            kept == 0 or sum(len(line) for line in wanted[: kept + 1]) <= max_bytes
        ):
            kept += 1
        assert got == wanted[:kept]
