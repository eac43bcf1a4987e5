"""Access control on the tus endpoint: every tus request — creation, PATCH, HEAD, DELETE — needs
a token with upload scope, and a token bound to an upload context reaches only that context's
uploads. OPTIONS, which says only what the server speaks, needs a valid token of any scope (as
every request but /healthz does)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.e2e.test_access_control import SECRET_ENV, mint
from tests.support.server import LivefileProcess

TUS = {"Tus-Resumable": "1.0.0"}
ADMIN = mint(scope="admin")
UPLOAD = mint(scope="upload")
DOWNLOAD = mint(scope="download")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    server = LivefileProcess(tmp_path_factory.mktemp("tus-guarded") / "data", env=SECRET_ENV)
    yield server.start()
    server.kill()


def create(server: LivefileProcess, token: str | None, query: str = "") -> requests.Response:
    headers = {**TUS, "Upload-Length": "10", **(bearer(token) if token else {})}
    return requests.post(f"{server.http_url}/files/{query}", headers=headers)


def requests_on(url: str, token: str | None) -> dict[str, int]:
    """The status of HEAD, PATCH and DELETE on ``url`` with ``token``."""
    auth = bearer(token) if token else {}
    patch_headers = {
        **TUS,
        **auth,
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }
    return {
        "HEAD": requests.head(url, headers={**TUS, **auth}).status_code,
        "PATCH": requests.patch(url, data=b"12345", headers=patch_headers).status_code,
        "DELETE": requests.delete(url, headers={**TUS, **auth}).status_code,
    }


def test_creation_needs_upload_scope(guarded: LivefileProcess) -> None:
    assert create(guarded, None).status_code == 401
    assert create(guarded, DOWNLOAD).status_code == 403
    created = create(guarded, UPLOAD)
    assert created.status_code == 201
    # The reference handed out carries its own download token.
    assert "?token=" in created.headers["X-Livefile-Reference"]


def test_head_patch_and_delete_need_upload_scope_too(guarded: LivefileProcess) -> None:
    url = create(guarded, UPLOAD).headers["Location"]
    assert requests_on(url, None) == {"HEAD": 401, "PATCH": 401, "DELETE": 401}
    assert requests_on(url, DOWNLOAD) == {"HEAD": 403, "PATCH": 403, "DELETE": 403}
    assert requests_on(url, UPLOAD) == {"HEAD": 200, "PATCH": 204, "DELETE": 204}


def test_a_context_bound_token_reaches_only_its_context(guarded: LivefileProcess) -> None:
    contexts = [
        requests.post(f"{guarded.http_url}/contexts", headers=bearer(ADMIN)).json()["contextId"]
        for _ in range(2)
    ]
    ours, theirs = (mint(scope="upload", context=context) for context in contexts)
    created = create(guarded, ours, f"?streamingUploadContextId={contexts[0]}")
    assert created.status_code == 201
    assert create(guarded, ours, f"?streamingUploadContextId={contexts[1]}").status_code == 403
    url = created.headers["Location"]
    info = requests.get(
        f"{guarded.http_url}/resources/{created.headers['X-Livefile-Resource-Id']}",
        headers=bearer(ADMIN),
    ).json()
    assert info["uploadContextId"] == contexts[0]
    assert requests_on(url, theirs) == {"HEAD": 403, "PATCH": 403, "DELETE": 403}
    assert requests_on(url, ours) == {"HEAD": 200, "PATCH": 204, "DELETE": 204}


def test_options_needs_a_valid_token_of_any_scope(guarded: LivefileProcess) -> None:
    assert requests.options(f"{guarded.http_url}/files/").status_code == 401
    answer = requests.options(f"{guarded.http_url}/files/", headers=bearer(DOWNLOAD))
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0"
