"""The fixed layout of a bundle of finished members, without a server: every range of it is the
same slice of the whole, the whole is a ZIP that zipfile reads (Zip64 past 65,535 entries), and
its CRC-32C, combined from the parts', is the CRC-32C of its bytes."""

from __future__ import annotations

import io
import json
import os
import random
import zipfile

import crc32c
import pytest
from zlib_ng import zlib_ng

from livefile.impl_server.bundle.crc import crc32c_combine
from livefile.impl_server.bundle.layout import BundleLayout, BundleMember


def member(path: str, data: bytes, mtime: float = 1_700_000_000.0) -> BundleMember:
    return BundleMember(
        path, os.urandom(16).hex(), len(data), zlib_ng.crc32(data), crc32c.crc32c(data), mtime,
        f"crc32c:{crc32c.crc32c(data):08x}",
    )  # fmt: skip


def compose(layout: BundleLayout, files: list[bytes], start: int, end: int) -> bytes:
    out = bytearray()
    for piece, offset, count in layout.pieces(start, end):
        source = piece if isinstance(piece, bytes) else files[piece]
        out += source[offset : offset + count]
    return bytes(out)


@pytest.mark.parametrize("length", [0, 1, 7, 4096, 1_000_003])
def test_the_crc32c_of_a_concatenation_combines_from_its_parts(length: int) -> None:
    first, second = os.urandom(1000), os.urandom(length)
    combined = crc32c_combine(crc32c.crc32c(first), crc32c.crc32c(second), length)
    assert combined == crc32c.crc32c(first + second)


def test_every_range_is_the_same_slice_of_the_whole_zip() -> None:
    rng = random.Random(7)
    files = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(20)]
    names = [f"dir{i % 4}/f{i}.bin" for i in range(20)]
    layout = BundleLayout("b.zip", [member(n, d) for n, d in zip(names, files, strict=True)])
    whole = compose(layout, files, 0, layout.size)
    assert len(whole) == layout.size
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [*names, "MANIFEST.json"]
        for name, data in zip(names, files, strict=True):
            assert archive.read(name) == data
            assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED
        manifest = json.loads(archive.read("MANIFEST.json"))
    assert [m["size"] for m in manifest["members"]] == [len(d) for d in files]
    for _ in range(300):
        start = rng.randrange(layout.size + 1)
        end = rng.randrange(start, layout.size + 1)
        assert compose(layout, files, start, end) == whole[start:end]
    assert layout.crc32c() == crc32c.crc32c(whole)


def test_a_range_outside_the_bundle_is_refused() -> None:
    layout = BundleLayout("b.zip", [member("a", b"A")])
    with pytest.raises(ValueError, match="not within"):
        list(layout.pieces(0, layout.size + 1))


def test_past_65535_entries_the_zip_has_zip64_end_records() -> None:
    count = 70_000
    layout = BundleLayout("many.zip", [member(f"f{i}", b"") for i in range(count)])
    whole = compose(layout, [b""] * count, 0, layout.size)
    assert b"PK\x06\x06" in whole[-200:]  # the Zip64 end of central directory record
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert len(archive.namelist()) == count + 1


def test_layouts_survive_their_json_form() -> None:
    files = [b"one", b"two"]
    layout = BundleLayout("b.zip", [member("a", files[0]), member("b/c", files[1])])
    again = BundleLayout.from_json(json.loads(json.dumps(layout.to_json())))
    assert compose(again, files, 0, again.size) == compose(layout, files, 0, layout.size)
