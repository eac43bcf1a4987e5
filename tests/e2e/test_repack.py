"""Archives repacked into a normalized ZIP by a real server, live: a derived resource that grows
while its archive is still uploading, read by real clients, checked with zipfile, bsdtar and 7z.

The engine's formats and limits one by one are in ``tests/server/test_repack.py``; these tests
are about the derived resource: how it is started, followed, read, refused and ended.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import jwt
import pytest

from livefile.api.errors import ResourceFailedError
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess
from tests.support.wire import get_json, open_ws, wait_closed

WAIT = 60.0
REQUIRED = os.environ.get("LIVEFILE_REQUIRE_ARCHIVE_TOOLS") == "1"


def tool(name: str) -> str:
    """The path of a Debian archive tool; skips (fails in CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: libarchive-tools, p7zip-full)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return path


def files_of_a_project() -> dict[str, bytes]:
    """Text that compresses, bytes that do not, a nested directory, an empty file."""
    rng = os.urandom
    log = b"".join(f"step {i}: ok, {i * 7} items\n".encode() for i in range(20_000))
    return {
        "README.txt": b"hello\n",
        "logs/build.log": log,
        "data/random.bin": rng(300_000),
        "data/deep/empty.txt": b"",
    }


def tar_gz(files: dict[str, bytes], mtime: float = 1_700_000_000) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def assert_zip_holds(data: bytes, files: dict[str, bytes], tmp_path: Path) -> None:
    """The ZIP lists exactly ``files``, byte for byte, for zipfile, bsdtar and 7z."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(files)
        for name, content in files.items():
            assert archive.read(name) == content, name
    path = tmp_path / "out.zip"
    path.write_bytes(data)
    listed = subprocess.run(
        [tool("bsdtar"), "-tf", str(path)], capture_output=True, check=True, text=True
    ).stdout.split()
    assert sorted(listed) == sorted(files)
    tested = subprocess.run(
        [tool("7z"), "t", str(path)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def post_repack(server: LivefileProcess, resource_id: str) -> tuple[int, Any]:
    return get_json(f"{server.http_url}/resources/{resource_id}/repack", method="POST")


async def follow_to_end(reference: str) -> tuple[bytes, list[ResourceStatus]]:
    """Every byte of the resource and every status seen, following it to its end."""
    seen: list[ResourceStatus] = []
    received = bytearray()
    async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
        seen.append(watcher.status)
        watcher.add_status_listener(seen.append)
        async for piece in watcher.iter_bytes():
            received += piece
    return bytes(received), seen


def assert_statuses_move_forward(seen: list[ResourceStatus]) -> None:
    revisions = [status.revision or 0 for status in seen]
    assert revisions == sorted(revisions)
    sizes = [status.current_size for status in seen]
    assert sizes == sorted(sizes)
    stages = [status.stage for status in seen if status.stage is not None]
    assert stages == sorted(stages, key=["waiting", "repacking"].index)
    percents = [status.percent or 0.0 for status in seen if status.stage == "repacking"]
    assert all(0 <= p <= 100 for p in percents)
    assert percents == sorted(percents)  # never decreasing within a stage


async def test_a_tar_gz_still_uploading_is_readable_as_a_zip_before_it_completes(
    server: LivefileProcess, tmp_path: Path
) -> None:
    files = files_of_a_project()
    archive = tar_gz(files)
    async with RawUpload(server.ws_url, filename="project.tar.gz", options={"repack": True}) as raw:
        (derived,) = raw.ready["derived"]
        assert derived["kind"] == "repack"
        following = asyncio.create_task(follow_to_end(derived["reference"]["uri"]))
        async with AsyncDownloadClient(derived["reference"]["uri"], timeout=WAIT) as watcher:
            half = len(archive) // 2
            await raw.write(archive[:half])
            # The ZIP grows while the archive is still arriving: its first bytes are readable.
            status = await watcher.wait_for_status(lambda s: s.current_size >= 4, WAIT)
            assert status.transfer_status is TransferStatus.IN_PROGRESS
            assert status.stage == "repacking"
            assert await watcher.read(0, 4) == b"PK\x03\x04"
            source = get_json(f"{server.http_url}/resources/{raw.resource_id}")[1]
            assert source["status"]["transferStatus"] == "IN_PROGRESS"
            await raw.trickle(archive[half:], seconds=0.5)
            await raw.finish()
        data, seen = await asyncio.wait_for(following, WAIT)
    assert seen[-1].transfer_status is TransferStatus.COMPLETED
    assert_statuses_move_forward(seen)
    assert_zip_holds(data, files, tmp_path)
    info = get_json(f"{server.http_url}/resources/{derived['id']}")[1]
    assert (info["kind"], info["sources"]) == ("repack", [raw.resource_id])
    assert info["metadata"] == {
        "filename": "project.zip",
        "mimeType": "application/zip",
        "supportsLineAccess": False,
    }
    listed = get_json(f"{server.http_url}/resources/{raw.resource_id}")[1]["derived"]
    assert listed == [{"id": derived["id"], "kind": "repack"}]
    head = subprocess.run(
        ["curl", "-sSI", f"{server.http_url}/resources/{derived['id']}/content"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert f"x-livefile-revision: {info['status']['revision']}\n" in head


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.zst", "7z"])
async def test_a_completed_archive_is_repacked_on_request(
    server: LivefileProcess, tmp_path: Path, kind: str
) -> None:
    files = files_of_a_project()
    source_dir = tmp_path / "in"
    for name, data in files.items():
        (source_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (source_dir / name).write_bytes(data)
    archive_path = tmp_path / f"project.{kind}"
    names = sorted(files)
    if kind == "zip":
        archive_path.write_bytes(zip_bytes(files))
    elif kind == "tar":
        subprocess.run(["tar", "-cf", str(archive_path), *names], cwd=source_dir, check=True)
    elif kind == "tar.zst":
        subprocess.run(
            [tool("bsdtar"), "--zstd", "-cf", str(archive_path), *names],
            cwd=source_dir,
            check=True,
        )
    else:
        subprocess.run(
            [tool("7z"), "a", "-bd", str(archive_path), *names],
            cwd=source_dir,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
    reference = await upload(server.ws_url, archive_path.read_bytes(), filename=archive_path.name)
    source_id = reference.rsplit("/", 1)[1]
    code, started = post_repack(server, source_id)
    assert code == 202, started
    assert started["source"] == source_id
    data, seen = await follow_to_end(started["reference"]["uri"])
    assert seen[-1].transfer_status is TransferStatus.COMPLETED, seen[-1]
    assert_statuses_move_forward(seen)
    assert_zip_holds(data, files, tmp_path)


async def test_a_7z_waits_for_its_whole_source(server: LivefileProcess, tmp_path: Path) -> None:
    files = {"a.txt": b"seven zip needs its end\n" * 1000}
    (tmp_path / "a.txt").write_bytes(files["a.txt"])
    subprocess.run(
        [tool("7z"), "a", "-bd", "x.7z", "a.txt"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    archive = (tmp_path / "x.7z").read_bytes()
    async with RawUpload(server.ws_url, filename="x.7z", options={"repack": True}) as raw:
        (derived,) = raw.ready["derived"]
        async with AsyncDownloadClient(derived["reference"]["uri"], timeout=WAIT) as watcher:
            await raw.write(archive[: len(archive) - 10])
            await watcher.wait_for_status(lambda s: s.stage == "waiting", WAIT)
            await asyncio.sleep(0.5)  # a chance to start too early, which it must not take
            assert watcher.status.stage == "waiting"
            assert watcher.status.current_size == 0
            await raw.write(archive[len(archive) - 10 :])
            await raw.finish()
            final = await watcher.wait_for_end(WAIT)
            assert final.transfer_status is TransferStatus.COMPLETED
            data = await watcher.read(0, final.current_size)
    assert_zip_holds(data, files, tmp_path)


async def failed_with(server: LivefileProcess, archive: bytes, filename: str) -> dict[str, Any]:
    """Upload ``archive``, repack it, and return the derived resource's final status."""
    reference = await upload(server.ws_url, archive, filename=filename)
    source_id = reference.rsplit("/", 1)[1]
    code, started = post_repack(server, source_id)
    assert code == 202, started
    async with AsyncDownloadClient(started["reference"]["uri"], timeout=WAIT) as watcher:
        final = await watcher.wait_for_end(WAIT)
        assert final.transfer_status is TransferStatus.FAILED
        # What was written is a valid ZIP (of the entries finished before the refusal).
        data = await watcher.read(0, final.current_size)
    if data:
        with zipfile.ZipFile(io.BytesIO(data)) as finished:
            assert finished.testzip() is None
    # The source is untouched.
    source = get_json(f"{server.http_url}/resources/{source_id}")[1]
    assert source["status"]["transferStatus"] == "COMPLETED"
    assert source["status"]["currentSize"] == len(archive)
    return final.to_wire()


