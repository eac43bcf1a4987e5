"""Filesystem storage: ids are validated before any path exists; appends are readable at once."""

from pathlib import Path

import pytest

from livefile.impl_server.storage import FilesystemStorage

RID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "bad_id",
    [
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "%2e%2e%2f",
        "a" * 10_000,
        "ab\x00cd",
        RID.upper(),
        RID + "0",
    ],
)
def test_ids_that_are_not_ids_never_become_paths(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(ValueError, match="invalid resource id"):
        FilesystemStorage(tmp_path).path(bad_id)


def test_layout_spreads_ids_over_two_folder_levels(tmp_path: Path) -> None:
    assert FilesystemStorage(tmp_path).path(RID) == tmp_path / "01" / "23" / f"{RID}.bin"


def test_appended_bytes_are_readable_before_close(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    writer = storage.create(RID)
    writer.write(b"abc")
    assert storage.size(RID) == 3
    assert storage.read(RID, 1, 3) == b"bc"
    writer.close()


def test_reading_past_the_end_is_an_error(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    storage.create(RID).close()
    with pytest.raises(OSError, match="shorter"):
        storage.read(RID, 0, 1)
