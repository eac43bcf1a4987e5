"""The blocking upload SDK asks a real server for derived resources as the async one does:
``UploadClient.repack`` and ``UploadClient.image``, followed with the blocking download SDK."""

from __future__ import annotations

import io
import zipfile

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
