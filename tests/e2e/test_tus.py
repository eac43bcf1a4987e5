"""tus 1.0 uploads against a real ``livefile serve``: the official Python client (tuspy) and raw
HTTP requests for what a client library does not show (status codes, headers), with watchers
following the upload through livefile's own download SDK and HTTP ``?follow=true``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import crc32c
import pytest
import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.uploader.uploader import Uploader

from livefile.api.model import TransferStatus
from livefile.client_download import AsyncDownloadClient
from livefile.impl_server.tus import WHOLE_MOST
from tests.conftest import ServerFactory
from tests.support.cutting_proxy import CuttingProxy
from tests.support.server import LivefileProcess
from tests.support.wire import plain_status

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {**TUS, "Content-Type": "application/offset+octet-stream"}
DATA = os.urandom(600_000)
WAIT = 30.0


def metadata(**pairs: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items()
    )


def create(server: LivefileProcess, length: int | None, **headers: str) -> requests.Response:
    sizes = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    response = requests.post(f"{server.http_url}/files/", headers={**TUS, **sizes, **headers})
    assert response.status_code == 201, response.text
    return response


def patch(url: str, offset: int, body: bytes, **headers: str) -> requests.Response:
    headers = {**OFFSET_STREAM, "Upload-Offset": str(offset), **headers}
    return requests.patch(url, data=body, headers=headers)


def content(server: LivefileProcess, resource_id: str) -> bytes:
    return requests.get(f"{server.http_url}/resources/{resource_id}/content").content


def info(server: LivefileProcess, resource_id: str) -> dict[str, object]:
    body: dict[str, object] = requests.get(f"{server.http_url}/resources/{resource_id}").json()
    return body


def crc32c_of(data: bytes) -> str:
    return f"{crc32c.crc32c(data):08x}"


def url_of(uploader: Uploader) -> str:
    """The upload URL a tuspy uploader has (tuspy types it as None)."""
    url: object = uploader.url
    assert isinstance(url, str)
    return url


def resource_id_of(upload_url: str) -> str:
    return upload_url.rstrip("/").rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def tus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    server = LivefileProcess(tmp_path_factory.mktemp("tus") / "data").start()
    yield server
    server.kill()


# --- tuspy ------------------------------------------------------------------------------------


def test_tuspy_resumes_after_its_connection_is_cut_mid_patch(tus_server: LivefileProcess) -> None:
    with CuttingProxy(tus_server.port, cut_after=250_000) as proxy:
        client = TusClient(proxy.url("/files/"))
        first = client.uploader(file_stream=_stream(DATA), metadata={"filename": "cut.bin"})
        with pytest.raises((TusCommunicationError, TusUploadFailed, requests.ConnectionError)):
            first.upload()
        assert proxy.cut.is_set()
        # A new uploader for the same URL asks the server's offset (HEAD) and goes on from it.
        resumed = client.uploader(file_stream=_stream(DATA), url=url_of(first))
        assert 0 < resumed.offset < len(DATA)
        resumed.upload()
    resource_id = resource_id_of(url_of(first))
    assert content(tus_server, resource_id) == DATA
    described = info(tus_server, resource_id)
    assert described["checksum"] == crc32c_of(DATA)
    assert described["metadata"] == {
        "filename": "cut.bin",
        "mimeType": "application/octet-stream",
        "supportsLineAccess": False,
    }


def test_tuspy_upload_with_sha1_checksums_per_chunk(tus_server: LivefileProcess) -> None:
    client = TusClient(f"{tus_server.http_url}/files/")
    uploader = client.uploader(
        file_stream=_stream(DATA),
        chunk_size=100_000,
        upload_checksum=True,
        metadata={"filename": "report.txt", "filetype": "text/plain"},
    )
    uploader.upload()
    resource_id = resource_id_of(url_of(uploader))
    assert content(tus_server, resource_id) == DATA
    assert info(tus_server, resource_id)["metadata"] == {
        "filename": "report.txt",
        "mimeType": "text/plain",
        "supportsLineAccess": False,
    }


def tampered_sha1(chunk: bytes) -> hashlib._Hash:
    return hashlib.sha1(chunk + b"tampered")


class TamperingUploader(Uploader):
    """tuspy's uploader sending a checksum of other bytes than it sends."""

    CHECKSUM_ALGORITHM_PAIR = ("sha1", tampered_sha1)  # type: ignore[assignment]


