"""ZIP bundles of many resources from a real server: a bundle of finished members composed from
their files (exact length, validators, any range), one that follows a member still uploading,
one whose member fails, and the refusals at creation — read with curl, zipfile and bsdtar."""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import io
import json
import os
import random
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any

import crc32c
import jwt
import pytest

from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download import AsyncDownloadClient
from tests.conftest import ServerFactory
from tests.e2e.test_repack import follow_to_end, tool
from tests.e2e.test_shared_jobs import cluster, runs_of
from tests.support.raw_upload import RawUpload, upload
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0


def post_bundle(
    server: LivefileProcess, body: dict[str, Any], token: str | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.http_url}/bundles",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def members_of(ids_and_paths: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"resource": rid, "path": path} for rid, path in ids_and_paths]


def id_of(reference: str) -> str:
    return reference.split("?", 1)[0].rsplit("/", 1)[1]


async def uploaded(server: LivefileProcess, files: dict[str, bytes]) -> dict[str, str]:
    """Each file uploaded whole: its resource id, by path."""
    return {
        path: id_of(await upload(server.ws_url, data, filename=path.rsplit("/", 1)[-1]))
        for path, data in files.items()
    }


async def finished_bundle(
    server: LivefileProcess, files: dict[str, bytes], filename: str = "b.zip"
) -> tuple[str, ResourceStatus]:
    ids = await uploaded(server, files)
    code, created = post_bundle(
        server,
        {"filename": filename, "members": members_of([(rid, path) for path, rid in ids.items()])},
    )
    assert code == 201, created
    async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
        final = await watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.COMPLETED, final
    return created["id"], final


def three_files() -> dict[str, bytes]:
    return {
        "logs/build.log": b"".join(f"line {i}\n".encode() for i in range(5000)),
        "data/random.bin": os.urandom(300_000),
        "empty.txt": b"",
    }


