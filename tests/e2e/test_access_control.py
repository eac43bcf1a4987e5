"""Access control over real sockets: every route but /healthz wants a token, each defect is
refused with its own reason, and no refusal tells whether a resource exists."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from livefile.api.errors import AuthenticationError, AuthorizationError
from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.conftest import ServerFactory
from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess
from tests.support.wire import open_ws, start_upload, wait_closed

SECRET = "livefile-test-secret-of-32-bytes!"
SECRET_ENV = {"LIVEFILE_JWT_SECRET": SECRET}
UNKNOWN_ID = "0" * 32
PAYLOAD = os.urandom(200_000)


def mint(ttl: float = 86400, **claims: Any) -> str:
    """A token signed with the server's secret. Tokens built while collecting live a day: a
    slow suite must not let them expire before their test runs."""
    now = int(time.time())
    return jwt.encode(
        {"aud": "livefile", "iat": now, "exp": now + int(ttl), **claims}, SECRET, algorithm="HS256"
    )


ADMIN = mint(scope="admin")
UPLOAD = mint(scope="upload")


def http(
    url: str, method: str = "GET", token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def detail(body: bytes) -> str:
    value: str = json.loads(body)["detail"]
    return value


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    """A server with access control on (HS256 secret)."""
    server = LivefileProcess(tmp_path_factory.mktemp("guarded") / "data", env=SECRET_ENV).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stored(guarded: LivefileProcess) -> str:
    """A completed resource on the guarded server; returns its reference."""

    async def put() -> str:
        client = AsyncUploadClient(guarded.ws_url, token=UPLOAD)
        result = await client.upload_bytes(PAYLOAD, filename="a.bin")
        return result.reference

    return asyncio.run(put())


def resource_id_of(reference: str) -> str:
    return reference.split("/ws/streaming/download/")[1].split("?")[0]


def test_healthz_needs_no_token(guarded: LivefileProcess) -> None:
    assert http(f"{guarded.http_url}/healthz")[0] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/resources/{id}"),
        ("GET", "/resources/{id}/content"),
        ("HEAD", "/resources/{id}/content"),
        ("GET", "/resources/{id}/lines"),
        ("GET", "/resources/{id}/events"),
        ("POST", "/contexts"),
        ("GET", "/contexts/{id}"),
        ("DELETE", "/contexts/{id}"),
        ("GET", "/contexts/{id}/events"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),
    ],
)
def test_every_http_route_but_healthz_wants_a_token(
    guarded: LivefileProcess, method: str, path: str
) -> None:
    status, headers, body = http(guarded.http_url + path.format(id=UNKNOWN_ID), method)
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="livefile", error="invalid_token"')
    if method != "HEAD":
        assert detail(body).startswith("Unauthorized: a token is required")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (mint(ttl=-3600, scope="admin"), "Unauthorized: token expired"),
        (mint(nbf=int(time.time()) + 3600, scope="admin"), "Unauthorized: token not yet valid"),
        (
            jwt.encode(
                {"aud": "livefile", "exp": int(time.time()) + 86400, "scope": "admin"},
                "another-secret-of-at-least-32-bytes",
                algorithm="HS256",
            ),
            "Unauthorized: token signature is invalid",
        ),
        (mint(aud="elsewhere", scope="admin"), "Unauthorized: token audience is not 'livefile'"),
        (
            jwt.encode({"aud": "livefile", "scope": "admin"}, SECRET, algorithm="HS256"),
            "Unauthorized: token has no 'exp' claim",
        ),
        (
            jwt.encode(
                {"aud": "livefile", "exp": int(time.time()) + 86400, "scope": "admin"},
                "",
                algorithm="none",
            ),
            "Unauthorized: token algorithm 'none' is not accepted",
        ),
        ("not.a.token", "Unauthorized: malformed token"),
        (mint(scope="read"), "Forbidden: token grants none of the scopes"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-signature",
        "wrong-audience",
        "no-expiry",
        "unsigned",
        "malformed",
        "no-livefile-scope",
    ],
)
async def test_each_token_defect_is_refused_with_its_reason_over_http_and_websocket(
    guarded: LivefileProcess, token: str, reason: str
) -> None:
    status, _, body = http(f"{guarded.http_url}/resources/{UNKNOWN_ID}", token=token)
    assert (status, detail(body)[: len(reason)]) == (403 if "Forbidden" in reason else 401, reason)
    async with open_ws(f"{guarded.ws_url}/ws/streaming/upload?token={token}") as ws:
        code, close_reason = await wait_closed(ws)
    assert code == 1008
    assert close_reason is not None
    assert close_reason.startswith(reason)


def test_a_non_bearer_authorization_header_is_refused(guarded: LivefileProcess) -> None:
    status, _, body = http(
        f"{guarded.http_url}/contexts", "POST", headers={"Authorization": "Basic YTpi"}
    )
    assert (status, detail(body)) == (
        401,
        "Unauthorized: the Authorization header must use the Bearer scheme",
    )


async def test_websocket_upload_without_token_is_closed_1008_unauthorized(
    guarded: LivefileProcess,
) -> None:
    async with open_ws(f"{guarded.ws_url}/ws/streaming/upload") as ws:
        code, reason = await wait_closed(ws)
    assert code == 1008
    assert reason is not None
    assert reason.startswith("Unauthorized: a token is required")


async def test_sdks_raise_authentication_and_authorization_errors(
    guarded: LivefileProcess, stored: str
) -> None:
    with pytest.raises(AuthenticationError, match="token is required"):
        await AsyncUploadClient(guarded.ws_url).upload_bytes(b"x", filename="x.bin")
    wrong = mint(scope="download", resource="f" * 32)
    with pytest.raises(AuthorizationError, match="another resource"):
        async with AsyncDownloadClient(stored.split("?")[0], token=wrong):
            pass


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "unknown"])
async def test_a_download_token_for_another_resource_gets_the_same_403_whether_or_not_it_exists(
    guarded: LivefileProcess, stored: str, exists: bool
) -> None:
    target = resource_id_of(stored) if exists else UNKNOWN_ID
    token = mint(scope="download", resource="f" * 32)
    for path in ("", "/content", "/lines", "/events"):
        status, _, body = http(f"{guarded.http_url}/resources/{target}{path}", token=token)
        assert (status, detail(body)) == (403, "Forbidden: token is for another resource")
    async with open_ws(f"{guarded.ws_url}/ws/streaming/download/{target}?token={token}") as ws:
        assert await wait_closed(ws) == (1008, "Forbidden: token is for another resource")


async def test_wrong_scope_is_refused_for_each_kind_of_access(
    guarded: LivefileProcess, stored: str
) -> None:
    download_token = mint(scope="download", resource=resource_id_of(stored))
    async with open_ws(f"{guarded.ws_url}/ws/streaming/upload?token={download_token}") as ws:
        assert await wait_closed(ws) == (1008, "Forbidden: token scope does not include upload")
    status, _, body = http(f"{guarded.http_url}/resources/{resource_id_of(stored)}", token=UPLOAD)
    assert (status, detail(body)) == (403, "Forbidden: token scope does not include download")
    status, _, body = http(f"{guarded.http_url}/contexts", "POST", token=UPLOAD)
    assert (status, detail(body)) == (403, "Forbidden: token scope does not include admin")


async def test_the_reference_carries_a_download_token_for_that_resource_only(
    guarded: LivefileProcess, stored: str
) -> None:
    assert "?token=" in stored
    async with AsyncDownloadClient(stored) as client:
        assert (
            hashlib.md5(await client.read(0, len(PAYLOAD))).digest()
            == hashlib.md5(PAYLOAD).digest()
        )
    http_url = stored.replace("ws://", "http://").replace("/ws/streaming/download/", "/resources/")
    resource_url, _, query = http_url.partition("?")
    status, _, body = http(f"{resource_url}/content?{query}")
    assert (status, body) == (200, PAYLOAD)
    reference_token = query.removeprefix("token=")
    status, _, _ = http(f"{guarded.http_url}/resources/{UNKNOWN_ID}", token=reference_token)
    assert status == 403
    async with open_ws(f"{guarded.ws_url}/ws/streaming/upload?token={reference_token}") as ws:
        assert (await wait_closed(ws))[0] == 1008


async def test_an_upload_token_bound_to_a_context_uploads_into_it_and_nowhere_else(
    guarded: LivefileProcess,
) -> None:
    status, _, body = http(f"{guarded.http_url}/contexts", "POST", token=ADMIN)
    assert status == 201
    context_id = json.loads(body)["contextId"]
    bound = mint(scope="upload", context=context_id)
    await AsyncUploadClient(guarded.ws_url, token=bound).upload_bytes(b"in", filename="in.txt")
    status, _, body = http(f"{guarded.http_url}/contexts/{context_id}", token=bound)
    assert (status, json.loads(body)["resourceCount"]) == (200, 1)
    other = json.loads(http(f"{guarded.http_url}/contexts", "POST", token=ADMIN)[2])["contextId"]
    with pytest.raises(AuthorizationError, match="another upload context"):
        await AsyncUploadClient(guarded.ws_url, context_id=other, token=bound).upload_bytes(
            b"out", filename="out.txt"
        )
    status, _, body = http(f"{guarded.http_url}/contexts/{other}", token=bound)
    assert (status, detail(body)) == (
        403,
        "Forbidden: token grants no access to this upload context",
    )
    status, _, _ = http(f"{guarded.http_url}/contexts/{context_id}", "DELETE", token=bound)
    assert status == 403


async def test_tokens_in_query_strings_never_reach_the_log(
    guarded: LivefileProcess, stored: str
) -> None:
    token = mint(scope="admin", sub="log-check")
    http(f"{guarded.http_url}/resources/{resource_id_of(stored)}?token={token}")
    async with open_ws(f"{guarded.ws_url}/ws/streaming/download/{UNKNOWN_ID}?token={token}"):
        pass
    assert guarded.wait_for_log(f"/resources/{resource_id_of(stored)}?token=[redacted]")
    assert guarded.wait_for_log(f"/ws/streaming/download/{UNKNOWN_ID}?token=[redacted]")
    log = guarded.log()
    assert token not in log
    assert stored.split("token=")[1] not in log


def test_livefile_token_mints_tokens_the_server_accepts(
    guarded: LivefileProcess, stored: str
) -> None:
    resource_id = resource_id_of(stored)
    env = {**os.environ, **SECRET_ENV}
    command = [sys.executable, "-m", "livefile.impl_common.cli", "token"]
    minted = subprocess.run(
        [*command, "--scope", "download", "--resource", resource_id, "--ttl", "5m"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    status, _, body = http(f"{guarded.http_url}/resources/{resource_id}", token=minted)
    assert (status, json.loads(body)["status"]["currentSize"]) == (200, len(PAYLOAD))
    assert jwt.decode(minted, SECRET, algorithms=["HS256"], audience="livefile")["exp"] <= (
        time.time() + 300
    )
    refused = subprocess.run(
        [*command, "--scope", "upload", "--resource", resource_id],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        "livefile token: --resource needs --scope download",
    )
    keyless = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFILE_JWT")}
    no_key = subprocess.run(
        [*command, "--scope", "admin"], env=keyless, capture_output=True, text=True, check=False
    )
    assert no_key.returncode == 2
    assert "no signing key" in no_key.stderr


def test_serve_refuses_a_secret_that_is_too_short(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livefile.impl_common.cli", "serve", "--data-dir", str(tmp_path)],
        env={**os.environ, "LIVEFILE_JWT_SECRET": "short"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "the JWT secret must be at least 32 bytes long" in result.stderr


async def test_a_server_with_only_a_public_key_verifies_tokens_and_hands_out_plain_references(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    private_key = ed25519.Ed25519PrivateKey.generate()
    public_pem = tmp_path / "public.pem"
    public_pem.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    server = start_server("--jwt-public-key", str(public_pem))
    assert server.wait_for_log("references carry no download token")
    now = int(time.time())
    upload_token = jwt.encode(
        {"aud": "livefile", "exp": now + 60, "scope": "upload"}, private_key, algorithm="EdDSA"
    )
    result = await AsyncUploadClient(server.ws_url, token=upload_token).upload_bytes(
        PAYLOAD, filename="signed.bin"
    )
    assert "token=" not in result.reference
    with pytest.raises(AuthenticationError):
        async with AsyncDownloadClient(result.reference):
            pass
    download_token = jwt.encode(
        {"aud": "livefile", "exp": now + 60, "scope": "download", "resource": result.resource_id},
        private_key,
        algorithm="EdDSA",
    )
    async with AsyncDownloadClient(result.reference, token=download_token) as client:
        assert await client.read(0, len(PAYLOAD)) == PAYLOAD


async def test_a_server_without_keys_needs_no_token(server: LivefileProcess) -> None:
    async with open_ws(f"{server.ws_url}/ws/streaming/upload") as ws:
        assert await start_upload(ws)
    assert http(f"{server.http_url}/openapi.json")[0] == 200


async def test_workers_and_nodes_sharing_the_secret_accept_each_others_references(
    start_server: ServerFactory, redis_server: RedisProcess, tmp_path: Path
) -> None:
    common = ("--redis-url", redis_server.url)
    data_dir = tmp_path / "shared"
    node = start_server(*common, data_dir=data_dir, env=SECRET_ENV)
    workers = start_server(*common, "--workers", "2", data_dir=data_dir, env=SECRET_ENV)
    result = await AsyncUploadClient(node.ws_url, token=UPLOAD).upload_bytes(
        PAYLOAD, filename="shared.bin"
    )
    elsewhere = result.reference.replace(node.ws_url, workers.ws_url)
    for _ in range(4):  # new connections land on either worker
        async with AsyncDownloadClient(elsewhere) as client:
            assert await client.read(0, len(PAYLOAD)) == PAYLOAD
    async with open_ws(f"{workers.ws_url}/ws/streaming/upload") as ws:
        code, _ = await wait_closed(ws)
    assert code == 1008


def test_public_docs_open_the_api_description_and_nothing_else(
    start_server: ServerFactory,
) -> None:
    server = start_server("--public-docs", env=SECRET_ENV)
    for path in ("/docs", "/openapi.json"):
        assert http(server.http_url + path)[0] == 200
    assert http(f"{server.http_url}/resources/{UNKNOWN_ID}")[0] == 401
    assert http(f"{server.http_url}/contexts", "POST")[0] == 401


async def test_cached_answers_for_finished_files_still_check_every_token(
    guarded: LivefileProcess, stored: str
) -> None:
    """Once a finished file's headers are cached, small requests are answered by the HTTP
    protocol itself: each one must still show a token that grants that resource."""
    resource_id = resource_id_of(stored)
    url = f"{guarded.http_url}/resources/{resource_id}/content"
    good = mint(scope="download", resource=resource_id)
    for _ in range(3):  # the first caches, the next ones take the short path
        status, _, body = http(url, token=good, headers={"Range": "bytes=0-99"})
        assert (status, body) == (206, PAYLOAD[:100])
    status, _, body = http(
        url, token=mint(scope="download", resource="f" * 32), headers={"Range": "bytes=0-99"}
    )
    assert (status, detail(body)) == (403, "Forbidden: token is for another resource")
    status, _, body = http(url, headers={"Range": "bytes=0-99"})
    assert status == 401
    expired = mint(ttl=-3600, scope="admin")
    status, _, body = http(f"{url}?token={expired}", headers={"Range": "bytes=0-99"})
    assert (status, detail(body)) == (401, "Unauthorized: token expired")


async def test_a_transfer_needs_upload_scope_and_its_reference_carries_a_token(
    guarded: LivefileProcess,
) -> None:
    url = "http://127.0.0.1:9/internal.bin"  # refused by the SSRF guard: never fetched
    with pytest.raises(AuthorizationError):
        await AsyncUploadClient(guarded.ws_url, token=mint(scope="download")).fetch(url)
    started = await AsyncUploadClient(guarded.ws_url, token=UPLOAD).fetch(url)
    assert "?token=" in started.reference.uri
    async with AsyncDownloadClient(started.reference.uri) as watcher:
        status = await watcher.wait_for_end(30)
    assert status.error is not None
    assert status.error.code == "address_refused"