async def test_an_encrypted_zip_is_refused(server: LivefileProcess, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("the plans\n")
    subprocess.run(
        [tool("7z"), "a", "-bd", "-tzip", "-pX", "enc.zip", "secret.txt"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    final = await failed_with(server, (tmp_path / "enc.zip").read_bytes(), "enc.zip")
    assert final["error"]["code"] == "encrypted_archive"


async def test_a_7z_with_encrypted_headers_is_refused_without_waiting_for_a_password(
    server: LivefileProcess, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("the plans\n")
    subprocess.run(
        [tool("7z"), "a", "-bd", "-pX", "-mhe=on", "enc.7z", "secret.txt"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    final = await failed_with(server, (tmp_path / "enc.7z").read_bytes(), "enc.7z")
    assert final["error"]["code"] == "encrypted_archive"


async def test_a_zip_bomb_is_refused_early(server: LivefileProcess) -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("zeros.bin", "w", force_zip64=True) as entry,
    ):
        chunk = bytes(1024 * 1024)
        for _ in range(1024):  # 1 GiB of zeros in about 1 MiB
            entry.write(chunk)
    bomb = buffer.getvalue()
    assert len(bomb) < 2 * 1024 * 1024
    started = time.monotonic()
    final = await failed_with(server, bomb, "bomb.zip")
    assert final["error"]["code"] in ("ratio_limit", "unpacked_size_limit")
    assert final["currentSize"] < 80 * 1024 * 1024  # stopped long before 1 GiB was written
    assert time.monotonic() - started < WAIT


async def test_too_many_entries_are_refused(server: LivefileProcess) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for index in range(20_001):
            archive.addfile(tarfile.TarInfo(f"e/{index}"), io.BytesIO(b""))
    final = await failed_with(server, buffer.getvalue(), "many.tar.gz")
    assert final["error"]["code"] == "entry_count_limit"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs"])
async def test_unsafe_paths_are_refused(server: LivefileProcess, name: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    final = await failed_with(server, buffer.getvalue(), "evil.tar")
    assert final["error"]["code"] == "unsafe_path"


async def test_a_source_that_fails_fails_its_repack_keeping_what_was_written(
    server: LivefileProcess,
) -> None:
    archive = tar_gz(files_of_a_project())
    async with RawUpload(server.ws_url, filename="cut.tar.gz", options={"repack": True}) as raw:
        (derived,) = raw.ready["derived"]
        async with AsyncDownloadClient(derived["reference"]["uri"], timeout=WAIT) as watcher:
            await raw.write(archive[: len(archive) // 2])
            await watcher.wait_for_status(lambda s: s.current_size > 0, WAIT)
            await raw.drop()
            with pytest.raises(ResourceFailedError):
                async for _ in watcher.iter_bytes():
                    pass
            final = watcher.status
    assert final.transfer_status is TransferStatus.FAILED
    assert final.error is not None
    assert final.error.code == "source_failed"
    assert final.current_size > 0


async def test_a_reference_to_the_source_reads_its_repack_with_access_control_on(
    start_server: ServerFactory,
) -> None:
    secret = "livefile-test-secret-of-32-bytes!"
    server = start_server(env={"LIVEFILE_JWT_SECRET": secret})
    now = int(time.time())
    claims = {"aud": "livefile", "iat": now, "exp": now + 600, "scope": "upload"}
    token = jwt.encode(claims, secret, algorithm="HS256")
    archive = tar_gz({"a.txt": b"A\n"})
    async with RawUpload(
        server.ws_url, filename="a.tar.gz", options={"repack": True}, token=token
    ) as raw:
        await raw.write(archive)
        await raw.finish()
    source_token = raw.reference.split("token=", 1)[1]
    derived_id = raw.ready["derived"][0]["id"]
    url = f"{server.http_url}/resources/{derived_id}?token={source_token}"
    code, info = get_json(url)
    assert code == 200, info
    assert info["sources"] == [raw.resource_id]
    other = await upload(server.ws_url, b"not an archive", filename="x.bin", token=token)
    other_token = other.split("token=", 1)[1]
    code, _ = get_json(f"{server.http_url}/resources/{derived_id}?token={other_token}")
    assert code == 403


async def test_the_upload_sdk_asks_for_a_repack_and_for_one_of_an_existing_resource(
    server: LivefileProcess, tmp_path: Path
) -> None:
    files = files_of_a_project()
    path = tmp_path / "project.tar.gz"
    path.write_bytes(tar_gz(files))
    announced: list[str] = []
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        result = await client.upload_file(
            path, repack=True, on_derived=lambda derived: announced.append(derived.id)
        )
        (derived,) = result.derived
        assert announced == [derived.id]
        again = await client.repack(result.reference)
    assert again.id != derived.id
    for reference in (derived.reference.uri, again.reference.uri):
        data, seen = await follow_to_end(reference)
        assert seen[-1].transfer_status is TransferStatus.COMPLETED
        assert_zip_holds(data, files, tmp_path)


async def test_the_cli_prints_the_repacks_reference_on_the_second_line(
    server: LivefileProcess, tmp_path: Path
) -> None:
    files = {"a.txt": b"alpha\n", "b/c.txt": b"gamma\n"}
    path = tmp_path / "small.tar.gz"
    path.write_bytes(tar_gz(files))
    cli = [sys.executable, "-m", "livefile.impl_common.cli"]
    uploaded = subprocess.run(
        [*cli, "upload", str(path), "--repack", "--server", server.ws_url],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    reference, derived, result = uploaded.stdout.splitlines()
    assert json.loads(result)["derived"][0]["reference"]["uri"] == derived
    asked = subprocess.run(
        [*cli, "repack", reference], capture_output=True, text=True, timeout=WAIT
    )
    assert asked.returncode == 0, asked.stderr
    for zip_reference in (derived, asked.stdout.strip()):
        out = tmp_path / "out.zip"
        got = subprocess.run(
            [*cli, "get", zip_reference, "-o", str(out)], capture_output=True, timeout=WAIT
        )
        assert got.returncode == 0, got.stderr
        assert_zip_holds(out.read_bytes(), files, tmp_path)
    unknown = subprocess.run(
        [*cli, "repack", "0" * 32, "--server", server.ws_url],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert unknown.returncode != 0
    assert "Unknown resource id" in unknown.stderr


async def test_a_full_job_queue_refuses_clearly_and_a_slow_job_meets_its_time_limit(
    start_server: ServerFactory,
) -> None:
    server = start_server("--job-concurrency", "1", "--job-queue", "0", "--job-time-limit", "2")
    async with RawUpload(server.ws_url, filename="slow.tar.gz") as raw:
        await raw.write(tar_gz({"a.txt": b"A\n"})[:100])  # an archive that never completes
        code, running = post_repack(server, raw.resource_id)
        assert code == 202, running
        # The one slot is taken and nothing may wait: refused at once, nothing created.
        code, refused = post_repack(server, raw.resource_id)
        assert code == 503
        assert "try again later" in refused["detail"]
        # Asked at upload time, the same refusal closes the upload with 1013.
        async with open_ws(f"{server.ws_url}/ws/streaming/upload") as refused_upload:
            start = {
                "@": "StartUpload",
                "metadata": {"filename": "b.tar.gz", "mimeType": "application/gzip"},
                "repack": True,
            }
            await refused_upload.send(json.dumps(start))
            closed = await asyncio.wait_for(wait_closed(refused_upload), WAIT)
        assert closed[0] == 1013
        assert "try again later" in (closed[1] or "")
        listed = get_json(f"{server.http_url}/resources/{raw.resource_id}")[1]["derived"]
        assert [item["id"] for item in listed] == [running["id"]]
        async with AsyncDownloadClient(running["reference"]["uri"], timeout=WAIT) as watcher:
            final = await watcher.wait_for_end(WAIT)
        assert final.transfer_status is TransferStatus.FAILED
        assert final.error is not None
        assert final.error.code == "time_limit"
        # The slot is free again once the job has unwound (just after its FAILED is published):
        # another job is taken.
        deadline = time.monotonic() + WAIT
        while (code := post_repack(server, raw.resource_id)[0]) == 503:
            assert time.monotonic() < deadline, "the job slot was never freed"
            await asyncio.sleep(0.05)
        assert code == 202
        source = get_json(f"{server.http_url}/resources/{raw.resource_id}")[1]
        assert source["status"]["transferStatus"] == "IN_PROGRESS"


async def test_a_repack_whose_server_is_killed_ends_worker_lost_after_the_restart(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir)
    archive = tar_gz(files_of_a_project())
    raw = RawUpload(server.ws_url, filename="killed.tar.gz", options={"repack": True})
    async with raw:
        derived_id = raw.ready["derived"][0]["id"]
        await raw.write(archive[: len(archive) // 2])
        async with AsyncDownloadClient(raw.ready["derived"][0]["reference"]["uri"]) as watcher:
            await watcher.wait_for_status(lambda s: s.current_size > 0, WAIT)
        server.kill()
        with pytest.raises(ConnectionError):
            await raw.finish()
    restarted = start_server(data_dir=data_dir)
    info = get_json(f"{restarted.http_url}/resources/{derived_id}")[1]
    assert info["status"]["transferStatus"] == "FAILED"
    assert info["status"]["error"]["code"] == "worker_lost"
    assert info["status"]["currentSize"] > 0
    source = get_json(f"{restarted.http_url}/resources/{raw.resource_id}")[1]
    assert source["status"]["error"]["code"] == "interrupted"
