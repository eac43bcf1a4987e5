"""Reopening an unfinished resource (``ResourceManager.reopen``/``release``, recovery policies):
what resumable uploads and jobs taken over are built on, and a job run again over what its
lost worker published (``ReplayingWriter``), checked on the real embedded backends."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import crc32c
import pytest

from livefile.api.errors import ServerError
from livefile.api.interfaces import CatalogEntry
from livefile.api.model import (
    ChecksumAlgorithm,
    ResourceError,
    ResourceKind,
    ResourceMetadata,
    TransferStatus,
)
from livefile.impl_server.job_replay import ReplayingWriter
from livefile.impl_server.line_index import read_ends
from livefile.impl_server.manager import KEEP, Keep, ResourceManager
from livefile.impl_server.writer import LiveWriter
from tests.server.test_manager import make_manager

NL = b"\n"
TEXT = ResourceMetadata(filename="log.txt", mime_type="text/plain", supports_line_access=True)


async def test_a_released_resource_reopens_where_it_stopped(manager: ResourceManager) -> None:
    writer = await manager.create_resource(TEXT)
    await writer.append(b"one\ntw")
    await writer.flush()
    released = await manager.release(writer)
    assert released.transfer_status is TransferStatus.IN_PROGRESS
    assert released.current_size == 6

    reopened = await manager.reopen(writer.resource_id)
    assert reopened.status.transfer_status is TransferStatus.IN_PROGRESS
    assert reopened.status.current_size == 6
    assert (reopened.status.revision or 0) > (released.revision or 0)
    await reopened.append(b"o\nthree")
    done = await reopened.complete()
    assert (done.current_size, done.number_of_lines) == (13, 3)
    info = await manager.info(writer.resource_id)
    assert info is not None
    assert info.checksum == f"{crc32c.crc32c(b'one' + NL + b'two' + NL + b'three'):08x}"


async def test_reopen_repairs_a_line_index_left_behind_its_bytes(
    manager: ResourceManager,
) -> None:
    writer = await manager.create_resource(TEXT)
    await writer.append(b"a\nb\n")
    await writer.flush()
    await manager.release(writer)
    index = manager.storage.index_path(writer.resource_id)
    # A process killed between appending bytes and their line ends: bytes without entries,
    # and a torn last entry.
    with manager.storage.path(writer.resource_id).open("ab") as data:
        data.write(b"c\nd")
    with index.open("ab") as torn:
        torn.write(b"\x01\x02")

    reopened = await manager.reopen(writer.resource_id)
    assert reopened.status.current_size == 7
    assert reopened.status.number_of_lines == 3
    assert read_ends(index, 0, 10) == [2, 4, 6]
    await reopened.complete()


async def test_reopen_refuses_ended_and_held_resources(manager: ResourceManager) -> None:
    held = await manager.create_resource(TEXT)
    with pytest.raises(ServerError):
        await manager.reopen(held.resource_id)
    await held.complete()
    with pytest.raises(ServerError):
        await manager.reopen(held.resource_id)


async def test_a_recovery_policy_keeps_or_fails_unfinished_resources(tmp_path: Path) -> None:
    first = make_manager(tmp_path)
    kept = await first.create_resource(TEXT)
    failed = await first.create_resource(TEXT)
    await first.catalog.close()  # the process ends without ending them

    second = make_manager(tmp_path)
    expired = ResourceError(code="expired", message="test")

    async def policy(entry: CatalogEntry) -> Keep | ResourceError | None:
        return KEEP if entry.resource_id == kept.resource_id else expired

    second.add_recovery_policy(policy)
    assert await second.recover() == 1
    kept_status = await second.status(kept.resource_id)
    failed_status = await second.status(failed.resource_id)
    assert kept_status is not None
    assert failed_status is not None
    assert kept_status.transfer_status is TransferStatus.INITIATED
    assert failed_status.error == expired
    await second.shutdown()
    await second.catalog.close()


ZIP = ResourceMetadata(filename="out.zip", mime_type="application/zip")


async def run_again(
    manager: ResourceManager, published: bytes
) -> tuple[LiveWriter, ReplayingWriter]:
    """A job run again over a resource whose lost run had stored ``published``, in stage
    ``working`` at 40 %."""
    lost = await manager.create_resource(ZIP, kind=ResourceKind.REPACK, stage="waiting")
    await lost.append(published)
    await lost.flush()
    lost.progress("working", 40)  # a new stage: published at once
    await manager.release(lost)
    writer = await manager.reopen(lost.resource_id)
    assert writer.status.stage == "working"
    return writer, ReplayingWriter(writer, partial(manager.storage.read, lost.resource_id))


async def test_a_job_run_again_compares_what_was_published_and_goes_on(
    manager: ResourceManager,
) -> None:
    writer, replay = await run_again(manager, b"0123456789")
    before = writer.status
    replay.progress("working", 10)  # behind the lost run: not published
    assert writer.status == before
    await replay.append(b"01234")
    await replay.append(b"56789abc")
    await replay.append(b"def")
    status = await replay.complete()
    assert (status.transfer_status, status.current_size) == (TransferStatus.COMPLETED, 16)
    assert manager.storage.read(writer.resource_id, 0, 16) == b"0123456789abcdef"


async def test_a_job_run_again_that_diverges_ends_worker_lost_keeping_the_bytes(
    manager: ResourceManager,
) -> None:
    writer, replay = await run_again(manager, b"0123456789")
    with pytest.raises(ServerError, match="different bytes"):
        await replay.append(b"01234X")
    status = await manager.status(writer.resource_id)
    assert status is not None
    assert status.transfer_status is TransferStatus.FAILED
    assert status.error is not None
    assert status.error.code == "worker_lost"
    assert status.current_size == 10
    assert manager.storage.read(writer.resource_id, 0, 10) == b"0123456789"


async def test_an_abandoned_writer_stores_nothing_more(manager: ResourceManager) -> None:
    """A worker whose job another took over stops at once: what it had queued is not written
    into the file its successor appends to, and it publishes nothing."""
    writer = await manager.create_resource(ZIP, kind=ResourceKind.REPACK)
    await writer.append(b"kept")
    await writer.flush()
    published = writer.status
    await manager.abandon(writer.resource_id)
    with pytest.raises(ServerError, match="Another worker"):
        await writer.append(b"lost")
    assert await writer.fail(ResourceError(code="internal_error", message="late")) == published
    assert manager.storage.size(writer.resource_id) == 4


async def test_after_a_restart_the_record_names_the_checksum_to_go_on_with(
    tmp_path: Path,
) -> None:
    first = make_manager(tmp_path)
    writer = await first.create_resource(TEXT, checksum_algorithm=ChecksumAlgorithm.SHA256)
    await writer.append(b"one\ntwo\nthr")
    await writer.flush()
    published = writer.status.revision or 0
    await first.release(writer)  # the producer goes away without an end
    await first.catalog.close()

    second = make_manager(tmp_path)  # as after a restart
    reopened = await second.reopen(writer.resource_id)
    assert (reopened.status.current_size, reopened.status.number_of_lines) == (11, 2)
    assert (reopened.status.revision or 0) > published
    await reopened.append(b"ee\nfour\n")
    await reopened.complete()
    assert reopened.checksum == hashlib.sha256(b"one\ntwo\nthree\nfour\n").hexdigest()
    await second.shutdown()
    await second.catalog.close()
