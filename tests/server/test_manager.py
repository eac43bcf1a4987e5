"""The resource manager on its real embedded backends (filesystem, SQLite, in-process bus)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livefile.api.errors import ChecksumMismatchError, QuotaExceededError, ServerError
from livefile.api.interfaces import PageQuery
from livefile.api.model import ResourceError, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_server.bus import InProcessStatusBus
from livefile.impl_server.catalog import SqliteCatalog
from livefile.impl_server.contexts import ContextEvent, UploadContexts
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.redis_contexts import RedisUploadContexts
from livefile.impl_server.storage import FilesystemStorage
from tests.support.redis_server import RedisProcess

DISCONNECTED = ResourceError(code="disconnected", message="test")
META = ResourceMetadata(filename="log.txt", mime_type="text/plain")


def make_manager(data: Path, quotas: Quotas | None = None) -> ResourceManager:
    return ResourceManager(
        storage=FilesystemStorage(data / "resources"),
        catalog=SqliteCatalog(data / "catalog.sqlite3"),
        bus=InProcessStatusBus(),
        contexts=UploadContexts(),
        quotas=quotas or Quotas(),
        checkpoint_interval=0.05,
    )


class RecordingListener:
    """An in-process listener, as an embedding application would register one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_event(self, event: ContextEvent) -> None:
        if event.kind == "statusChanged":
            status = event.data["resourceStatus"]
            assert isinstance(status, dict)
            self.events.append(("status", status["transferStatus"]))
        else:
            self.events.append((event.kind, event.data.get("reason")))


async def test_completed_upload_is_readable_and_persisted(manager: ResourceManager) -> None:
    upload = await manager.create_upload(META, None)
    await upload.write(b"hello\nworld\n")
    status = await upload.finish(hashlib.md5(b"hello\nworld\n").hexdigest())
    assert status.same_state(
        ResourceStatus(transfer_status=TransferStatus.COMPLETED, current_size=12)
    )
    reader = await manager.reader(upload.resource_id)
    assert reader is not None
    assert await reader.read(6, 12) == b"world\n"
    entry = await manager.catalog.get(upload.resource_id)
    assert entry is not None
    assert entry.status == status
    assert entry.checksum == hashlib.md5(b"hello\nworld\n").hexdigest()


async def test_checksum_mismatch_fails_the_resource_and_keeps_bytes(
    manager: ResourceManager,
) -> None:
    upload = await manager.create_upload(META, None)
    await upload.write(b"abc")
    with pytest.raises(ChecksumMismatchError, match="client=00"):
        await upload.finish("00" * 16)
    status = await manager.status(upload.resource_id)
    assert status is not None
    assert (status.transfer_status, status.current_size) == (TransferStatus.FAILED, 3)
    assert status.error is not None
    assert status.error.code == "checksum_mismatch"


async def test_terminal_status_is_never_overwritten(manager: ResourceManager) -> None:
    upload = await manager.create_upload(META, None)
    await upload.finish(hashlib.md5(b"").hexdigest())
    await upload.fail(DISCONNECTED)
    status = await manager.status(upload.resource_id)
    assert status is not None
    assert status.transfer_status is TransferStatus.COMPLETED


async def test_size_quota_stops_the_write_that_exceeds_it(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, Quotas(max_resource_size=10))
    upload = await manager.create_upload(META, None)
    await upload.write(b"12345678")
    with pytest.raises(QuotaExceededError, match="Size 11 exceeds"):
        await upload.write(b"abc")
    status = await upload.fail(DISCONNECTED)
    assert status.current_size == 8
    await manager.catalog.close()


async def test_context_listener_hears_creation_statuses_and_refusals(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, Quotas(max_resources_per_context=1))
    context_id = await manager.contexts.open()
    listener = RecordingListener()
    await manager.contexts.add_listener(context_id, listener)
    upload = await manager.create_upload(META, context_id)
    await upload.write(b"x")
    await upload.finish(hashlib.md5(b"x").hexdigest())
    with pytest.raises(QuotaExceededError):
        await manager.create_upload(META, context_id)
    await manager.contexts.close(context_id)
    kinds = [kind for kind, _ in listener.events]
    assert kinds[0] == "resourceCreated"
    assert ("status", "INITIATED") in listener.events
    assert ("status", "COMPLETED") in listener.events
    assert kinds[-2:] == ["creationRefused", "contextClosed"]
    await manager.catalog.close()