def test_a_wrong_checksum_is_refused_with_460_and_nothing_is_kept(
    tus_server: LivefileProcess,
) -> None:
    client = TusClient(f"{tus_server.http_url}/files/")
    uploader = TamperingUploader(
        file_stream=_stream(DATA), client=client, chunk_size=100_000, upload_checksum=True
    )
    with pytest.raises(TusUploadFailed) as failure:
        uploader.upload()
    assert failure.value.status_code == 460
    head = requests.head(url_of(uploader), headers=TUS)
    assert head.headers["Upload-Offset"] == "0"
    status = info(tus_server, resource_id_of(url_of(uploader)))["status"]
    assert isinstance(status, dict)
    assert status["currentSize"] == 0  # the refused bytes were never published


def test_kill_9_mid_upload_then_resume_to_completed_after_a_restart(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(data_dir=tmp_path / "data")
    client = TusClient(f"{server.http_url}/files/")
    uploader = client.uploader(file_stream=_stream(DATA), chunk_size=200_000)
    uploader.upload_chunk()  # type: ignore[no-untyped-call]
    assert uploader.offset == 200_000
    server.kill()

    restarted = LivefileProcess(tmp_path / "data", port=server.port).start()
    try:
        resource_id = resource_id_of(url_of(uploader))
        status = info(restarted, resource_id)["status"]
        assert isinstance(status, dict)
        assert (status["transferStatus"], status["currentSize"]) == ("IN_PROGRESS", 200_000)
        resumed = client.uploader(file_stream=_stream(DATA), url=url_of(uploader))
        assert resumed.offset == 200_000
        resumed.upload()
        assert content(restarted, resource_id) == DATA
        described = info(restarted, resource_id)
        assert described["checksum"] == crc32c_of(DATA)
        assert isinstance(described["status"], dict)
        assert described["status"]["transferStatus"] == "COMPLETED"
    finally:
        restarted.kill()


def _stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# --- watchers ---------------------------------------------------------------------------------


async def test_a_watcher_follows_a_tus_upload_live_byte_exact(tus_server: LivefileProcess) -> None:
    created = create(tus_server, len(DATA), **{"Upload-Metadata": metadata(filename="live.bin")})
    url = created.headers["Location"]
    reference = created.headers["X-Livefile-Reference"]
    assert created.headers["X-Livefile-Resource-Id"] == resource_id_of(url)
    pieces = [DATA[i : i + 150_000] for i in range(0, len(DATA), 150_000)]
    async with AsyncDownloadClient(reference, timeout=WAIT) as watcher:
        received = bytearray()
        follow = watcher.iter_bytes()
        http_follow = asyncio.create_task(
            asyncio.to_thread(
                lambda: (
                    requests.get(
                        f"{tus_server.http_url}/resources/{resource_id_of(url)}/content",
                        params={"follow": "true"},
                    ).content
                )
            )
        )
        offset = 0
        for piece in pieces:
            answer = await asyncio.to_thread(patch, url, offset, piece)
            assert answer.status_code == 204
            offset += len(piece)
            # Live: the watcher has these bytes before the next PATCH is even sent.
            while len(received) < offset:
                received += await anext(follow)
        assert bytes(received) == DATA
        with pytest.raises(StopAsyncIteration):
            await anext(follow)
        assert watcher.status.transfer_status is TransferStatus.COMPLETED
    assert await http_follow == DATA


async def test_termination_ends_the_resource_failed_for_its_watchers(
    tus_server: LivefileProcess,
) -> None:
    created = create(tus_server, len(DATA))
    url = created.headers["Location"]
    assert (await asyncio.to_thread(patch, url, 0, DATA[:1000])).status_code == 204
    async with AsyncDownloadClient(created.headers["X-Livefile-Reference"]) as watcher:
        deleted = await asyncio.to_thread(requests.delete, url, headers=TUS)
        assert deleted.status_code == 204
        end = await watcher.wait_for_end(WAIT)
    assert end.transfer_status is TransferStatus.FAILED
    assert end.error is not None
    assert end.error.code == "terminated"
    assert end.current_size == 1000
    assert (await asyncio.to_thread(requests.head, url, headers=TUS)).status_code == 410
    assert (await asyncio.to_thread(patch, url, 1000, b"more")).status_code == 410


async def test_an_unfinished_upload_expires_failed(start_server: ServerFactory) -> None:
    server = start_server("--tus-expiry", "2")
    created = create(server, 100)
    url = created.headers["Location"]
    assert "Upload-Expires" in created.headers
    async with AsyncDownloadClient(created.headers["X-Livefile-Reference"]) as watcher:
        end = await watcher.wait_for_end(WAIT)
    assert end.transfer_status is TransferStatus.FAILED
    assert end.error is not None
    assert end.error.code == "expired"
    assert (await asyncio.to_thread(requests.head, url, headers=TUS)).status_code == 410


# --- the protocol's answers -------------------------------------------------------------------


def test_options_lists_version_extensions_and_checksum_algorithms(
    tus_server: LivefileProcess,
) -> None:
    answer = requests.options(f"{tus_server.http_url}/files/")
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0"
    extensions = set(answer.headers["Tus-Extension"].split(","))
    assert {"creation", "creation-with-upload", "creation-defer-length", "termination"} <= (
        extensions
    )
    assert {"checksum", "expiration", "concatenation", "concatenation-unfinished"} <= extensions
    assert answer.headers["Tus-Checksum-Algorithm"].split(",") == [
        "sha1",
        "md5",
        "sha256",
        "crc32c",
    ]


def test_a_wrong_tus_version_is_refused_with_412(tus_server: LivefileProcess) -> None:
    answer = requests.post(
        f"{tus_server.http_url}/files/", headers={"Tus-Resumable": "0.2.2", "Upload-Length": "1"}
    )
    assert answer.status_code == 412
    assert answer.headers["Tus-Version"] == "1.0.0"


def test_a_wrong_offset_is_refused_with_409_and_changes_nothing(
    tus_server: LivefileProcess,
) -> None:
    url = create(tus_server, 10).headers["Location"]
    assert patch(url, 0, b"12345").status_code == 204
    conflict = patch(url, 3, b"45678")
    assert conflict.status_code == 409
    assert requests.head(url, headers=TUS).headers["Upload-Offset"] == "5"


def test_a_patch_without_the_offset_content_type_is_refused_with_415(
    tus_server: LivefileProcess,
) -> None:
    url = create(tus_server, 10).headers["Location"]
    answer = requests.patch(
        url, data=b"12345", headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}
    )
    assert answer.status_code == 415


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("md5", hashlib.md5(DATA[:1000]).digest()),
        ("sha256", hashlib.sha256(DATA[:1000]).digest()),
        ("crc32c", crc32c.crc32c(DATA[:1000]).to_bytes(4, "big")),
    ],
)
def test_each_checksum_algorithm_is_verified(
    tus_server: LivefileProcess, algorithm: str, digest: bytes
) -> None:
    url = create(tus_server, 1000).headers["Location"]
    wrong = base64.b64encode(bytes(len(digest))).decode()
    assert (
        patch(url, 0, DATA[:1000], **{"Upload-Checksum": f"{algorithm} {wrong}"}).status_code == 460
    )
    right = base64.b64encode(digest).decode()
    answer = patch(url, 0, DATA[:1000], **{"Upload-Checksum": f"{algorithm} {right}"})
    assert answer.status_code == 204
    assert content(tus_server, resource_id_of(url)) == DATA[:1000]


