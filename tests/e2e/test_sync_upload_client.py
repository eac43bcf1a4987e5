"""The blocking upload SDK asks a real server for derived resources as the async one does:
``UploadClient.repack`` and ``UploadClient.image``, followed with the blocking download SDK."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from livefile.api.errors import ResourceNotFoundError
from livefile.api.messages import DerivedReference
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.client_download import DownloadClient
from livefile.client_upload import UploadClient
from tests.e2e.test_images import jpeg_turned_by_exif, library_blurhash
from tests.e2e.test_repack import tar_gz
from tests.support.server import LivefileProcess
from tests.support.wire import get_json

WAIT = 60.0


def followed_to_end(derived: DerivedReference) -> tuple[bytes, ResourceStatus]:
    """Every byte of a derived resource, read to its end, and its final status."""
    with DownloadClient(derived.reference.uri, timeout=WAIT) as watcher:
        data = b"".join(watcher.iter_bytes())
        return data, watcher.wait_for_end(WAIT)


def test_the_sync_client_repacks_an_archive_given_by_reference_or_by_id(
    server: LivefileProcess,
) -> None:
    files = {"a.txt": b"alpha\n", "b/c.txt": b"gamma\n" * 100}
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        result = client.upload_bytes(tar_gz(files), filename="small.tar.gz")
        by_reference = client.repack(result.reference)
        by_id = client.repack(result.resource_id)
    assert by_reference.kind == by_id.kind == "repack"
    assert by_reference.id != by_id.id
    for derived in (by_reference, by_id):
        data, final = followed_to_end(derived)
        assert final.transfer_status is TransferStatus.COMPLETED
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert {name: archive.read(name) for name in archive.namelist()} == files
        info = get_json(f"{server.http_url}/resources/{derived.id}")[1]
        assert (info["kind"], info["sources"]) == ("repack", [result.resource_id])


def test_the_sync_client_converts_an_image_to_a_described_webp(server: LivefileProcess) -> None:
    photo = jpeg_turned_by_exif()  # 60x40 stored, shown 40x60
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        result = client.upload_bytes(photo, filename="photo.jpg", mime_type="image/jpeg")
        derived = client.image(result.reference)
    assert derived.kind == "image"
    data, final = followed_to_end(derived)
    assert final.transfer_status is TransferStatus.COMPLETED
    webp = Image.open(io.BytesIO(data))
    assert (webp.format, webp.size) == ("WEBP", (40, 60))
    metadata = get_json(f"{server.http_url}/resources/{derived.id}")[1]["metadata"]
    assert metadata["mimeType"] == "image/webp"
    assert (metadata["width"], metadata["height"]) == (40, 60)
    assert metadata["blurhash"] == library_blurhash(photo)


def test_an_unknown_resource_raises_and_the_client_stays_usable(server: LivefileProcess) -> None:
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        with pytest.raises(ResourceNotFoundError, match="Unknown resource id"):
            client.image("0" * 32)
        with pytest.raises(ResourceNotFoundError, match="Unknown resource id"):
            client.repack("0" * 32)
        result = client.upload_bytes(tar_gz({"x.txt": b"x\n"}), filename="x.tar.gz")
        assert client.repack(result.resource_id).kind == "repack"


def test_the_sync_uploads_ask_for_derived_resources_as_the_async_ones_do(
    server: LivefileProcess, tmp_path: Path
) -> None:
    files = {"a.txt": b"alpha\n"}
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_turned_by_exif())
    announced: list[DerivedReference] = []
    with UploadClient(server.ws_url, timeout=WAIT) as client:
        upload = client.start(filename="a.tar.gz", mime_type="application/gzip", repack=True)
        with upload:
            (zipped,) = upload.derived  # known with the reference, before any data
            upload.keep_alive()  # adds nothing to the resource
            upload.write(tar_gz(files))
        assert upload.result is not None
        assert upload.result.derived == (zipped,)
        from_file = client.upload_file(photo, image=True, on_derived=announced.append)
        streamed = client.upload_stream(
            iter([tar_gz(files)]), filename="b.tar.gz", repack=True, on_derived=announced.append
        )
    assert [d.kind for d in announced] == ["image", "repack"]
    assert (from_file.derived, streamed.derived) == ((announced[0],), (announced[1],))
    for derived in (zipped, announced[1]):
        data, final = followed_to_end(derived)
        assert final.transfer_status is TransferStatus.COMPLETED
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.read("a.txt") == b"alpha\n"
    webp, final = followed_to_end(announced[0])
    assert final.transfer_status is TransferStatus.COMPLETED
    assert Image.open(io.BytesIO(webp)).size == (40, 60)
