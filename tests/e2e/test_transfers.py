"""Remote transfers: a real server fetches from a scripted origin on loopback (allowed through
``--transfer-allowed-networks``) into a live resource, read by real clients while it arrives;
each way a remote server can fail ends FAILED with its ``error.code`` and the bytes received."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from livefile.api.errors import ServerError
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.api.transfers import TransferStarted
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient, UploadClient
from tests.e2e.test_bundles import post_bundle
from tests.support.certificates import LocalAuthority, make_authority
from tests.support.origin import LAST_CHUNK, Origin, chunk, head, redirecting, serving
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0
QUOTA = 256 * 1024
MAX_REDIRECTS = 3


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> LocalAuthority:
    """A CA the ``allowing`` server trusts, and its certificate for ``localhost`` only."""
    return make_authority(tmp_path_factory.mktemp("tls"), ["localhost"])


@pytest.fixture(scope="module")
def allowing(
    tmp_path_factory: pytest.TempPathFactory, authority: LocalAuthority
) -> Iterator[LivefileProcess]:
    """A server whose transfers may reach 127.0.0.1 and ::1 (and nothing else of the loopback
    network), trusting the test CA."""
    server = LivefileProcess(
        tmp_path_factory.mktemp("transfers") / "data",
        "--transfer-allowed-networks", "127.0.0.1/32,::1/128",
        "--transfer-max-size", str(QUOTA),
        "--transfer-max-redirects", str(MAX_REDIRECTS),
        # A proxy that does not exist: transfers never go through one (it would connect where
        # the guard did not look), so every test here passes only if these are ignored.
        env={
            "SSL_CERT_FILE": str(authority.ca_file),
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    ).start()  # fmt: skip
    yield server
    server.kill()


async def fetch(server: LivefileProcess, url: str, **options: Any) -> TransferStarted:
    async with AsyncUploadClient(server.ws_url, timeout=WAIT) as client:
        return await client.fetch(url, **options)


async def outcome(started: TransferStarted) -> tuple[bytes, ResourceStatus]:
    """The transfer's end and every byte it kept."""
    async with AsyncDownloadClient(started.reference.uri, timeout=WAIT) as watcher:
        status = await watcher.wait_for_end(WAIT)
        return await watcher.read(0, status.current_size), status


def assert_failed(status: ResourceStatus, code: str) -> None:
    assert status.transfer_status is TransferStatus.FAILED, status
    assert status.error is not None
    assert status.error.code == code, status.error


async def test_a_slow_source_is_readable_while_it_arrives(allowing: LivefileProcess) -> None:
    data = os.urandom(100_000)
    half = len(data) // 2
    release = asyncio.Event()

    async def slow(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=len(data)) + data[:half])
        await writer.drain()
        await release.wait()
        writer.write(data[half:])

    async with Origin() as origin:
        origin.routes["/slow.bin"] = slow
        started = await fetch(allowing, origin.url("/slow.bin"))
        assert started.kind == "transfer"
        seen: list[ResourceStatus] = []
        async with AsyncDownloadClient(started.reference.uri, timeout=WAIT) as watcher:
            watcher.add_status_listener(seen.append)
            middle = await watcher.wait_for_status(lambda s: s.current_size >= half)
            # The first half is readable before the origin has sent the rest.
            assert middle.transfer_status is TransferStatus.IN_PROGRESS
            assert middle.stage == "downloading"
            assert middle.percent == pytest.approx(50.0, abs=0.1)
            assert await watcher.read(10, half) == data[10:half]
            release.set()
            received = b"".join([piece async for piece in watcher.iter_bytes()])
            final = watcher.status
    assert received == data
    assert final.transfer_status is TransferStatus.COMPLETED
    revisions = [s.revision or 0 for s in seen]
    assert revisions == sorted(revisions)
    percents = [s.percent for s in seen if s.stage == "downloading" and s.percent is not None]
    assert percents == sorted(percents)
    assert all(s.current_size == len(data) for s in seen if s.percent == 100)
    code, info = get_json(f"{allowing.http_url}/resources/{started.id}")
    assert code == 200
    assert info["kind"] == "transfer"
    assert info["metadata"]["filename"] == "slow.bin"