def assert_zip_holds(data: bytes, files: dict[str, bytes], tmp_path: Path) -> dict[str, Any]:
    """The ZIP holds ``files`` and MANIFEST.json, for zipfile and bsdtar; the manifest."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [*files, "MANIFEST.json"]
        for name, content in files.items():
            assert archive.read(name) == content, name
        manifest: dict[str, Any] = json.loads(archive.read("MANIFEST.json"))
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    listed = subprocess.run(
        [tool("bsdtar"), "-tf", str(path)], capture_output=True, check=True, text=True
    ).stdout.split()
    assert listed == [*files, "MANIFEST.json"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([tool("bsdtar"), "-xf", str(path), "-C", str(out)], check=True)
    for name, content in files.items():
        assert (out / name).read_bytes() == content, name
    return manifest


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--fail", *args], capture_output=True, check=True)


async def test_three_finished_members_download_with_curl_as_one_zip(
    server: LivefileProcess, tmp_path: Path
) -> None:
    files = three_files()
    bundle_id, final = await finished_bundle(server, files)
    url = f"{server.http_url}/resources/{bundle_id}/content"
    out = tmp_path / "download.zip"
    headers = curl("-D", "-", "-o", str(out), url).stdout.decode().lower()
    data = out.read_bytes()
    assert len(data) == final.current_size
    assert f"content-length: {len(data)}\r\n" in headers
    manifest = assert_zip_holds(data, files, tmp_path)
    assert [m["path"] for m in manifest["members"]] == list(files)
    assert [m["size"] for m in manifest["members"]] == [len(d) for d in files.values()]
    info = get_json(f"{server.http_url}/resources/{bundle_id}")[1]
    assert info["kind"] == "bundle"
    assert info["metadata"]["mimeType"] == "application/zip"
    # Its checksum is the CRC-32C of the ZIP, combined from the members' own checksums.
    assert info["checksum"] == f"{crc32c.crc32c(data):08x}"
    assert info["checksumAlgorithm"] == "crc32c"
    # The WebSocket chunk reads compose the same bytes.
    async with AsyncDownloadClient(
        f"{server.ws_url}/ws/streaming/download/{bundle_id}", timeout=WAIT
    ) as watcher:
        assert await watcher.read(0, len(data)) == data
        assert await watcher.read(1000, 250_000) == data[1000:250_000]


def http_get(
    server: LivefileProcess, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


async def test_a_finished_bundle_says_its_stages_and_may_hold_a_resource_twice(
    server: LivefileProcess, tmp_path: Path
) -> None:
    ids = await uploaded(server, {"a.txt": b"twice\n"})
    members = [(ids["a.txt"], "one/a.txt"), (ids["a.txt"], "two/a.txt")]
    code, created = post_bundle(server, {"filename": "t.zip", "members": members_of(members)})
    assert code == 201, created
    data, seen = await follow_to_end(created["reference"]["uri"])
    assert seen[-1].transfer_status is TransferStatus.COMPLETED
    stages = [s.stage for s in seen if s.stage is not None]
    assert set(stages) <= {"waiting", "checksumming"}
    assert stages == sorted(stages, key=["waiting", "checksumming"].index)
    percents = [s.percent or 0.0 for s in seen if s.stage == "checksumming"]
    assert percents == sorted(percents)
    assert_zip_holds(data, {"one/a.txt": b"twice\n", "two/a.txt": b"twice\n"}, tmp_path)
    info = get_json(f"{server.http_url}/resources/{created['id']}")[1]
    assert info["sources"] == [ids["a.txt"]]
    nested = {"filename": "n.zip", "members": members_of([(created["id"], "t.zip")])}
    code, answer = post_bundle(server, nested)
    assert code == 422
    assert "is a bundle" in answer["detail"]


async def test_a_failed_member_is_refused_at_creation(server: LivefileProcess) -> None:
    async with RawUpload(server.ws_url, filename="gone.bin") as raw:
        await raw.write(b"x")
        await raw.drop()
    async with AsyncDownloadClient(raw.reference, timeout=WAIT) as watcher:
        assert (await watcher.wait_for_end(WAIT)).transfer_status is TransferStatus.FAILED
    code, answer = post_bundle(
        server, {"filename": "x.zip", "members": members_of([(raw.resource_id, "gone.bin")])}
    )
    assert code == 422
    assert "FAILED" in answer["detail"]


async def test_any_range_of_a_bundle_is_that_slice_of_the_whole_with_validators(
    server: LivefileProcess,
) -> None:
    files = {f"dir{i % 3}/file{i}.bin": os.urandom(random.randrange(0, 70_000)) for i in range(12)}
    bundle_id, final = await finished_bundle(server, files)
    path = f"/resources/{bundle_id}/content"
    status, headers, whole = http_get(server, path, {})
    assert status == 200
    assert int(headers["content-length"]) == len(whole) == final.current_size
    rng = random.Random(16)
    for _ in range(200):
        start = rng.randrange(len(whole))
        end = rng.randrange(start, min(len(whole), start + 100_000))
        status, got, body = http_get(server, path, {"Range": f"bytes={start}-{end}"})
        assert status == 206
        assert got["content-range"] == f"bytes {start}-{end}/{len(whole)}"
        assert body == whole[start : end + 1], (start, end)
    # Validators: the ETag is the checksum; Last-Modified is the newest member's.
    info = get_json(f"{server.http_url}/resources/{bundle_id}")[1]
    assert headers["etag"] == f'"crc32c:{info["checksum"]}"'
    member_dates = []
    for member in info["sources"]:
        head = http_get(server, f"/resources/{member}/content", {})[1]
        member_dates.append(email.utils.parsedate_to_datetime(head["last-modified"]))
    assert email.utils.parsedate_to_datetime(headers["last-modified"]) == max(member_dates)
    status, _, body = http_get(server, path, {"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")
    status, _, _ = http_get(server, path, {"If-Modified-Since": headers["last-modified"]})
    assert status == 304
    status, _, body = http_get(server, path, {"If-None-Match": '"crc32c:00000000"'})
    assert (status, body) == (200, whole)
    ranged = {"Range": "bytes=10-19", "If-Range": headers["etag"]}
    assert http_get(server, path, ranged)[::2] == (206, whole[10:20])
    ranged["If-Range"] = '"crc32c:00000000"'
    assert http_get(server, path, ranged)[::2] == (200, whole)


async def test_a_bundle_follows_a_member_still_uploading_to_its_end(
    server: LivefileProcess, tmp_path: Path
) -> None:
    done = {"done.txt": b"finished before\n"}
    ids = await uploaded(server, done)
    growing = os.urandom(200_000)
    async with RawUpload(server.ws_url, filename="growing.bin") as raw:
        await raw.write(growing[:50_000])
        members = [(raw.resource_id, "live/growing.bin"), (ids["done.txt"], "done.txt")]
        code, created = post_bundle(
            server, {"filename": "live.zip", "members": members_of(members)}
        )
        assert code == 201, created
        following = asyncio.create_task(follow_to_end(created["reference"]["uri"]))
        async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
            # The bundle grows while its member is still uploading.
            status = await watcher.wait_for_status(lambda s: s.current_size > 0, WAIT)
            assert status.transfer_status is TransferStatus.IN_PROGRESS
            assert status.stage == "bundling"
            assert await watcher.read(0, 4) == b"PK\x03\x04"
            # Every byte the member has so far is in the bundle while it waits for more.
            status = await watcher.wait_for_status(lambda s: s.current_size > 50_000, WAIT)
            assert status.transfer_status is TransferStatus.IN_PROGRESS
            head = await watcher.read(0, status.current_size)
            # The growing member's entry follows the finished one's: inflate what it has.
            header = head.index(b"PK\x03\x04", 4)
            name_length, extra_length = struct.unpack_from("<HH", head, header + 26)
            assert head[header + 30 : header + 30 + name_length] == b"live/growing.bin"
            start = header + 30 + name_length + extra_length
            entry = zlib.decompressobj(-15).decompress(head[start:])
            assert entry.startswith(growing[:50_000])
        await raw.trickle(growing[50_000:], seconds=0.5)
        await raw.finish()
        data, seen = await asyncio.wait_for(following, WAIT)
    assert seen[-1].transfer_status is TransferStatus.COMPLETED
    revisions = [s.revision or 0 for s in seen]
    assert revisions == sorted(revisions)
    assert [s.current_size for s in seen] == sorted(s.current_size for s in seen)
    # Finished members first, then the growing one.
    manifest = assert_zip_holds(
        data, {"done.txt": done["done.txt"], "live/growing.bin": growing}, tmp_path
    )
    assert [m["status"] for m in manifest["members"]] == ["COMPLETED", "COMPLETED"]
    assert manifest["members"][1]["size"] == len(growing)


async def test_a_member_that_fails_fails_the_bundle_naming_it_with_a_valid_zip_so_far(
    server: LivefileProcess, tmp_path: Path
) -> None:
    ids = await uploaded(server, {"ok.txt": b"fine\n"})
    async with (
        RawUpload(server.ws_url, filename="doomed.bin") as raw,
        RawUpload(server.ws_url, filename="later.bin") as later,
    ):
        await raw.write(b"x" * 10_000)
        members = [
            (ids["ok.txt"], "ok.txt"),
            (raw.resource_id, "doomed.bin"),
            (later.resource_id, "later.bin"),
        ]
        code, created = post_bundle(server, {"filename": "f.zip", "members": members_of(members)})
        assert code == 201, created
        async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
            await watcher.wait_for_status(lambda s: s.current_size > 0, WAIT)
            await raw.drop()
            final = await watcher.wait_for_end(WAIT)
            data = await watcher.read(0, final.current_size)
    assert final.transfer_status is TransferStatus.FAILED
    assert final.error is not None
    assert final.error.code == "member_failed"
    assert "doomed.bin" in final.error.message
    assert raw.resource_id in final.error.message
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["ok.txt", "MANIFEST.json"]
        manifest = json.loads(archive.read("MANIFEST.json"))
    assert [m["status"] for m in manifest["members"]] == ["COMPLETED", "FAILED", "NOT_WRITTEN"]
    assert manifest["members"][1]["size"] == 10_000


@pytest.mark.parametrize(
    ("paths", "detail"),
    [
        (["a.txt", "a.txt"], "duplicate entry name"),
        (["a", "a/b.txt"], "inside file"),
        (["../etc/passwd"], "'..'"),
        (["/abs.txt"], "absolute"),
        (["C:/x.txt"], "drive letter"),
        (["MANIFEST.json"], "manifest"),
    ],
)
async def test_unsafe_or_duplicate_paths_are_refused_at_creation(
    server: LivefileProcess, paths: list[str], detail: str
) -> None:
    ids = await uploaded(server, {"a.txt": b"A"})
    body = {"filename": "x.zip", "members": members_of([(ids["a.txt"], p) for p in paths])}
    code, answer = post_bundle(server, body)
    assert code == 422
    assert detail in answer["detail"]


async def test_unknown_members_and_members_that_are_not_one_thing_are_refused(
    server: LivefileProcess,
) -> None:
    code, answer = post_bundle(
        server, {"filename": "x.zip", "members": members_of([("0" * 32, "a")])}
    )
    assert code == 404, answer
    both = {"resource": "0" * 32, "url": "http://example.com/a", "path": "a"}
    code, answer = post_bundle(server, {"filename": "x.zip", "members": [both]})
    assert code == 422
    assert "either a resource id or a URL" in answer["detail"]
    # URL members themselves: tests/e2e/test_transfers.py (they need a server that may reach one)


async def test_the_member_count_and_size_limits_are_kept(start_server: ServerFactory) -> None:
    server = start_server("--bundle-max-members", "2", "--bundle-max-size", "1000")
    ids = await uploaded(server, {"a": b"A" * 600, "b": b"B" * 600, "c": b"C"})
    code, answer = post_bundle(
        server, {"filename": "x.zip", "members": members_of([(i, p) for p, i in ids.items()])}
    )
    assert code == 422
    assert "at most 2 members" in answer["detail"]
    code, answer = post_bundle(
        server, {"filename": "x.zip", "members": members_of([(ids["a"], "a"), (ids["b"], "b")])}
    )
    assert code == 422
    assert "1200 bytes" in answer["detail"]
    async with RawUpload(server.ws_url, filename="big.bin") as raw:
        await raw.write(b"x" * 10)
        body = {"filename": "x.zip", "members": members_of([(raw.resource_id, "big.bin")])}
        code, created = post_bundle(server, body)
        assert code == 201, created
        async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
            await raw.write(b"x" * 5000)
            final = await watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.FAILED
    assert final.error is not None
    assert final.error.code == "bundle_too_large"


async def test_creating_needs_read_access_to_every_member_and_reading_needs_the_bundles(
    start_server: ServerFactory,
) -> None:
    secret = "livefile-test-secret-of-32-bytes!"
    server = start_server(env={"LIVEFILE_JWT_SECRET": secret})

    def token(scope: str, resource: str | None = None) -> str:
        now = int(time.time())
        claims = {"aud": "livefile", "iat": now, "exp": now + 600, "scope": scope}
        if resource is not None:
            claims["resource"] = resource
        return jwt.encode(claims, secret, algorithm="HS256")

    uploader = token("upload")
    a = id_of(await upload(server.ws_url, b"A", filename="a", token=uploader))
    b = id_of(await upload(server.ws_url, b"B", filename="b", token=uploader))
    body = {"filename": "x.zip", "members": members_of([(a, "a"), (b, "b")])}
    # Read access to A only: refused, and the same for a member that does not exist.
    code, answer = post_bundle(server, body, token("upload download", resource=a))
    assert code == 403, answer
    unknown = {"filename": "x.zip", "members": members_of([(a, "a"), ("f" * 32, "z")])}
    assert post_bundle(server, unknown, token("upload download", resource=a))[0] == 403
    # Download scope without upload scope: refused.
    assert post_bundle(server, body, token("download"))[0] == 403
    code, created = post_bundle(server, body, token("upload download"))
    assert code == 201, created
    bundle_id = created["id"]
    # A member's own token does not read the bundle (it holds other members too)...
    url = f"{server.http_url}/resources/{bundle_id}/content"
    assert get_json(f"{url}?token={token('download', resource=a)}")[0] == 403
    # ... the bundle's reference does.
    bundle_token = created["reference"]["uri"].split("token=", 1)[1]
    async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
        await watcher.wait_for_end(WAIT)
    data = curl(f"{url}?token={bundle_token}").stdout
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["a", "b", "MANIFEST.json"]


async def test_a_bundle_made_by_one_worker_is_composed_by_any_other(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    # The front node runs no jobs: a worker makes the bundle, the front and the other worker
    # read its layout from the shared data directory.
    front, workers = cluster(start_server, redis_server, tmp_path / "data")
    files = {"x/one.bin": os.urandom(50_000), "two.txt": b"two\n"}
    ids = await uploaded(front, files)
    body = {"filename": "w.zip", "members": members_of([(r, p) for p, r in ids.items()])}
    code, created = post_bundle(front, body)
    assert code == 201, created
    async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
        final = await watcher.wait_for_end(WAIT)
    assert final.transfer_status is TransferStatus.COMPLETED
    assert len(runs_of(workers, created["id"])) == 1
    wholes = []
    for server in (front, *workers):
        status, headers, whole = http_get(server, f"/resources/{created['id']}/content", {})
        assert status == 200
        assert int(headers["content-length"]) == len(whole) == final.current_size
        wholes.append(whole)
        ranged = {"Range": "bytes=100-199"}
        assert http_get(server, f"/resources/{created['id']}/content", ranged)[2] == whole[100:200]
    assert wholes[0] == wholes[1] == wholes[2]
    assert_zip_holds(wholes[0], files, tmp_path)
