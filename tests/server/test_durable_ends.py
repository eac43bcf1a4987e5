"""Acknowledged means durable, and the record beside the bytes: the manager on its embedded
backends, with ``os.fsync`` observed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import crc32c
import pytest

from livefile.api.model import ChecksumAlgorithm, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_server.bus import InProcessStatusBus
from livefile.impl_server.catalog import SqliteCatalog
from livefile.impl_server.contexts import UploadContexts
from livefile.impl_server.manager import CatalogUnavailableError, ResourceManager
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.storage import FilesystemStorage

TEXT = ResourceMetadata(filename="log.txt", mime_type="text/plain", supports_line_access=True)
DATA = b"one\ntwo\nthree\n"


def make_manager(data: Path, durable: bool = True) -> ResourceManager:
    return ResourceManager(
        storage=FilesystemStorage(data / "resources"),
        catalog=SqliteCatalog(data / "catalog.sqlite3", durable=durable),
        bus=InProcessStatusBus(),
        contexts=UploadContexts(),
        quotas=Quotas(),
        checkpoint_interval=0.05,
        durable=durable,
    )


class Journal:
    """What reached stable storage (``os.fsync``'s targets) and what was published, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            real_fsync(fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append(f"fsync {kind} {Path(target).name}")

        monkeypatch.setattr(os, "fsync", fsync)

    def published(self, manager: ResourceManager) -> None:
        publish = manager.bus.publish

        def recording(resource_id: str, status: ResourceStatus) -> None:
            self.events.append(f"published {status.transfer_status.value}")
            publish(resource_id, status)

        manager.bus.publish = recording  # type: ignore[method-assign]


async def test_bytes_index_and_record_are_on_stable_storage_before_completed_is_told(
    manager: ResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(monkeypatch)
    journal.published(manager)
    upload = await manager.create_upload(TEXT, None)
    await upload.write(DATA)
    await upload.finish(hashlib.md5(DATA).hexdigest())
    rid = upload.resource_id
    completed = journal.events.index("published COMPLETED")
    before = journal.events[:completed]
    assert f"fsync file {rid}.bin" in before
    assert f"fsync file {rid}.idx" in before
    assert any(e.startswith("fsync file") and ".meta." in e for e in before)
    assert f"fsync dir {rid[2:4]}" in before  # the renamed record's (and the bytes') entry


async def test_a_last_piece_given_to_complete_is_stored_and_flushed_before_the_record(
    manager: ResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``complete(last=...)`` (a small tus upload's body): the bytes land in the file, are
    flushed, then the record; COMPLETED says their size and checksum."""
    journal = Journal(monkeypatch)
    journal.published(manager)
    binary = ResourceMetadata(filename="small.bin", mime_type="application/octet-stream")
    writer = await manager.create_resource(binary, checksum_algorithm=ChecksumAlgorithm.CRC32C)
    await writer.append(b"first ")
    status = await writer.complete(last=b"and last")
    rid = writer.resource_id
    assert status.current_size == len(b"first and last")
    assert manager.storage.read(rid, 0, status.current_size) == b"first and last"
    entry = await manager.entry(rid)
    assert entry is not None
    assert entry.checksum == f"crc32c:{crc32c.crc32c(b'first and last'):08x}"
    events = journal.events
    data_flushed = events.index(f"fsync file {rid}.bin")
    record_flushed = next(i for i, e in enumerate(events) if ".meta." in e)
    assert data_flushed < record_flushed < events.index("published COMPLETED")


async def test_an_upload_stored_whole_is_durable_and_indexed_before_completed_is_told(
    manager: ResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store_upload`` (a small tus creation-with-upload): bytes, line index and the terminal
    record flushed, then the catalog; INITIATED and COMPLETED published in that order, and the
    resource reads as any upload does."""
    journal = Journal(monkeypatch)
    journal.published(manager)
    rid, status = await manager.store_upload(TEXT, None, DATA + b"four")
    assert (status.transfer_status, status.current_size) == (TransferStatus.COMPLETED, 18)
    assert (status.number_of_lines, status.revision) == (4, 1)
    events = journal.events
    completed = events.index("published COMPLETED")
    assert events.index("published INITIATED") < completed
    before = events[:completed]
    assert {f"fsync file {rid}.bin", f"fsync file {rid}.idx", f"fsync dir {rid[2:4]}"} <= set(
        before
    )
    assert any(e.startswith("fsync file") and ".meta." in e for e in before)
    entry = await manager.entry(rid)
    assert entry is not None
    assert entry.status == status
    assert entry.checksum == f"crc32c:{crc32c.crc32c(DATA + b'four'):08x}"
    record = manager.storage.read_meta(rid)
    assert record is not None
    assert record["status"]["transferStatus"] == "COMPLETED"  # the record is terminal at once
    reader = await manager.reader(rid)
    assert reader is not None
    page = await reader.read_lines(2, 2, 1024)
    assert page.lines == [b"three\n", b"four"]


async def test_scratch_data_is_never_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager(tmp_path, durable=False)
    journal = Journal(monkeypatch)
    try:
        upload = await manager.create_upload(TEXT, None)
        await upload.write(DATA)
        status = await upload.finish(hashlib.md5(DATA).hexdigest())
    finally:
        await manager.shutdown()
        await manager.catalog.close()
    assert status.transfer_status is TransferStatus.COMPLETED
    assert not [e for e in journal.events if e.startswith("fsync")]


async def test_a_catalog_that_lost_an_entry_gets_it_back_from_the_record(tmp_path: Path) -> None:
    manager = make_manager(tmp_path)
    upload = await manager.create_upload(TEXT, None)
    await upload.write(DATA)
    status = await upload.finish(hashlib.md5(DATA).hexdigest())
    await manager.shutdown()
    await manager.catalog.close()
    for suffix in ("", "-wal", "-shm"):  # the catalog is gone; the bytes and record are not
        (tmp_path / f"catalog.sqlite3{suffix}").unlink(missing_ok=True)
    manager = make_manager(tmp_path)
    try:
        info = await manager.info(upload.resource_id)
        assert info is not None
        assert info.status == status
        assert info.checksum == hashlib.md5(DATA).hexdigest()
        assert info.metadata == TEXT
        reader = await manager.reader(upload.resource_id)
        assert reader is not None
        page = await reader.read_lines(1, 2, 1024)
        assert page.lines == [b"two\n", b"three\n"]
        assert await manager.catalog.get(upload.resource_id) is not None  # written back
    finally:
        await manager.shutdown()
        await manager.catalog.close()


class UnreachableCatalog(SqliteCatalog):
    async def get(self, resource_id: str) -> None:
        raise ConnectionError("Redis is away")


async def test_an_unreachable_catalog_serves_the_newest_status_known_or_says_unavailable(
    tmp_path: Path,
) -> None:
    manager = make_manager(tmp_path)
    upload = await manager.create_upload(TEXT, None)
    await upload.write(DATA)
    status = await upload.finish(hashlib.md5(DATA).hexdigest())
    subscription = await manager.subscribe(upload.resource_id)
    assert subscription is not None
    manager._finished = type(manager._finished)(10)  # nothing cached: the catalog is asked
    manager.catalog = UnreachableCatalog(tmp_path / "other.sqlite3")
    try:
        assert await manager.status(upload.resource_id) == status  # the watcher's status
        subscription.close()
        with pytest.raises(CatalogUnavailableError, match="Service unavailable"):
            await manager.status(upload.resource_id)
    finally:
        await manager.shutdown()
        await manager.catalog.close()