async def test_a_chunked_body_arrives_whole_without_a_percent(allowing: LivefileProcess) -> None:
    pieces = [os.urandom(size) for size in (1, 5000, 17, 60_000)]

    async def chunked(writer: asyncio.StreamWriter) -> None:
        writer.write(head(transfer_encoding="chunked"))
        for piece in pieces:
            writer.write(chunk(piece))
            await writer.drain()
        writer.write(LAST_CHUNK)

    seen: list[ResourceStatus] = []
    async with Origin() as origin:
        origin.routes["/chunked"] = chunked
        started = await fetch(allowing, origin.url("/chunked"))
        async with AsyncDownloadClient(started.reference.uri, timeout=WAIT) as watcher:
            seen.append(watcher.status)
            watcher.add_status_listener(seen.append)
            data = b"".join([piece async for piece in watcher.iter_bytes()])
    assert data == b"".join(pieces)
    assert seen[-1].transfer_status is TransferStatus.COMPLETED
    assert all(status.percent is None for status in seen)  # no length, no percent


async def test_a_body_ended_by_the_close_of_the_connection_is_complete(
    allowing: LivefileProcess,
) -> None:
    body = os.urandom(40_000)

    async def http_1_0(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body)

    async with Origin() as origin:
        origin.routes["/old.bin"] = http_1_0
        data, status = await outcome(await fetch(allowing, origin.url("/old.bin")))
    assert status.transfer_status is TransferStatus.COMPLETED
    assert data == body


async def test_a_connection_dropped_mid_way_fails_keeping_what_arrived(
    allowing: LivefileProcess,
) -> None:
    sent = os.urandom(30_000)

    async def dropped(writer: asyncio.StreamWriter) -> None:
        writer.write(head(transfer_encoding="chunked") + chunk(sent))
        await writer.drain()  # then the connection closes without the last chunk

    async with Origin() as origin:
        origin.routes["/dropped"] = dropped
        data, status = await outcome(await fetch(allowing, origin.url("/dropped")))
    assert_failed(status, "connection_lost")
    assert data == sent


async def test_a_body_shorter_than_its_content_length_fails(allowing: LivefileProcess) -> None:
    sent = os.urandom(6000)

    async def short(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=10_000) + sent)

    async with Origin() as origin:
        origin.routes["/short"] = short
        data, status = await outcome(await fetch(allowing, origin.url("/short")))
    assert_failed(status, "shorter_than_declared")
    assert data == sent


async def test_a_body_longer_than_its_content_length_fails(allowing: LivefileProcess) -> None:
    declared = os.urandom(5000)

    async def long(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=len(declared)) + declared + os.urandom(3000))

    async with Origin() as origin:
        origin.routes["/long"] = long
        data, status = await outcome(await fetch(allowing, origin.url("/long")))
    assert_failed(status, "longer_than_declared")
    assert data == declared  # what the server declared is kept, not what came beyond


async def test_a_non_2xx_answer_fails_with_its_status(allowing: LivefileProcess) -> None:
    async with Origin() as origin:  # no route: 404
        data, status = await outcome(await fetch(allowing, origin.url("/missing.bin")))
    assert_failed(status, "http_status")
    assert status.error is not None
    assert "404" in status.error.message
    assert data == b""


async def test_redirects_are_followed_hop_by_hop(allowing: LivefileProcess) -> None:
    body = os.urandom(2000)
    async with Origin() as origin:
        origin.routes["/a"] = redirecting("/b", 301)
        origin.routes["/b"] = redirecting(origin.url("/file.bin"), 307)
        origin.routes["/file.bin"] = serving(body)
        data, status = await outcome(await fetch(allowing, origin.url("/a")))
        assert origin.requests == ["/a", "/b", "/file.bin"]
    assert status.transfer_status is TransferStatus.COMPLETED
    assert data == body


async def test_a_redirect_loop_fails_after_the_limit(allowing: LivefileProcess) -> None:
    async with Origin() as origin:
        origin.routes["/loop"] = redirecting("/loop")
        data, status = await outcome(await fetch(allowing, origin.url("/loop")))
        assert origin.requests == ["/loop"] * (MAX_REDIRECTS + 1)
    assert_failed(status, "too_many_redirects")
    assert data == b""


