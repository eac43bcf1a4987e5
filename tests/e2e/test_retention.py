"""The lifecycle settings against a real server: an unfinished upload expires (FAILED
``expired``, its uploader closed, its bytes kept), a finished resource is deleted once its
retention period has passed (its watchers hear FAILED ``deleted``), and the storage quota
refuses new uploads (1008 over WebSocket, 507 over HTTP) until resources are deleted."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import pytest

from tests.conftest import ServerFactory
from tests.support.lifecycle import call, resource_files
from tests.support.server import LivefileProcess
from tests.support.wire import open_ws, start_upload, status_where, upload, wait_closed

ZIP = {"filename": "a.zip", "mimeType": "application/zip"}


@pytest.fixture(scope="module")
def sweeping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    """A server whose uploads expire 2 s after their start and whose finished resources are
    deleted 1 s after their end, swept every 0.2 s."""
    server = LivefileProcess(
        tmp_path_factory.mktemp("sweeping") / "data",
        "--upload-expiry", "2", "--retention", "1", "--sweep-interval", "0.2",
    ).start()  # fmt: skip
    yield server
    server.kill()


async def test_an_unfinished_upload_expires_failed_with_its_bytes_kept(
    sweeping: LivefileProcess,
) -> None:
    async with open_ws(f"{sweeping.ws_url}/ws/streaming/upload") as uploader:
        resource_id = await start_upload(uploader)
        await uploader.send(b"partial")
        download = f"{sweeping.ws_url}/ws/streaming/download/{resource_id}"
        async with open_ws(download) as watcher:
            failed = await status_where(watcher, transferStatus="FAILED")
        assert failed["error"]["code"] == "expired"
        assert failed["currentSize"] == 7
        code, reason = await wait_closed(uploader)
    assert code == 1008
    assert str(reason).startswith("Upload expired: the upload was not finished within 2 s")
    status, info = call(f"{sweeping.http_url}/resources/{resource_id}")
    assert status == 200  # still there (until the retention period after its end)
    assert info["status"]["error"]["code"] == "expired"


async def test_a_finished_resource_is_deleted_after_the_retention_period(
    sweeping: LivefileProcess,
) -> None:
    data_dir = sweeping.data_dir
    assert data_dir is not None
    async with open_ws(f"{sweeping.ws_url}/ws/streaming/upload") as uploader:
        resource_id = await start_upload(uploader)
        download = f"{sweeping.ws_url}/ws/streaming/download/{resource_id}"
        async with open_ws(download) as watcher:
            await uploader.send(b"done")
            checksum = hashlib.md5(b"done").hexdigest()
            await uploader.send(json.dumps({"@": "FinishUpload", "checksum": checksum}))
            await status_where(watcher, transferStatus="COMPLETED")
            deleted = await status_where(watcher, transferStatus="FAILED")
            assert deleted["error"] == {
                "code": "deleted",
                "message": "retention period of 1 s passed",
            }
            assert (await wait_closed(watcher))[0] == 1008
    assert call(f"{sweeping.http_url}/resources/{resource_id}")[0] == 410
    assert resource_files(data_dir, resource_id) == []


async def test_the_storage_quota_refuses_new_uploads_until_resources_are_deleted(
    start_server: ServerFactory,
) -> None:
    server = start_server("--max-storage-bytes", "4096")
    first = await upload(server.ws_url, os.urandom(5000))  # begun below the quota

    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as refused:
        await refused.send(json.dumps({"@": "StartUpload", "metadata": ZIP}))
        code, reason = await wait_closed(refused)
    assert code == 1008
    assert str(reason).startswith("QuotaExceededException: Storage quota reached: ")
    status, body = call(f"{server.http_url}/resources/{first}/repack", "POST")
    assert status == 507
    assert body["detail"].startswith("Storage quota reached: ")

    assert call(f"{server.http_url}/resources/{first}", "DELETE")[0] == 204
    await upload(server.ws_url, b"room again")