async def test_an_upload_stored_whole_is_heard_of_and_counted_in_its_context(
    tmp_path: Path,
) -> None:
    manager = make_manager(tmp_path, Quotas(max_resources_per_context=1))
    context_id = await manager.contexts.open()
    listener = RecordingListener()
    await manager.contexts.add_listener(context_id, listener)
    resource_id, _ = await manager.store_upload(META, context_id, b"whole")
    with pytest.raises(QuotaExceededError):
        await manager.store_upload(META, context_id, b"one too many")
    assert await manager.contexts.resource_count(context_id) == 1
    assert listener.events == [
        ("resourceCreated", None),
        ("status", "INITIATED"),
        ("status", "COMPLETED"),
        ("creationRefused", f"Upload context {context_id} already holds 1 resources"),
    ]
    page = await manager.catalog.page(PageQuery(None, 10, context_id))
    assert [entry.resource_id for entry in page.entries] == [resource_id]
    await manager.catalog.close()


async def test_an_upload_that_cannot_be_stored_whole_leaves_nothing(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, Quotas(max_resources_per_context=1))
    context_id = await manager.contexts.open()
    shutil.rmtree(tmp_path / "resources", ignore_errors=True)
    (tmp_path / "resources").write_text("not a folder")  # storage cannot create any file
    with pytest.raises(ServerError, match="Storage failure"):
        await manager.store_upload(META, context_id, b"lost")
    assert await manager.contexts.resource_count(context_id) == 0
    assert (await manager.catalog.page(PageQuery(None, 10))).entries == []
    await manager.catalog.close()


async def test_recovery_marks_unfinished_uploads_failed_with_bytes_on_disk(
    tmp_path: Path,
) -> None:
    first = make_manager(tmp_path)
    upload = await first.create_upload(META, None)
    await upload.write(b"partial")
    await upload.writer._stop_writer()  # the process "dies": no terminal status is persisted
    await first.catalog.close()

    second = make_manager(tmp_path)
    assert await second.recover() == 1
    status = await second.status(upload.resource_id)
    assert status is not None
    assert (status.transfer_status, status.current_size) == (TransferStatus.FAILED, 7)
    assert status.error is not None
    assert status.error.code == "interrupted"
    await second.catalog.close()


async def test_a_resource_that_cannot_be_created_gives_its_context_quota_back(
    tmp_path: Path,
) -> None:
    manager = make_manager(tmp_path, Quotas(max_resources_per_context=1))
    context_id = await manager.contexts.open()
    shutil.rmtree(tmp_path / "resources", ignore_errors=True)
    (tmp_path / "resources").write_text("not a folder")  # storage cannot create any file
    with pytest.raises(ServerError, match="Storage failure"):
        await manager.create_upload(META, context_id)
    assert await manager.contexts.resource_count(context_id) == 0
    (tmp_path / "resources").unlink()
    upload = await manager.create_upload(META, context_id)  # the one place in the quota is free
    await upload.finish(hashlib.md5(b"").hexdigest())
    assert await manager.contexts.resource_count(context_id) == 1
    await manager.shutdown()
    await manager.catalog.close()


async def test_redis_contexts_give_a_reservation_back(redis_server: RedisProcess) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    contexts = RedisUploadContexts(client, "release-test")
    try:
        context_id = await contexts.open()
        await contexts.reserve(context_id, 1)
        await contexts.release(context_id)
        assert await contexts.resource_count(context_id) == 0
        await contexts.reserve(context_id, 1)  # the place is free again
        with pytest.raises(QuotaExceededError):
            await contexts.reserve(context_id, 1)
        await contexts.release("0" * 32)  # an unknown context: nothing happens
    finally:
        await client.aclose()


async def test_progress_is_published_with_a_new_revision_and_never_goes_back(
    manager: ResourceManager,
) -> None:
    writer = await manager.create_resource(META, stage="waiting")
    seen = [writer.status]
    writer.progress("repacking", 10.0)  # a new stage: published at once, at the same size
    seen.append(writer.status)
    writer.progress("repacking", 5.0)  # lower within the stage: stays at 10
    seen.append(writer.status)
    await writer.append(b"abc")
    await writer.flush()
    await writer.complete()
    seen.append(writer.status)
    assert [s.stage for s in seen] == ["waiting", "repacking", "repacking", None]
    assert (seen[1].revision or 0) > (seen[0].revision or 0)
    assert seen[1].current_size == seen[0].current_size == 0
    assert seen[2] == seen[1]  # nothing new: nothing published
    assert seen[2].percent == 10.0
    assert seen[3].transfer_status is TransferStatus.COMPLETED
    assert (seen[3].percent, seen[3].current_size) == (None, 3)
    entry = await manager.catalog.get(writer.resource_id)
    assert entry is not None
    assert entry.status == seen[3]