async def test_a_body_beyond_the_quota_fails_at_the_quota(allowing: LivefileProcess) -> None:
    sent = os.urandom(QUOTA + 50_000)

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(head(transfer_encoding="chunked"))
        for start in range(0, len(sent), 10_000):
            writer.write(chunk(sent[start : start + 10_000]))
            await writer.drain()
        writer.write(LAST_CHUNK)

    async with Origin() as origin:
        origin.routes["/big"] = endless
        data, status = await outcome(await fetch(allowing, origin.url("/big")))
    assert_failed(status, "quota_exceeded")
    assert data == sent[:QUOTA]


async def test_a_content_length_beyond_the_quota_fails_before_any_byte(
    allowing: LivefileProcess,
) -> None:
    async def declared_big(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=QUOTA + 1) + b"x" * 1000)

    async with Origin() as origin:
        origin.routes["/declared-big"] = declared_big
        data, status = await outcome(await fetch(allowing, origin.url("/declared-big")))
    assert_failed(status, "quota_exceeded")
    assert data == b""


async def test_an_unreachable_port_fails_unreachable(allowing: LivefileProcess) -> None:
    async with Origin() as origin:
        url = origin.url("/gone")
    # The origin is closed: nothing listens on its port any more.
    _, status = await outcome(await fetch(allowing, url))
    assert_failed(status, "unreachable")


async def test_loopback_is_refused_without_the_allow_list(server: LivefileProcess) -> None:
    async with Origin() as origin:
        origin.routes["/secret"] = serving(b"internal")
        for url in (origin.url("/secret"), f"http://localhost:{origin.port}/secret"):
            data, status = await outcome(await fetch(server, url))
            assert_failed(status, "address_refused")
            assert data == b""
        assert origin.requests == []  # never connected to


async def test_a_redirect_to_an_address_not_allowed_is_refused(
    allowing: LivefileProcess,
) -> None:
    # Only 127.0.0.1 is allowed: 127.0.0.2, also loopback, is not.
    async with Origin() as origin, Origin("127.0.0.2") as inner:
        inner.routes["/secret"] = serving(b"internal")
        origin.routes["/hop"] = redirecting(inner.url("/secret"))
        data, status = await outcome(await fetch(allowing, origin.url("/hop")))
        assert origin.requests == ["/hop"]
        assert inner.requests == []
    assert_failed(status, "address_refused")
    assert data == b""


async def test_schemes_other_than_http_are_refused(allowing: LivefileProcess) -> None:
    with pytest.raises(ServerError, match="400"):
        await fetch(allowing, "ftp://127.0.0.1/file")
    async with Origin() as origin:
        origin.routes["/to-file"] = redirecting("file:///etc/passwd")
        data, status = await outcome(await fetch(allowing, origin.url("/to-file")))
    assert_failed(status, "scheme_refused")
    assert data == b""


async def test_https_verifies_the_certificate_against_the_host_name(
    allowing: LivefileProcess, authority: LocalAuthority
) -> None:
    body = os.urandom(3000)
    async with Origin(tls=authority.server_context()) as origin:
        origin.routes["/secure.bin"] = serving(body)
        data, status = await outcome(
            await fetch(allowing, origin.url("/secure.bin", host="localhost"))
        )
        assert status.transfer_status is TransferStatus.COMPLETED
        assert data == body
        # The same server by its address: its certificate names localhost only.
        data, status = await outcome(await fetch(allowing, origin.url("/secure.bin")))
    assert_failed(status, "tls_error")
    assert status.error is not None
    assert "127.0.0.1" in status.error.message
    assert data == b""


async def test_a_text_file_gets_line_access(allowing: LivefileProcess) -> None:
    text = b"".join(f"line {i}\n".encode() for i in range(500))
    async with Origin() as origin:
        origin.routes["/build.log"] = serving(text, content_type="text/plain")
        started = await fetch(allowing, origin.url("/build.log"))
        async with AsyncDownloadClient(started.reference.uri, timeout=WAIT) as watcher:
            status = await watcher.wait_for_end(WAIT)
            assert status.number_of_lines == 500
            assert await watcher.lines(498, 2) == ["line 498\n", "line 499\n"]
    _, info = get_json(f"{allowing.http_url}/resources/{started.id}")
    assert info["metadata"]["mimeType"] == "text/plain"
    assert info["metadata"]["supportsLineAccess"] is True


