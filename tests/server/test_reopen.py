"""Going on with an unfinished resource whose producer is gone (``ResourceManager.reopen``), and
a job run again over what its lost worker published (``ReplayingWriter``), on the real embedded
backends."""

from __future__ import annotations

from functools import partial

import crc32c
import pytest

from livefile.api.errors import ServerError
from livefile.api.model import ResourceKind, ResourceMetadata, TransferStatus
from livefile.impl_server.job_replay import ReplayingWriter
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.writer import LiveWriter

TEXT = ResourceMetadata(filename="log.txt", mime_type="text/plain", supports_line_access=True)
ZIP = ResourceMetadata(filename="out.zip", mime_type="application/zip")


async def stopped_after(manager: ResourceManager, data: bytes, metadata: ResourceMetadata) -> str:
    """A resource whose producer stored ``data`` and stopped without an end."""
    writer = await manager.create_resource(metadata, kind=ResourceKind.REPACK, stage="waiting")
    await writer.append(data)
    await writer.flush()
    writer.progress("working", 40)  # a new stage: published at once
    await manager.release(writer.resource_id)
    return writer.resource_id


async def run_again(
    manager: ResourceManager, published: bytes
) -> tuple[LiveWriter, ReplayingWriter]:
    """A job run again over a resource whose lost run had stored ``published``."""
    resource_id = await stopped_after(manager, published, ZIP)
    writer = await manager.reopen(resource_id)
    assert writer is not None
    return writer, ReplayingWriter(writer, partial(manager.storage.read, resource_id))


async def test_a_reopened_resource_goes_on_after_every_stored_byte(
    manager: ResourceManager,
) -> None:
    resource_id = await stopped_after(manager, b"one\ntwo\nthr", TEXT)
    before = await manager.status(resource_id)
    writer = await manager.reopen(resource_id)
    assert writer is not None
    assert writer.status.current_size == 11
    assert writer.status.number_of_lines == 2  # "thr" is not a complete line yet
    assert (writer.status.stage, writer.status.percent) == ("working", 40)
    await writer.append(b"ee\nfour\n")
    status = await writer.complete()
    assert status.transfer_status is TransferStatus.COMPLETED
    assert before is not None
    assert (status.revision or 0) > (before.revision or 0)
    assert writer.checksum == format(crc32c.crc32c(b"one\ntwo\nthree\nfour\n"), "08x")
    reader = await manager.reader(resource_id)
    assert reader is not None
    page = await reader.read_lines(0, 4, 1 << 20)
    assert [bytes(line) for line in page.lines] == [b"one\n", b"two\n", b"three\n", b"four\n"]


async def test_reopening_at_a_size_cuts_the_bytes_and_lines_beyond_it(
    manager: ResourceManager,
) -> None:
    resource_id = await stopped_after(manager, b"a\nb\nc\nd\n", TEXT)
    writer = await manager.reopen(resource_id, size=4)
    assert writer is not None
    assert (writer.status.current_size, writer.status.number_of_lines) == (4, 2)
    await writer.append(b"X\n")
    await writer.complete()
    reader = await manager.reader(resource_id)
    assert reader is not None
    assert await reader.read(0, 6) == b"a\nb\nX\n"
    page = await reader.read_lines(0, 3, 1 << 20)
    assert [bytes(line) for line in page.lines] == [b"a\n", b"b\n", b"X\n"]


async def test_an_ended_resource_is_not_reopened(manager: ResourceManager) -> None:
    writer = await manager.create_resource(ZIP, kind=ResourceKind.REPACK)
    await writer.complete()
    assert await manager.reopen(writer.resource_id) is None


async def test_a_job_run_again_compares_what_was_published_and_goes_on(
    manager: ResourceManager,
) -> None:
    writer, replay = await run_again(manager, b"0123456789")
    resource_id = writer.resource_id
    replay.progress("working", 10)  # behind the lost run: not published
    assert writer.status.percent == 40
    await replay.append(b"01234")
    await replay.append(b"56789abc")
    await replay.append(b"def")
    status = await replay.complete()
    assert (status.transfer_status, status.current_size) == (TransferStatus.COMPLETED, 16)
    assert manager.storage.read(resource_id, 0, 16) == b"0123456789abcdef"


async def test_a_job_run_again_that_diverges_ends_worker_lost_keeping_the_bytes(
    manager: ResourceManager,
) -> None:
    writer, replay = await run_again(manager, b"0123456789")
    resource_id = writer.resource_id
    with pytest.raises(ServerError, match="different bytes"):
        await replay.append(b"01234X")
    status = await manager.status(resource_id)
    assert status is not None
    assert status.transfer_status is TransferStatus.FAILED
    assert status.error is not None
    assert status.error.code == "worker_lost"
    assert status.current_size == 10
    assert manager.storage.read(resource_id, 0, 10) == b"0123456789"