def test_an_unknown_checksum_algorithm_is_refused_with_400(tus_server: LivefileProcess) -> None:
    url = create(tus_server, 10).headers["Location"]
    answer = patch(url, 0, b"12345", **{"Upload-Checksum": "whirlpool AAAA"})
    assert answer.status_code == 400


def test_creation_with_upload_and_a_deferred_length(tus_server: LivefileProcess) -> None:
    created = create(tus_server, None, **{"Content-Type": "application/offset+octet-stream"})
    url = created.headers["Location"]
    assert requests.head(url, headers=TUS).headers["Upload-Defer-Length"] == "1"
    with_body = requests.post(
        f"{tus_server.http_url}/files/",
        data=DATA[:5000],
        headers={**OFFSET_STREAM, "Upload-Length": "5000"},
    )
    assert with_body.status_code == 201
    assert with_body.headers["Upload-Offset"] == "5000"
    assert content(tus_server, with_body.headers["X-Livefile-Resource-Id"]) == DATA[:5000]
    # The deferred length is given with the last PATCH.
    assert patch(url, 0, b"abc").status_code == 204
    assert patch(url, 3, b"def", **{"Upload-Length": "6"}).status_code == 204
    head = requests.head(url, headers=TUS)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("6", "6")
    assert content(tus_server, resource_id_of(url)) == b"abcdef"


