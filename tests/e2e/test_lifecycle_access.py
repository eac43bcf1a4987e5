"""Access control of the lifecycle routes: deleting needs admin scope, or the uploader's own
token while its upload runs; listing everything needs admin scope, a context's listing that
context's access."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.support.lifecycle import call
from tests.support.server import LivefileProcess
from tests.support.wire import finish_upload, open_ws, start_upload, wait_closed

SECRET = "livefile-test-secret-of-32-bytes!"


def mint(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"aud": "livefile", "iat": now, "exp": now + 86400, **claims}, SECRET, algorithm="HS256"
    )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    """A server with access control on (HS256 secret)."""
    env = {"LIVEFILE_JWT_SECRET": SECRET}
    server = LivefileProcess(tmp_path_factory.mktemp("guarded") / "data", env=env).start()
    yield server
    server.kill()


async def test_only_admins_and_the_running_uploads_own_token_may_delete(
    guarded: LivefileProcess,
) -> None:
    server = guarded
    own, other = mint(scope="upload", sub="alice"), mint(scope="upload", sub="bob")
    admin = mint(scope="admin")
    resources = f"{server.http_url}/resources"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload?token={own}") as uploader:
        resource_id = await start_upload(uploader)
        reader = mint(scope="download", resource=resource_id)
        for token in (other, reader):
            status, body = call(f"{resources}/{resource_id}", "DELETE", token)
            assert status == 403
            assert body["detail"].startswith("Forbidden: deleting a resource needs admin scope")
        assert call(f"{resources}/{resource_id}", "DELETE", own)[0] == 204
        code, reason = await wait_closed(uploader)
        assert code == 1008
        assert str(reason).startswith("Resource deleted")

    data = b"finished\n"
    async with open_ws(f"{server.ws_url}/ws/streaming/upload?token={own}") as uploader:
        finished_id = await start_upload(uploader)
        await uploader.send(data)
        assert (await finish_upload(uploader, data))["size"] == len(data)
    assert call(f"{resources}/{finished_id}", "DELETE", own)[0] == 403  # no longer running
    assert call(f"{resources}/{finished_id}", "DELETE", admin)[0] == 204
    assert call(f"{resources}/{'0' * 32}", "DELETE", other)[0] == 403  # the same refusal
    assert call(f"{resources}/{'0' * 32}", "DELETE", admin)[0] == 404


async def test_listing_everything_needs_admin_and_a_context_its_access(
    guarded: LivefileProcess,
) -> None:
    server = guarded
    admin = mint(scope="admin")
    context_id = call(f"{server.http_url}/contexts", "POST", admin)[1]["contextId"]
    bound, elsewhere = mint(scope="upload", context=context_id), mint(scope="upload", context="c")
    resources, of_context = f"{server.http_url}/resources", f"{server.http_url}/contexts"
    assert call(resources, token=bound)[0] == 403
    assert call(resources, token=mint(scope="download"))[0] == 403
    assert call(resources, token=admin)[0] == 200
    for url in (f"{of_context}/{context_id}/resources", f"{resources}?context={context_id}"):
        assert call(url, token=bound)[0] == 200
        assert call(url, token=elsewhere)[0] == 403
