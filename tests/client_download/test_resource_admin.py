"""The download SDK's ``list_resources`` and ``delete_resource`` (and their async twins)
against a real server: a context's resources newest first across pages, a deletion, and a
second deletion told it is gone."""

from __future__ import annotations

import pytest

from livefile.api import ResourceNotFoundError, TransferStatus
from livefile.client_download import (
    adelete_resource,
    alist_resources,
    delete_resource,
    list_resources,
)
from livefile.client_upload import AsyncUploadClient
from tests.support.lifecycle import call
from tests.support.server import LivefileProcess


async def test_the_sdk_lists_a_contexts_resources_and_deletes_one(
    server: LivefileProcess,
) -> None:
    context_id = call(f"{server.http_url}/contexts", "POST")[1]["contextId"]
    client = AsyncUploadClient(server.ws_url, context_id=context_id)
    ids = [(await client.upload_bytes(b"x" * n, filename=f"{n}.bin")).resource_id for n in range(3)]
    listed = [r.id async for r in alist_resources(server.ws_url, context=context_id, page_size=2)]
    assert listed == ids[::-1]
    completed = list_resources(
        server.http_url, context=context_id, statuses=[TransferStatus.COMPLETED]
    )
    assert [r.id for r in completed] == ids[::-1]

    await adelete_resource(ids[1], server=server.ws_url)
    assert [r.id for r in list_resources(server.ws_url, context=context_id)] == [ids[2], ids[0]]
    with pytest.raises(ResourceNotFoundError, match="Resource deleted"):
        delete_resource(f"{server.ws_url}/ws/streaming/download/{ids[1]}")