# A creation whose body is the whole upload, up to WHOLE_MOST bytes, is read first and stored
# in one go; a longer one is appended as it arrives. Both end the same for their client.
@pytest.mark.parametrize("size", [1, WHOLE_MOST, WHOLE_MOST + 1])
def test_a_creation_carrying_the_whole_upload_is_completed_at_its_answer(
    tus_server: LivefileProcess, size: int
) -> None:
    body = DATA[:size]
    created = requests.post(
        f"{tus_server.http_url}/files/",
        data=body,
        headers={
            **OFFSET_STREAM,
            "Upload-Length": str(size),
            "Upload-Metadata": metadata(filename="whole.bin", filetype="image/png"),
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Offset"] == str(size)
    resource_id = created.headers["X-Livefile-Resource-Id"]
    described = info(tus_server, resource_id)
    assert plain_status(described["status"]) == {
        "transferStatus": "COMPLETED",
        "currentSize": size,
        "numberOfLines": None,
    }
    assert described["checksum"] == crc32c_of(body)
    assert described["metadata"] == {
        "filename": "whole.bin",
        "mimeType": "image/png",
        "supportsLineAccess": False,
    }
    assert content(tus_server, resource_id) == body
    head = requests.head(created.headers["Location"], headers=TUS)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == (str(size), str(size))
    late = patch(created.headers["Location"], size, b"more")
    assert late.status_code == 409  # complete: nothing more is taken


def test_an_ietf_creation_carrying_the_whole_upload_is_complete(
    tus_server: LivefileProcess,
) -> None:
    draft = {"Upload-Draft-Interop-Version": "6"}
    created = requests.post(
        f"{tus_server.http_url}/files/",
        data=DATA[:3000],
        headers={**draft, "Upload-Complete": "?1"},
    )
    assert created.status_code == 201
    assert created.headers["Upload-Offset"] == "3000"
    head = requests.head(created.headers["Location"], headers=draft)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Complete"]) == ("3000", "?1")
    assert content(tus_server, created.headers["X-Livefile-Resource-Id"]) == DATA[:3000]


def test_a_whole_creation_with_a_wrong_checksum_is_refused_with_460_and_creates_nothing(
    tus_server: LivefileProcess,
) -> None:
    context_id = requests.post(f"{tus_server.http_url}/contexts").json()["contextId"]
    url = f"{tus_server.http_url}/files/?streamingUploadContextId={context_id}"
    headers = {**OFFSET_STREAM, "Upload-Length": "5000"}
    wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other bytes").digest()).decode()
    refused = requests.post(url, data=DATA[:5000], headers={**headers, "Upload-Checksum": wrong})
    assert refused.status_code == 460
    assert "X-Livefile-Resource-Id" not in refused.headers
    right = "sha1 " + base64.b64encode(hashlib.sha1(DATA[:5000]).digest()).decode()
    taken = requests.post(url, data=DATA[:5000], headers={**headers, "Upload-Checksum": right})
    assert taken.status_code == 201
    listed = requests.get(f"{tus_server.http_url}/contexts/{context_id}/resources").json()
    assert [r["id"] for r in listed["resources"]] == [taken.headers["X-Livefile-Resource-Id"]]


def test_a_body_past_the_upload_length_is_refused(tus_server: LivefileProcess) -> None:
    url = create(tus_server, 4).headers["Location"]
    assert patch(url, 0, b"123456").status_code == 413
    assert requests.head(url, headers=TUS).headers["Upload-Offset"] == "0"
    creation = requests.post(
        f"{tus_server.http_url}/files/",
        data=b"123456",
        headers={**OFFSET_STREAM, "Upload-Length": "4"},
    )
    assert creation.status_code == 413  # and nothing was created
    assert "X-Livefile-Resource-Id" not in creation.headers


def test_a_long_body_of_unknown_size_is_cut_at_the_upload_length(
    tus_server: LivefileProcess,
) -> None:
    """A chunked body (no Content-Length) 8 times the upload's length: the server reads it in
    pieces and takes none that would reach past the end (it once took 2 MiB of this 1 MiB
    upload: the writer's size lags behind the pieces queued for it). The client gets its 413
    while still sending, and the upload stays resumable at the offset its bytes reached."""
    length = 1024 * 1024
    url = create(tus_server, length).headers["Location"]
    chunks = (os.urandom(64 * 1024) for _ in range(8 * length // (64 * 1024)))
    answer = requests.patch(
        url, data=chunks, headers={**OFFSET_STREAM, "Upload-Offset": "0"}, timeout=WAIT
    )
    assert answer.status_code == 413
    offset = int(requests.head(url, headers=TUS).headers["Upload-Offset"])
    assert offset <= length
    # What is stored so far (the upload may still be growing: without partial=true the answer
    # would wait for its end).
    stored = requests.get(
        f"{tus_server.http_url}/resources/{resource_id_of(url)}/content?partial=true"
    )
    assert len(stored.content) == offset


async def test_a_final_upload_is_readable_as_its_parts_arrive_in_order(
    tus_server: LivefileProcess,
) -> None:
    first = create(tus_server, 3000, **{"Upload-Concat": "partial"}).headers["Location"]
    second = create(tus_server, 2000, **{"Upload-Concat": "partial"}).headers["Location"]
    final = create(
        tus_server,
        None,
        **{
            "Upload-Concat": f"final;{first} {second}",
            "Upload-Metadata": metadata(filename="a.bin"),
        },
    )
    assert "Upload-Offset" not in final.headers
    assert patch(final.headers["Location"], 0, b"x").status_code == 403
    async with AsyncDownloadClient(final.headers["X-Livefile-Reference"]) as watcher:
        # The second part arrives first: nothing of it may show before the first part's bytes.
        assert (await asyncio.to_thread(patch, second, 0, DATA[3000:5000])).status_code == 204
        assert (await asyncio.to_thread(patch, first, 0, DATA[:1000])).status_code == 204
        status = await watcher.wait_for_status(lambda s: s.current_size >= 1000, WAIT)
        assert status.current_size == 1000
        assert await watcher.read(0, 1000) == DATA[:1000]
        assert (await asyncio.to_thread(patch, first, 1000, DATA[1000:3000])).status_code == 204
        end = await watcher.wait_for_end(WAIT)
    assert end.transfer_status is TransferStatus.COMPLETED
    assert content(tus_server, final.headers["X-Livefile-Resource-Id"]) == DATA[:5000]
    head = await asyncio.to_thread(requests.head, final.headers["Location"], headers=TUS)
    assert head.headers["Upload-Offset"] == "5000"
    assert head.headers["Upload-Concat"].startswith("final;")


def test_ietf_draft_creation_patch_and_head(tus_server: LivefileProcess) -> None:
    draft = {"Upload-Draft-Interop-Version": "6"}
    created = requests.post(
        f"{tus_server.http_url}/files/",
        data=DATA[:1000],
        headers={**draft, "Upload-Complete": "?0"},
    )
    assert created.status_code == 201
    assert created.headers["Upload-Offset"] == "1000"
    url = created.headers["Location"]
    head = requests.head(url, headers=draft)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Complete"]) == ("1000", "?0")
    conflict = requests.patch(url, data=b"x", headers={**draft, "Upload-Offset": "5"})
    assert conflict.status_code == 409
    assert conflict.headers["Upload-Offset"] == "1000"
    done = requests.patch(
        url,
        data=DATA[1000:2000],
        headers={**draft, "Upload-Offset": "1000", "Upload-Complete": "?1"},
    )
    assert done.status_code == 204
    assert done.headers["Upload-Complete"] == "?1"
    assert content(tus_server, created.headers["X-Livefile-Resource-Id"]) == DATA[:2000]


def test_an_unknown_upload_is_404(tus_server: LivefileProcess) -> None:
    url = f"{tus_server.http_url}/files/{'0' * 32}"
    assert requests.head(url, headers=TUS).status_code == 404
    assert patch(url, 0, b"x").status_code == 404
    assert requests.head(f"{tus_server.http_url}/files/..%2Fetc", headers=TUS).status_code == 404


def test_x_http_method_override_stands_for_patch_and_delete(tus_server: LivefileProcess) -> None:
    url = create(tus_server, 10).headers["Location"]
    headers = {**OFFSET_STREAM, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    answer = requests.post(url, data=b"12345", headers=headers)
    assert answer.status_code == 204
    assert answer.headers["Upload-Offset"] == "5"
    deleted = requests.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status_code == 204
    assert requests.head(url, headers=TUS).status_code == 410


def test_the_resource_size_limit_is_the_tus_max_size(start_server: ServerFactory) -> None:
    server = start_server("--max-resource-size", "1000")
    assert requests.options(f"{server.http_url}/files/").headers["Tus-Max-Size"] == "1000"
    too_large = requests.post(f"{server.http_url}/files/", headers={**TUS, "Upload-Length": "1001"})
    assert too_large.status_code == 413
    deferred = create(server, None).headers["Location"]
    assert patch(deferred, 0, bytes(1001)).status_code == 413


@pytest.mark.parametrize(
    "headers",
    [
        {"Upload-Length": "ten"},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {},
        {"Upload-Length": "10", "Upload-Metadata": "filename not-base64!"},
        {"Upload-Length": "10", "Upload-Metadata": "filename YQ==,filename Yg=="},
        {"Upload-Length": "10", "Upload-Metadata": f"filename {base64.b64encode(b'a/b').decode()}"},
        {"Upload-Concat": "final;"},
        {"Upload-Concat": "sideways"},
    ],
)
def test_a_malformed_creation_is_refused_with_400(
    tus_server: LivefileProcess, headers: dict[str, str]
) -> None:
    answer = requests.post(f"{tus_server.http_url}/files/", headers={**TUS, **headers})
    assert answer.status_code == 400, answer.text
    assert answer.text