async def test_a_transfer_can_be_repacked_while_it_arrives(allowing: LivefileProcess) -> None:
    files = {"README.txt": b"hello\n", "data/random.bin": os.urandom(20_000)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    async with Origin() as origin:
        origin.routes["/project.tar.gz"] = serving(buffer.getvalue())
        started = await fetch(allowing, origin.url("/project.tar.gz"), repack=True)
        (derived,) = started.derived
        assert derived.kind == "repack"
        async with AsyncDownloadClient(derived.reference.uri, timeout=WAIT) as watcher:
            status = await watcher.wait_for_end(WAIT)
            assert status.transfer_status is TransferStatus.COMPLETED, status
            zipped = await watcher.read(0, status.current_size)
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == files


async def test_the_stall_timeout_fails_a_silent_source(start_server: Any) -> None:
    impatient = start_server(
        "--transfer-allowed-networks", "127.0.0.0/8", "--transfer-stall-timeout", "0.5"
    )
    never = asyncio.Event()
    sent = os.urandom(1000)

    async def silent(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=5000) + sent)
        await writer.drain()
        await never.wait()  # until the test ends

    async with Origin() as origin:
        origin.routes["/silent"] = silent
        data, status = await outcome(await fetch(impatient, origin.url("/silent")))
    assert_failed(status, "stalled")
    assert data == sent


def test_the_sync_client_starts_a_transfer_and_the_cli_prints_its_reference(
    allowing: LivefileProcess,
) -> None:
    async def serve_and_run() -> tuple[TransferStarted, subprocess.CompletedProcess[str]]:
        async with Origin() as origin:
            origin.routes["/report.bin"] = serving(b"report")
            started = await asyncio.to_thread(sync_fetch, origin.url("/report.bin"))
            command = [sys.executable, "-m", "livefile.impl_common.cli", "fetch"]
            done = await asyncio.to_thread(
                subprocess.run,
                [*command, origin.url("/report.bin"), "--server", allowing.ws_url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            for transfer in (started, reference_of(done)):
                data, status = await outcome(transfer)
                assert status.transfer_status is TransferStatus.COMPLETED
                assert data == b"report"
            return started, done

    def sync_fetch(url: str) -> TransferStarted:
        with UploadClient(allowing.ws_url) as client:
            return client.fetch(url, filename="renamed.bin")

    def reference_of(done: subprocess.CompletedProcess[str]) -> TransferStarted:
        assert done.returncode == 0, done.stderr
        (line,) = done.stdout.splitlines()
        resource_id = line.rsplit("/", 1)[1]
        return TransferStarted.model_validate(
            {"id": resource_id, "reference": {"uri": line}, "url": ""}
        )

    started, _ = asyncio.run(serve_and_run())
    _, info = get_json(f"{allowing.http_url}/resources/{started.id}")
    assert info["metadata"]["filename"] == "renamed.bin"
    assert json.dumps(info)  # a plain JSON description


def post_transfer(server: LivefileProcess, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.http_url}/transfers",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"url": "file:///etc/passwd"}, 400, "scheme_refused"),
        ({"url": "http://user:secret@127.0.0.1/x"}, 400, "credentials"),
        ({"url": "http:///no-host"}, 400, "no host"),
        ({"url": "http://127.0.0.1/x", "filename": "../etc"}, 422, "path separators"),
        ({"url": "http://127.0.0.1/x", "repack": "yes"}, 422, "boolean"),
        ({"filename": "x.bin"}, 422, "url"),
    ],
)
def test_a_bad_request_is_refused_before_anything_starts(
    allowing: LivefileProcess, body: object, status: int, detail: str
) -> None:
    code, answer = post_transfer(allowing, body)
    assert code == status
    assert detail in json.dumps(answer)


async def test_the_request_asks_for_the_bytes_as_they_are(allowing: LivefileProcess) -> None:
    async with Origin() as origin:
        origin.routes["/plain.bin?x=1"] = serving(b"plain")
        data, _ = await outcome(await fetch(allowing, origin.url("/plain.bin?x=1")))
        (request,) = origin.request_heads
        port = origin.port
    assert data == b"plain"
    lines = request.decode().lower().split("\r\n")
    assert lines[0] == "get /plain.bin?x=1 http/1.1"
    assert "accept-encoding: identity" in lines
    assert "connection: close" in lines
    assert f"host: 127.0.0.1:{port}" in lines


