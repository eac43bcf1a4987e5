"""``ResourceManager.reopen`` on the real embedded backends: an unfinished resource goes on
after its stored bytes — same digest, line index made whole, revisions above the old ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from livefile.api.errors import ServerError
from livefile.api.model import ChecksumAlgorithm, ResourceMetadata, TransferStatus
from livefile.impl_server.bus import InProcessStatusBus
from livefile.impl_server.catalog import SqliteCatalog
from livefile.impl_server.contexts import UploadContexts
from livefile.impl_server.line_index import ENTRY_SIZE, entry_count
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.storage import FilesystemStorage

TEXT = ResourceMetadata(filename="log.txt", mime_type="text/plain", supports_line_access=True)


def make_manager(data: Path) -> ResourceManager:
    return ResourceManager(
        storage=FilesystemStorage(data / "resources"),
        catalog=SqliteCatalog(data / "catalog.sqlite3"),
        bus=InProcessStatusBus(),
        contexts=UploadContexts(),
        quotas=Quotas(),
        checkpoint_interval=0.05,
    )


async def test_a_reopened_resource_goes_on_with_its_digest_lines_and_revisions(
    tmp_path: Path,
) -> None:
    first = make_manager(tmp_path)
    writer = await first.create_resource(TEXT, checksum_algorithm=ChecksumAlgorithm.SHA256)
    await writer.append(b"one\ntwo\nthr")
    await writer.flush()
    published = writer.status.revision or 0
    await first.suspend(writer)  # the producer goes away without an end
    await first.catalog.close()

    second = make_manager(tmp_path)  # as after a restart
    reopened = await second.reopen(writer.resource_id)
    assert reopened.status.transfer_status is TransferStatus.IN_PROGRESS
    assert (reopened.status.current_size, reopened.status.number_of_lines) == (11, 2)
    assert (reopened.status.revision or 0) > published
    await reopened.append(b"ee\nfour\n")
    status = await reopened.complete()
    assert (status.current_size, status.number_of_lines) == (19, 4)
    assert reopened.checksum == hashlib.sha256(b"one\ntwo\nthree\nfour\n").hexdigest()
    reader = await second.reader(writer.resource_id)
    assert reader is not None
    assert await reader.read(0, 19) == b"one\ntwo\nthree\nfour\n"
    await second.shutdown()
    await second.catalog.close()


async def test_reopen_finds_the_line_ends_a_killed_process_had_not_indexed(
    tmp_path: Path,
) -> None:
    manager = make_manager(tmp_path)
    writer = await manager.create_resource(TEXT)
    await writer.append(b"a\nb\n")
    await manager.suspend(writer)
    storage = manager.storage
    # Killed between appending bytes and their line ends, and mid-way through an entry.
    with storage.path(writer.resource_id).open("ab") as data:
        data.write(b"c\nd\n")
    with storage.index_path(writer.resource_id).open("ab") as index:
        index.write(b"\x01\x02")
    reopened = await manager.reopen(writer.resource_id)
    assert reopened.status.number_of_lines == 4
    assert entry_count(storage.index_path(writer.resource_id)) == 4
    assert storage.index_path(writer.resource_id).stat().st_size == 4 * ENTRY_SIZE
    await manager.shutdown()
    await manager.catalog.close()


async def test_only_an_unfinished_resource_not_being_written_can_be_reopened(
    tmp_path: Path,
) -> None:
    manager = make_manager(tmp_path)
    running = await manager.create_resource(TEXT)
    with pytest.raises(ServerError, match="being written already"):
        await manager.reopen(running.resource_id)
    await running.complete()
    with pytest.raises(ServerError, match="has ended COMPLETED"):
        await manager.reopen(running.resource_id)
    with pytest.raises(ServerError, match="Unknown resource"):
        await manager.reopen("0" * 32)
    await manager.shutdown()
    await manager.catalog.close()
