"""The archive repack engine, on real archives made by real tools (tarfile, zipfile, bsdtar, 7z,
zstd). Every output ZIP is checked with zipfile, ``bsdtar -tf`` and ``7z t``."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from livefile.impl_server import repack as repack_package
from livefile.impl_server.repack import (
    RepackError,
    RepackLimits,
    RepackSummary,
    needs_whole_source,
    repack_file,
    repack_stream,
)
from livefile.impl_server.repack import archive as archive_module
from livefile.impl_server.repack.names import safe_entry_name
from livefile.impl_server.repack.zipout import ZipWriter

pytestmark = pytest.mark.timeout(60)

MTIME = 1_588_334_401  # 2020-05-01 12:00:01 UTC: an odd second, to see DOS time's 2 s steps
LIMITS = RepackLimits()


DEBIAN_PACKAGES = {"bsdtar": "libarchive-tools", "7z": "p7zip-full", "zstd": "zstd"}


def require_tool(name: str) -> str:
    """The tool's path; without it the test is skipped, or fails where the tools are required."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package {DEBIAN_PACKAGES[name]})"
        if os.environ.get("LIVEFILE_REQUIRE_ARCHIVE_TOOLS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


# -- inputs -------------------------------------------------------------------------------------

TREE: dict[str, bytes] = {
    "notes.txt": b"".join(b"line %d of a compressible text file\n" % i for i in range(20_000)),
    "data/random.bin": os.urandom(1_500_000),  # over the 1 MiB block, does not shrink
    "data/small.bin": os.urandom(300),
    "data/deeper/empty": b"",
    "ünïcödé/名前.txt": b"non-ASCII names survive\n",
}


def write_tree(root: Path, tree: dict[str, bytes] = TREE) -> Path:
    for name, data in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    return root


def make_tar(path: Path, mode: str = "w", tree: dict[str, bytes] = TREE) -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in tree.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, tree: dict[str, bytes] = TREE) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in tree.items():
            info = zipfile.ZipInfo(name, time.localtime(MTIME)[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def run_tool(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


# -- running the engine -------------------------------------------------------------------------


class Trickle:
    """A source that hands out a few KiB per read, like an upload still arriving."""

    def __init__(self, data: bytes, piece: int = 3000) -> None:
        self._data = data
        self._piece = piece
        self.position = 0
        self.reads = 0

    def read(self, size: int) -> bytes:
        self.reads += 1
        piece = self._data[self.position : self.position + min(size, self._piece)]
        self.position += len(piece)
        return piece


def run_file(path: Path, limits: RepackLimits = LIMITS) -> tuple[bytes, RepackSummary]:
    out = io.BytesIO()
    summary = repack_file(path, out.write, limits, source_name=path.name)
    return out.getvalue(), summary


def run_stream(
    data: bytes, name: str, limits: RepackLimits = LIMITS, piece: int = 3000
) -> tuple[bytes, RepackSummary]:
    out = io.BytesIO()
    summary = repack_stream(Trickle(data, piece), out.write, limits, source_name=name)
    return out.getvalue(), summary


def refusal(action: Callable[[], object]) -> RepackError:
    with pytest.raises(RepackError) as caught:
        action()
    return caught.value


# -- checking the output ------------------------------------------------------------------------


def check_zip(
    output: bytes, tmp_path: Path, expected: dict[str, bytes], mtime: float | None = MTIME
) -> None:
    """Names, bytes and modification times match, and zipfile, bsdtar and 7z accept the ZIP."""
    with zipfile.ZipFile(io.BytesIO(output)) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert sorted(info.filename for info in infos) == sorted(expected)
        for info in infos:
            assert archive.read(info) == expected[info.filename], info.filename
            if mtime is not None:
                stamp = time.mktime((*info.date_time, 0, 0, -1))
                assert abs(stamp - mtime) <= 2, info.filename
    path = tmp_path / "output.zip"
    path.write_bytes(output)
    listed = subprocess.run(
        [require_tool("bsdtar"), "-tf", str(path)], capture_output=True, check=True, text=True
    )
    assert sorted(listed.stdout.splitlines()) == sorted(expected)
    tested = subprocess.run(
        [require_tool("7z"), "t", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Everything is Ok" in tested.stdout


# -- formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "mode", "format_name"),
    [
        ("tar", "w", "tar"),
        ("tar.gz", "w:gz", "tar.gz"),
        ("tar.bz2", "w:bz2", "tar.bz2"),
        ("tar.xz", "w:xz", "tar.xz"),
    ],
)
def test_tar_and_compressed_tar_are_repacked(
    tmp_path: Path, suffix: str, mode: str, format_name: str
) -> None:
    output, summary = run_file(make_tar(tmp_path / f"in.{suffix}", mode))
    check_zip(output, tmp_path, TREE)
    assert summary.format == format_name
    assert summary.entries_written == len(TREE)
    assert summary.unpacked_bytes == sum(len(data) for data in TREE.values())
    assert summary.output_bytes == len(output)


def test_tar_zst_made_by_zstd_is_repacked(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "in.tar")
    run_tool(require_tool("zstd"), "-q", tar, "-o", tmp_path / "in.tar.zst")
    output, summary = run_file(tmp_path / "in.tar.zst")
    check_zip(output, tmp_path, TREE)
    assert summary.format == "tar.zst"


def test_tar_made_by_bsdtar_is_repacked(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    run_tool(require_tool("bsdtar"), "-czf", tmp_path / "in.tgz", "-C", root, ".")
    output, summary = run_file(tmp_path / "in.tgz")
    check_zip(output, tmp_path, TREE)
    assert summary.format == "tar.gz"


def test_zip_is_repacked(tmp_path: Path) -> None:
    output, summary = run_file(make_zip(tmp_path / "in.zip"))
    check_zip(output, tmp_path, TREE)
    assert summary.format == "zip"


def test_zip_made_by_7z_is_repacked(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    run_tool(require_tool("7z"), "a", "-tzip", "-bd", tmp_path / "in.zip", ".", cwd=root)
    output, _ = run_file(tmp_path / "in.zip")
    check_zip(output, tmp_path, TREE)


def test_zip_with_data_descriptors_is_read_as_a_stream(tmp_path: Path) -> None:
    # zipfile writing to an unseekable stream puts sizes after the data, STORED entries included.
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            view = memoryview(b)  # type: ignore[arg-type]
            self.data += view
            return len(view)

    target = Unseekable()
    with zipfile.ZipFile(target, "w") as archive:
        for index, (name, data) in enumerate(TREE.items()):
            info = zipfile.ZipInfo(name, time.localtime(MTIME)[:6])
            info.compress_type = zipfile.ZIP_STORED if index % 2 else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    output, _ = run_stream(bytes(target.data), "in.zip")
    check_zip(output, tmp_path, TREE)


def test_zip_from_a_slow_source_gives_the_same_zip_as_from_the_file(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "in.zip")
    from_file, _ = run_file(path)
    source = Trickle(path.read_bytes(), piece=3000)
    chunks: list[bytes] = []
    summary = repack_stream(source, chunks.append, LIMITS, source_name="in.zip")
    assert source.reads > 100
    assert b"".join(chunks) == from_file
    assert summary.consumed_bytes == path.stat().st_size


def test_output_reaches_the_sink_while_the_source_is_still_arriving(tmp_path: Path) -> None:
    data = make_tar(tmp_path / "in.tar.gz", "w:gz").read_bytes()
    handed_out: list[int] = []  # source position at each sink call

    source = Trickle(data, piece=16_384)
    repack_stream(source, lambda chunk: handed_out.append(source.position), LIMITS, source_name="x")
    assert len(handed_out) > 1
    assert handed_out[0] < len(data)


def test_7z_is_read_from_the_complete_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    archive = tmp_path / "in.7z"
    run_tool(require_tool("7z"), "a", "-t7z", "-bd", archive, ".", cwd=root)
    assert needs_whole_source(archive.read_bytes()[:6])
    output, summary = run_file(archive)
    check_zip(output, tmp_path, TREE)
    assert summary.format == "7z"
    error = refusal(lambda: run_stream(archive.read_bytes(), "in.7z"))
    assert error.code == "unsupported_format"


def test_streamable_formats_do_not_need_the_whole_source(tmp_path: Path) -> None:
    assert not needs_whole_source(make_zip(tmp_path / "a.zip").read_bytes()[:512])
    assert not needs_whole_source(make_tar(tmp_path / "a.tar.gz", "w:gz").read_bytes()[:512])
    assert not needs_whole_source(b"just text")


def test_single_gzipped_file_becomes_a_zip_of_that_file(tmp_path: Path) -> None:
    text = TREE["notes.txt"]
    path = tmp_path / "notes.txt.gz"
    with open(path, "wb") as raw, gzip.GzipFile("notes.txt", "wb", fileobj=raw, mtime=MTIME) as gz:
        gz.write(text)
    output, summary = run_file(path)
    check_zip(output, tmp_path, {"notes.txt": text})
    assert summary.format == "gz"


def test_single_zstd_file_is_named_after_the_source(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    run_tool(require_tool("zstd"), "-q", path, "-o", tmp_path / "report.json.zst")
    output, summary = run_file(tmp_path / "report.json.zst")
    check_zip(output, tmp_path, {"report.json": path.read_bytes()}, mtime=None)
    assert summary.format == "zst"


def test_file_that_is_no_archive_becomes_a_zip_holding_it(tmp_path: Path) -> None:
    data = b"RAW!" + os.urandom(200_000)  # a fixed head: random bytes could look compressed
    started = time.time()
    output, summary = run_stream(data, "../odd/photo.raw", piece=50_000)
    check_zip(output, tmp_path, {"photo.raw": data}, mtime=None)
    assert summary.format == "file"
    with zipfile.ZipFile(io.BytesIO(output)) as archive:
        stamp = time.mktime((*archive.infolist()[0].date_time, 0, 0, -1))
    assert started - 2 <= stamp <= time.time()  # dated now (DOS time steps by 2 s)


def test_named_archive_that_is_not_one_is_kept_as_a_file(tmp_path: Path) -> None:
    output, summary = run_stream(b"plain words, not a zip", "fake.zip")
    check_zip(output, tmp_path, {"fake.zip": b"plain words, not a zip"}, mtime=None)
    assert summary.format == "file"


def test_nested_zip_inside_a_tar_stays_one_file(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip").read_bytes()
    tree = {"bundle/inner.zip": inner, "readme.txt": b"outer\n"}
    output, _ = run_file(make_tar(tmp_path / "outer.tar.gz", "w:gz", tree))
    check_zip(output, tmp_path, tree)


# -- output shape -------------------------------------------------------------------------------


def test_compressible_entries_are_deflated_and_others_stored(tmp_path: Path) -> None:
    output, _ = run_file(make_tar(tmp_path / "in.tar"))
    with zipfile.ZipFile(io.BytesIO(output)) as archive:
        text = archive.getinfo("notes.txt")
        assert text.compress_type == zipfile.ZIP_DEFLATED
        assert text.compress_size < text.file_size / 4
        small = archive.getinfo("data/small.bin")
        assert small.compress_type == zipfile.ZIP_STORED
        big = archive.getinfo("data/random.bin")
        assert big.compress_size <= big.file_size * 1.001  # Deflate level 0: framing only


def test_zip64_central_directory_when_over_65535_entries(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = ZipWriter(out.write)
    for index in range(65_600):
        writer.add_whole(f"f{index}", MTIME, b"", None)
    writer.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        assert len(archive.infolist()) == 65_600
    path = tmp_path / "many.zip"
    path.write_bytes(out.getvalue())
    tested = subprocess.run(
        [require_tool("7z"), "t", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert tested.returncode == 0, tested.stdout
    listed = subprocess.run([require_tool("bsdtar"), "-tf", str(path)], capture_output=True)
    assert listed.returncode == 0
    assert listed.stdout.count(b"\n") == 65_600


# -- safety -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_encrypted_zip_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    archive = tmp_path / "secret.zip"
    run_tool(require_tool("7z"), "a", "-tzip", "-pX", "-bd", archive, ".", cwd=root)
    assert refusal(lambda: run_file(archive)).code == "encrypted_archive"
    assert refusal(lambda: run_stream(archive.read_bytes(), "s.zip")).code == "encrypted_archive"


@pytest.mark.timeout(30)
def test_7z_with_encrypted_headers_is_refused_without_waiting_for_a_password(
    tmp_path: Path,
) -> None:
    root = write_tree(tmp_path / "tree")
    archive = tmp_path / "secret.7z"
    run_tool(require_tool("7z"), "a", "-t7z", "-pX", "-mhe=on", "-bd", archive, ".", cwd=root)
    assert refusal(lambda: run_file(archive)).code == "encrypted_archive"


@pytest.mark.timeout(30)
def test_7z_with_encrypted_entries_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    archive = tmp_path / "secret.7z"
    run_tool(require_tool("7z"), "a", "-t7z", "-pX", "-bd", archive, ".", cwd=root)
    assert refusal(lambda: run_file(archive)).code == "encrypted_archive"


def zeros_bomb(tmp_path: Path, size: int = 1 << 30) -> Path:
    """A tar.zst of one entry of ``size`` zeros: a few tens of KiB."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = size
    header = tmp_path / "header"
    header.write_bytes(info.tobuf(format=tarfile.PAX_FORMAT))
    bomb = tmp_path / "bomb.tar.zst"
    zstd = require_tool("zstd")
    subprocess.run(
        f"{{ cat {header}; head -c {size + 1024} /dev/zero; }} | {zstd} -q -1 -c > {bomb}",
        shell=True,
        check=True,
    )
    return bomb


@pytest.mark.timeout(30)
def test_zeros_bomb_is_refused_by_ratio_early(tmp_path: Path) -> None:
    bomb = zeros_bomb(tmp_path)
    assert bomb.stat().st_size < 256 * 1024
    sink = io.BytesIO()
    started = time.perf_counter()
    error = refusal(lambda: repack_file(bomb, sink.write, LIMITS, source_name="b.tar.zst"))
    elapsed = time.perf_counter() - started
    assert error.code == "ratio_limit"
    assert elapsed < 5, elapsed
    # Refused near the 64 MiB floor, and what reached the sink is a valid (empty) ZIP.
    assert sink.tell() < LIMITS.ratio_floor // 100
    with zipfile.ZipFile(io.BytesIO(sink.getvalue())) as archive:
        assert archive.namelist() == []


@pytest.mark.timeout(30)
def test_zeros_bomb_is_refused_by_unpacked_size_under_the_ratio_floor(tmp_path: Path) -> None:
    bomb = zeros_bomb(tmp_path, 64 << 20)
    limits = RepackLimits(max_unpacked_bytes=16 << 20)
    error = refusal(lambda: run_file(bomb, limits))
    assert error.code == "unpacked_size_limit"


def test_unpacked_size_counts_bytes_produced_not_declared(tmp_path: Path) -> None:
    tree = {f"f{index}": b"x" * 1000 for index in range(10)}
    path = make_tar(tmp_path / "in.tar.gz", "w:gz", tree)
    assert run_file(path, RepackLimits(max_unpacked_bytes=10_000))[1].unpacked_bytes == 10_000
    error = refusal(lambda: run_file(path, RepackLimits(max_unpacked_bytes=9_999)))
    assert error.code == "unpacked_size_limit"


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    tree = {f"d/{index}": b"" for index in range(20_001)}
    path = make_tar(tmp_path / "many.tar", "w", tree)
    assert refusal(lambda: run_file(path)).code == "entry_count_limit"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs", "a/../../b", "C:/windows/x"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    path = make_tar(tmp_path / "evil.tar", tree={"fine.txt": b"ok", name: b"evil"})
    assert refusal(lambda: run_file(path)).code == "unsafe_path"


def test_unsafe_name_in_a_zip_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "evil.zip", {"..\\..\\evil.txt": b"evil"})
    assert refusal(lambda: run_file(path)).code == "unsafe_path"


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("a/b.txt", "./a//b.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    assert refusal(lambda: run_file(path)).code == "unsafe_path"


def test_file_where_a_directory_is_implied_is_refused(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "clash.tar", tree={"a": b"file", "a/b": b"inside a file"})
    assert refusal(lambda: run_file(path)).code == "unsafe_path"


def test_overlong_names_are_refused(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "long.tar", tree={"d/" * 600 + "f": b"x"})
    assert refusal(lambda: run_file(path)).code == "unsafe_path"


@pytest.mark.parametrize(
    ("raw", "safe"),
    [("./a//b/./c", "a/b/c"), ("dir\\file", "dir/file"), ("ä/ö", "ä/ö"), ("notes:v2", "notes:v2")],
)
def test_names_are_normalised(raw: str, safe: str) -> None:
    assert safe_entry_name(raw, 1024) == safe


@pytest.mark.parametrize("raw", ["", "./", "a/\x00b", "/", "d:x", "C:", "..", "a/.."])
def test_names_that_cannot_be_made_safe(raw: str) -> None:
    with pytest.raises(RepackError) as caught:
        safe_entry_name(raw, 1024)
    assert caught.value.code == "unsafe_path"


def test_links_and_devices_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("real.txt")
        info.size = 4
        info.mtime = MTIME
        tar.addfile(info, io.BytesIO(b"real"))
        for name, kind, target in [
            ("link", tarfile.SYMTYPE, "/etc/passwd"),
            ("hard", tarfile.LNKTYPE, "real.txt"),
            ("fifo", tarfile.FIFOTYPE, ""),
            ("dev", tarfile.CHRTYPE, ""),
        ]:
            special = tarfile.TarInfo(name)
            special.type = kind
            special.linkname = target
            tar.addfile(special)
    output, summary = run_file(path)
    check_zip(output, tmp_path, {"real.txt": b"real"})
    assert summary.entries_skipped == 4


def test_symlink_made_by_bsdtar_is_skipped(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", {"a.txt": b"a"})
    (root / "to-a").symlink_to("a.txt")
    run_tool(require_tool("bsdtar"), "-cf", tmp_path / "in.tar", "-C", root, ".")
    output, summary = run_file(tmp_path / "in.tar")
    check_zip(output, tmp_path, {"a.txt": b"a"})
    assert summary.entries_skipped == 1


@pytest.mark.parametrize("suffix", ["tar.gz", "zip", "tar"])
def test_truncated_archive_is_invalid(tmp_path: Path, suffix: str) -> None:
    full = (
        make_zip(tmp_path / "in.zip")
        if suffix == "zip"
        else make_tar(tmp_path / f"in.{suffix}", "w:gz" if suffix == "tar.gz" else "w")
    )
    data = full.read_bytes()
    cut = data[: len(data) // 2 + 7]
    assert refusal(lambda: run_stream(cut, full.name)).code == "invalid_archive"


def test_corrupt_gzip_is_invalid(tmp_path: Path) -> None:
    data = bytearray(make_tar(tmp_path / "in.tar.gz", "w:gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    assert refusal(lambda: run_stream(bytes(data), "in.tar.gz")).code == "invalid_archive"


def test_errors_from_the_source_pass_through_unchanged(tmp_path: Path) -> None:
    data = make_tar(tmp_path / "in.tar.gz", "w:gz").read_bytes()

    class Broken(Trickle):
        def read(self, size: int) -> bytes:
            if self.position > 100_000:
                raise ConnectionError("upload failed")
            return super().read(size)

    with pytest.raises(ConnectionError, match="upload failed"):
        repack_stream(Broken(data, 50_000), io.BytesIO().write, LIMITS, source_name="x")


def test_refusal_leaves_a_valid_zip_of_the_entries_completed(tmp_path: Path) -> None:
    tree = {"one.txt": b"first", "two.txt": b"second", "../bad": b"x"}
    sink = io.BytesIO()
    path = make_tar(tmp_path / "in.tar", tree=tree)
    refusal(lambda: repack_file(path, sink.write, LIMITS, source_name="in.tar"))
    check_zip(sink.getvalue(), tmp_path, {"one.txt": b"first", "two.txt": b"second"})


def test_missing_libarchive_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(archive_module, "_ffi", None)
    monkeypatch.setitem(sys.modules, "libarchive", None)
    error = refusal(lambda: run_file(make_tar(tmp_path / "in.tar")))
    assert error.code == "unsupported_format"
    assert "libarchive13" in error.message
    # A file that is no archive needs no libarchive.
    assert run_stream(b"text", "a.txt")[1].entries_written == 1
    assert repack_package.SNIFF_BYTES >= 262


@pytest.mark.parametrize("threads", [1, 3])
def test_long_compressible_entry_is_deflated_in_chunks_that_join(
    tmp_path: Path, threads: int
) -> None:
    text = b"".join(b"%08d some log words that repeat, more or less\n" % i for i in range(120_000))
    assert len(text) > 5 * (1 << 20)  # several 1 MiB chunks, each primed with the one before
    path = make_tar(tmp_path / "log.tar.gz", "w:gz", {"big.log": text})
    out = io.BytesIO()
    repack_file(path, out.write, LIMITS, source_name="log.tar.gz", deflate_threads=threads)
    check_zip(out.getvalue(), tmp_path, {"big.log": text})
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        assert archive.getinfo("big.log").compress_size < len(text) / 5


def test_source_giving_more_than_asked_is_read_correctly(tmp_path: Path) -> None:
    data = make_tar(tmp_path / "in.tar.gz", "w:gz").read_bytes()

    class Greedy:
        def __init__(self) -> None:
            self.given = False

        def read(self, size: int) -> bytes:
            if self.given:
                return b""
            self.given = True
            return data  # all of it, whatever was asked

    out = io.BytesIO()
    repack_stream(Greedy(), out.write, LIMITS, source_name="in.tar.gz")
    check_zip(out.getvalue(), tmp_path, TREE)


def test_memory_stays_flat_in_the_size_of_an_entry(tmp_path: Path) -> None:
    text = b"".join(b"%09d a line of a long log file\n" % i for i in range(1_000_000))
    tree = {"big.log": text, "big.bin": os.urandom(24 << 20)}
    path = make_tar(tmp_path / "big.tar", "w", tree)
    del tree
    size = 0

    def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    tracemalloc.start()
    try:
        summary = repack_file(path, sink, LIMITS, source_name="big.tar")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.unpacked_bytes > 50 << 20
    assert size == summary.output_bytes
    assert peak < 12 << 20, peak  # blocks of 1 MiB in and out, a few chunks being deflated


def test_progress_reports_input_consumed_as_it_grows(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "in.tar.gz", "w:gz", {"a.bin": os.urandom(4 << 20), **TREE})
    seen: list[int] = []
    summary = repack_stream(
        Trickle(path.read_bytes(), 100_000),
        io.BytesIO().write,
        LIMITS,
        source_name="in.tar.gz",
        on_progress=seen.append,
    )
    assert len(seen) > 3
    assert seen == sorted(set(seen))
    assert seen[-1] == summary.consumed_bytes == path.stat().st_size


@pytest.mark.parametrize("large", [False, True])
def test_streamed_entries_read_back_with_or_without_zip64_local_headers(
    tmp_path: Path, large: bool
) -> None:
    data = os.urandom(100_000) + b"text " * 100_000
    out = io.BytesIO()
    writer = ZipWriter(out.write)
    for name, level in (("stored.bin", 0), ("deflated.bin", 6)):
        stream = writer.open_entry(name, MTIME, level=level, large=large)
        stream.write(data)
        stream.close()
    writer.close()
    check_zip(out.getvalue(), tmp_path, {"stored.bin": data, "deflated.bin": data})
    # A reader of local headers (libarchive, as bsdtar reading a pipe) agrees.
    piped = subprocess.run(
        [require_tool("bsdtar"), "-xOf", "-", "stored.bin"],
        input=out.getvalue(),
        capture_output=True,
        check=True,
    )
    assert piped.stdout == data


@pytest.mark.timeout(30)
def test_gzip_bomb_is_inflated_no_further_than_the_ratio_floor(tmp_path: Path) -> None:
    info = tarfile.TarInfo("zeros.bin")
    info.size = 512 << 20
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [deflate.compress(info.tobuf())]
    zeros = bytes(1 << 20)
    parts += [deflate.compress(zeros) for _ in range(512)]
    bomb = b"".join(parts) + deflate.flush()
    assert len(bomb) < 4 << 20
    started = time.perf_counter()
    error = refusal(lambda: run_stream(bomb, "bomb.tar.gz", piece=1 << 20))
    assert error.code == "ratio_limit"
    assert time.perf_counter() - started < 5


def test_limits_that_make_no_sense_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="compression_level"):
        RepackLimits(compression_level=10)
    with pytest.raises(ValueError, match="max_ratio"):
        RepackLimits(max_ratio=0)


def test_corrupted_archives_end_in_a_repack_error_never_a_crash(tmp_path: Path) -> None:
    # A regression guard as much as a check: a libarchive query once crashed the process on a
    # tar corrupted like these.
    rng = random.Random(7)
    tree = {"a.txt": b"hello world\n" * 5000, "d/b.bin": bytes(rng.randbytes(70_000)), "c": b"x"}
    root = write_tree(tmp_path / "tree", tree)
    run_tool(require_tool("7z"), "a", "-t7z", "-bd", tmp_path / "in.7z", ".", cwd=root)
    inputs = [
        make_tar(tmp_path / "in.tar", tree=tree).read_bytes(),
        make_tar(tmp_path / "in.tar.gz", "w:gz", tree).read_bytes(),
        make_tar(tmp_path / "in.tar.xz", "w:xz", tree).read_bytes(),
        make_zip(tmp_path / "in.zip", tree).read_bytes(),
        (tmp_path / "in.7z").read_bytes(),
    ]
    for data in inputs:
        for _ in range(40):
            damaged = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            if rng.random() < 0.3:
                del damaged[rng.randrange(len(damaged)) :]
            path = tmp_path / "damaged"
            path.write_bytes(damaged)
            with contextlib.suppress(RepackError):
                run_file(path)


def test_tar_whose_first_header_fails_its_checksum_is_invalid(tmp_path: Path) -> None:
    # This one crashed the process once (a libarchive query after the failed open).
    data = bytearray(make_tar(tmp_path / "in.tar").read_bytes())
    data[200] ^= 0xA5  # inside the link name: "ustar" still says tar, the checksum says no
    assert refusal(lambda: run_stream(bytes(data), "in.tar")).code == "invalid_archive"