async def test_answers_that_are_not_http_or_redirect_nowhere_fail(
    allowing: LivefileProcess,
) -> None:
    async def garbage(writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async def nowhere(writer: asyncio.StreamWriter) -> None:
        writer.write(head(302, "Found", content_length=0))

    async with Origin() as origin:
        origin.routes["/garbage"] = garbage
        origin.routes["/nowhere"] = nowhere
        _, status = await outcome(await fetch(allowing, origin.url("/garbage")))
        assert_failed(status, "protocol_error")
        _, status = await outcome(await fetch(allowing, origin.url("/nowhere")))
        assert_failed(status, "bad_redirect")


async def test_a_transfer_asked_for_an_image_derives_its_webp(allowing: LivefileProcess) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture, "PNG")
    async with Origin() as origin:
        origin.routes["/red.png"] = serving(picture.getvalue(), content_type="image/png")
        started = await fetch(allowing, origin.url("/red.png"), image=True)
        ((derived),) = started.derived
        assert derived.kind == "image"
        async with AsyncDownloadClient(derived.reference.uri, timeout=WAIT) as watcher:
            webp = b"".join([piece async for piece in watcher.iter_bytes()])
            assert watcher.status.transfer_status is TransferStatus.COMPLETED
    with Image.open(io.BytesIO(webp)) as converted:
        assert (converted.format, converted.size) == ("WEBP", (40, 30))
    info = get_json(f"{allowing.http_url}/resources/{derived.id}")[1]
    assert info["sources"] == [started.id]
    assert (info["metadata"]["width"], info["metadata"]["height"]) == (40, 30)


async def test_a_bundle_member_given_by_url_is_fetched_into_the_zip_while_it_arrives(
    allowing: LivefileProcess,
) -> None:
    local = os.urandom(5000)
    remote = os.urandom(200_000)  # within the module server's transfer quota
    release = asyncio.Event()

    async def slow(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=len(remote)) + remote[:1000])
        await writer.drain()
        await release.wait()
        writer.write(remote[1000:])

    async with AsyncUploadClient(allowing.ws_url, timeout=WAIT) as client:
        uploaded = await client.upload_bytes(local, filename="local.bin")
    async with Origin() as origin:
        origin.routes["/remote.bin"] = slow
        code, created = post_bundle(
            allowing,
            {
                "filename": "both.zip",
                "members": [
                    {"resource": uploaded.resource_id, "path": "a/local.bin"},
                    {"url": origin.url("/remote.bin"), "path": "b/remote.bin"},
                ],
            },
        )
        assert code == 201, created
        async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
            # The finished member is in the ZIP while the remote one is still arriving.
            growing = await watcher.wait_for_status(lambda s: s.current_size > len(local))
            assert growing.transfer_status is TransferStatus.IN_PROGRESS
            release.set()
            data = b"".join([piece async for piece in watcher.iter_bytes()])
            assert watcher.status.transfer_status is TransferStatus.COMPLETED
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("a/local.bin") == local
        assert archive.read("b/remote.bin") == remote
        manifest = json.loads(archive.read("MANIFEST.json"))
    assert [member["path"] for member in manifest["members"]] == ["a/local.bin", "b/remote.bin"]


async def test_a_bundle_whose_url_member_fails_ends_failed_naming_it(
    allowing: LivefileProcess,
) -> None:
    async def dropped(writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_length=10_000) + b"x" * 100)

    async with Origin() as origin:
        origin.routes["/broken.bin"] = dropped
        code, created = post_bundle(
            allowing,
            {"filename": "b.zip", "members": [{"url": origin.url("/broken.bin"), "path": "x"}]},
        )
        assert code == 201, created
        async with AsyncDownloadClient(created["reference"]["uri"], timeout=WAIT) as watcher:
            status = await watcher.wait_for_end(WAIT)
            data = await watcher.read(0, status.current_size)
    assert_failed(status, "member_failed")
    assert status.error is not None
    assert "x" in status.error.message
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # still a valid ZIP
        assert "MANIFEST.json" in archive.namelist()
    code, refused = post_bundle(
        allowing, {"filename": "c.zip", "members": [{"url": "ftp://example.com/x", "path": "x"}]}
    )
    assert code == 400, refused
