"""Fuzzing the HTTP API against its own OpenAPI description with schemathesis.

Each operation of the live server's ``/openapi.json`` gets a bounded, deterministic set of
requests (explicit examples, then schemathesis' positive and negative cases drawn by a
derandomized Hypothesis), and every response must be no 5xx, have a declared status code and
content type, and match the declared schema and headers. Three runs: a server with access
control off, a server with access control on and an admin token, and the same server without a
token, where every answer (but ``/healthz``) must be a declared 401.

The servers hold real data first, the path parameters are often replaced by ids that exist and
the content route gets real Range and conditional headers, so that the fuzzer reaches the
200/206/304/416 answers and not only 404s; each run asserts which answers it reached.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode, HookContext
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from livefile.client_upload import AsyncUploadClient
from tests.support.server import LivefileProcess

SECRET = "livefile-fuzz-secret-of-32-bytes-or-more"
# Per operation and run: enough to reach every declared answer, small enough that the module
# (three runs over every operation) stays well under a minute on two cores.
MAX_EXAMPLES = 25
REQUEST_TIMEOUT = 10.0
# An open context's event stream never ends by itself: schemathesis reads an event stream until
# the request timeout passes (or enough events came), so reading one costs this much.
OPEN_STREAM_TIMEOUT = 1.0
STREAM_EXAMPLES = 5
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
TEXT = "".join(f"line {number}: {'x' * (number % 7)}\n" for number in range(40)).encode()
BINARY = bytes(range(256)) * 20
OPEN_PATHS = ("/healthz",)
CONTENT = "/resources/{resource_id}/content"
# The answers each run must have seen at least once: proof that the cases reach past the 404s.
REACHES: dict[str, set[int]] = {
    "GET /healthz": {200},
    "GET /resources/{resource_id}": {200, 404},
    "POST /contexts": {201},
    "GET /contexts/{context_id}": {200, 404},
    "DELETE /contexts/{context_id}": {204, 404},
    "GET /contexts/{context_id}/events": {200, 404},
    f"GET {CONTENT}": {200, 206, 304, 404, 416, 422},
    f"HEAD {CONTENT}": {200, 206, 304, 404, 416},
    "GET /resources/{resource_id}/lines": {200, 400, 404, 409, 422},
    "GET /resources/{resource_id}/events": {200, 404},
    "GET /resources/{resource_id}/search": {200, 400, 404, 409, 422},
    "GET /metrics": {200},
    "DELETE /resources/{resource_id}": {204, 404, 410},
    "GET /resources": {200, 400},
    "GET /contexts/{context_id}/resources": {200},
}
ANONYMOUS_REACHES = {label: {200 if label == "GET /healthz" else 401} for label in REACHES}


def mint(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"aud": "livefile", "iat": now, "exp": now + 3600, **claims}, SECRET, algorithm="HS256"
    )


ADMIN = mint(scope="admin")
Operation = APIOperation[Any, Any, Any, Any]
FuzzCase = Case[Operation]


@dataclass(frozen=True)
class Seeded:
    """Ids that exist on a server: the fuzzer's path parameters are often one of these."""

    resource_ids: tuple[str, ...]
    context_ids: tuple[str, ...]
    # Contexts the fuzzer may close (DELETE), so that closing one does not turn the other
    # context routes into 404s for the rest of the run.
    disposable_context_ids: tuple[str, ...]
    # Resources the fuzzer may delete, likewise.
    disposable_resource_ids: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    name: str
    server: LivefileProcess
    seeded: Seeded
    token: str | None = None
    # The only status every operation but /healthz may answer (the anonymous run: 401).
    only_status: int | None = None


def _call(server: LivefileProcess, path: str, token: str | None, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{server.http_url}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _open_context(server: LivefileProcess, token: str | None) -> str:
    context_id: str = _call(server, "/contexts", token, "POST")["contextId"]
    return context_id


def _await_failed(server: LivefileProcess, token: str | None, resource_id: str) -> None:
    deadline = time.monotonic() + 10
    while _call(server, f"/resources/{resource_id}", token)["status"]["transferStatus"] != "FAILED":
        assert time.monotonic() < deadline, f"{resource_id} did not turn FAILED"
        time.sleep(0.05)


async def _seed(server: LivefileProcess, token: str | None) -> Seeded:
    """Finished resources only (COMPLETED or FAILED): ``?follow=true`` of a growing resource
    streams until the upload ends, which would hang the fuzzer's request until its timeout."""
    context_id = _open_context(server, token)
    disposable = tuple(_open_context(server, token) for _ in range(2))
    in_context = AsyncUploadClient(server.ws_url, context_id=context_id, token=token)
    text = await in_context.upload_bytes(
        TEXT, filename="log.txt", mime_type="text/plain", supports_line_access=True
    )
    client = AsyncUploadClient(server.ws_url, token=token)
    binary = await client.upload_bytes(BINARY, filename="data.bin")
    empty = await client.upload_bytes(b"", filename="empty.txt", mime_type="text/plain")
    failed = await client.start(filename="broken.log", mime_type="text/plain")
    await failed.write(b"half a line")
    await failed.abort()
    _await_failed(server, token, failed.resource_id)
    resource_ids = (text.resource_id, binary.resource_id, empty.resource_id, failed.resource_id)
    deletable = [await client.upload_bytes(b"x", filename="x.bin") for _ in range(2)]
    return Seeded(resource_ids, (context_id,), disposable, tuple(r.resource_id for r in deletable))


def _start(data_dir: Path, env: dict[str, str] | None = None) -> LivefileProcess:
    return LivefileProcess(data_dir, env=env).start()


@pytest.fixture(scope="module")
def open_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LivefileProcess, Seeded]]:
    server = _start(tmp_path_factory.mktemp("fuzz-open") / "data")
    try:
        yield server, asyncio.run(_seed(server, None))
    finally:
        server.kill()


@pytest.fixture(scope="module")
def guarded_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LivefileProcess, Seeded]]:
    server = _start(
        tmp_path_factory.mktemp("fuzz-guarded") / "data", {"LIVEFILE_JWT_SECRET": SECRET}
    )
    try:
        yield server, asyncio.run(_seed(server, ADMIN))
    finally:
        server.kill()


@pytest.fixture(scope="module", params=["open", "admin", "anonymous"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "open":
        server, seeded = request.getfixturevalue("open_server")
        return Target("open", server, seeded)
    server, seeded = request.getfixturevalue("guarded_server")
    if request.param == "admin":
        return Target("admin", server, seeded, token=ADMIN)
    return Target("anonymous", server, seeded, only_status=401)


def _config(target: Target) -> schemathesis.Config:
    raw: dict[str, Any] = {
        "request-timeout": REQUEST_TIMEOUT,
        # Random Authorization headers and ?token= values are what the anonymous run is about;
        # in the other runs they would only replace the admin token with garbage.
        "generation": {"with-security-parameters": target.token is None},
    }
    if target.token is not None:
        raw["headers"] = {"Authorization": f"Bearer {target.token}"}
    return schemathesis.Config.from_dict(raw)


def _either(generated: Any, meaningful: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The generated value or, as often as not, one that reaches past the 404s and the ignored
    headers."""
    return st.one_of(st.just(generated), meaningful)


FRAMING_HEADERS = frozenset({"transfer-encoding", "content-length", "connection", "host"})
# Byte ranges around the seeded sizes (0, 11, ~600 and 5120 bytes): 206s and 416s alike.
_POSITIONS = st.integers(min_value=0, max_value=6000)
_RANGES = st.one_of(
    st.builds("bytes={}-{}".format, _POSITIONS, _POSITIONS),
    st.builds("bytes={}-".format, _POSITIONS),
    st.builds("bytes=-{}".format, _POSITIONS),
)
_IF_RANGE = st.sampled_from(['"not-the-etag"', "Thu, 01 Jan 1970 00:00:00 GMT"])
_CONDITIONAL_HEADERS = st.one_of(
    st.fixed_dictionaries({"Range": _RANGES}),
    st.fixed_dictionaries({"Range": _RANGES, "if-range": _IF_RANGE}),
    st.fixed_dictionaries(
        {},
        optional={
            "if-none-match": st.sampled_from(["*", '"not-the-etag"', 'W/"x", *']),
            "if-modified-since": st.sampled_from(
                ["Fri, 01 Jan 2100 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "yesterday"]
            ),
        },
    ),
)


def _register_hooks(schema: OpenApiSchema, seeded: Seeded) -> None:
    def flatmap_path_parameters(
        context: HookContext, path_parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[dict[str, Any] | None]:
        operation = context.operation
        if operation is None or not path_parameters:
            return st.just(path_parameters)
        delete = operation.method.upper() == "DELETE"
        if "resource_id" in path_parameters:
            name = "resource_id"
            ids = seeded.disposable_resource_ids if delete else seeded.resource_ids
        elif "context_id" in path_parameters:
            name = "context_id"
            ids = seeded.disposable_context_ids if delete else seeded.context_ids
        else:
            return st.just(path_parameters)
        return _either(path_parameters[name], st.sampled_from(ids)).map(
            lambda value: {**path_parameters, name: value}
        )

    def flatmap_headers(
        context: HookContext, headers: dict[str, Any] | None
    ) -> st.SearchStrategy[dict[str, Any] | None]:
        if headers:
            # Negative cases add arbitrary headers; one that frames the message (an unknown
            # Transfer-Encoding) makes a request HTTP itself refuses, before livefile sees it.
            headers = {k: v for k, v in headers.items() if k.lower() not in FRAMING_HEADERS}
        operation = context.operation
        if operation is None or operation.path != CONTENT:
            return st.just(headers)
        return _either(
            headers, _CONDITIONAL_HEADERS.map(lambda extra: {**(headers or {}), **extra})
        )

    schema.hooks.register_hook_with_name(flatmap_path_parameters, "flatmap_path_parameters")
    schema.hooks.register_hook_with_name(flatmap_headers, "flatmap_headers")


@pytest.fixture
def api_schema(target: Target) -> OpenApiSchema:
    schema = schemathesis.openapi.from_url(
        f"{target.server.http_url}/openapi.json",
        config=_config(target),
        # Even the anonymous run needs a token to read the description itself.
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=REQUEST_TIMEOUT,
    )
    _register_hooks(schema, target.seeded)
    return schema


def _modes(operation: Operation) -> list[GenerationMode]:
    """Positive cases, and negative ones where a parameter can be wrong: any string is a valid
    id or header, so an operation with string parameters only has no negative cases."""
    typed = any(
        parameter.definition.get("schema", {}).get("type", "string") != "string"
        for parameter in operation.iter_parameters()
    )
    return (
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if typed else [GenerationMode.POSITIVE]
    )


def _explicit_cases(operation: Operation, seeded: Seeded) -> list[FuzzCase]:
    """Cases that surely reach the interesting answers, run before the generated ones."""
    path = operation.path
    text_id, binary_id = seeded.resource_ids[:2]
    variants: list[dict[str, Any]] = []
    delete = operation.method.upper() == "DELETE"
    if "{resource_id}" in path:
        rids = seeded.disposable_resource_ids if delete else seeded.resource_ids
        variants = [{"path_parameters": {"resource_id": rid}} for rid in rids]
    elif path == "/contexts/{context_id}/events":
        variants = [{"path_parameters": {"context_id": seeded.context_ids[0]}}]
    elif "{context_id}" in path:
        ids = seeded.disposable_context_ids if delete else seeded.context_ids
        variants = [{"path_parameters": {"context_id": cid}} for cid in ids]
    if path == CONTENT:
        text = {"resource_id": text_id}
        variants += [
            {"path_parameters": text, "headers": {"Range": "bytes=0-9"}},
            {"path_parameters": text, "headers": {"Range": f"bytes={len(TEXT)}-"}},
            {"path_parameters": text, "headers": {"if-none-match": "*"}},
            {"path_parameters": {"resource_id": binary_id}, "headers": {"Range": "bytes=-100"}},
        ]
    elif path == "/resources/{resource_id}/lines":
        text = {"resource_id": text_id}
        variants += [
            {"path_parameters": text, "query": {"start": 3, "count": 5}},
            {"path_parameters": text, "query": {"start": 1000, "count": 1}},
        ]
    elif path == "/resources/{resource_id}/search":
        variants += [
            {"path_parameters": {"resource_id": rid}, "query": {"q": "line"}}
            for rid in seeded.resource_ids
        ]
        variants.append(
            {"path_parameters": {"resource_id": text_id}, "query": {"q": "x", "start": 1000}}
        )
    # Explicit cases get no generated headers: the configured ones (the admin token) go here.
    configured = dict(operation.schema.config.headers or {})
    return [
        operation.Case(**{**variant, "headers": {**configured, **variant.get("headers", {})}})
        for variant in variants
    ]


def _fuzz(operation: Operation, mode: GenerationMode, target: Target) -> set[int]:
    """Runs the checks over the operation's cases; returns the status codes seen."""
    seen: set[int] = set()
    # The seeded ids are all of finished resources, so ?follow=true never waits for an upload;
    # an open context's event stream does wait (for its next event), cut short after this long.
    streams_forever = operation.path == "/contexts/{context_id}/events"
    timeout = OPEN_STREAM_TIMEOUT if streams_forever else REQUEST_TIMEOUT

    @settings(
        max_examples=STREAM_EXAMPLES if streams_forever else MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: FuzzCase) -> None:
        try:
            response = case.call_and_validate(checks=CHECKS, timeout=timeout)
        except requests.exceptions.ChunkedEncodingError:
            # The content of a FAILED resource is a 409 whose body is cut short on purpose
            # (docs/protocol.md), so that no client takes it for the file: nothing to validate.
            failed_id = target.seeded.resource_ids[-1]
            assert operation.path == CONTENT, operation.label
            assert (case.path_parameters or {}).get("resource_id") == failed_id
            seen.add(409)
            return
        seen.add(response.status_code)
        if target.only_status is not None and operation.path not in OPEN_PATHS:
            assert response.status_code == target.only_status, (
                f"{operation.label} answered {response.status_code} without a token"
            )

    if mode is GenerationMode.POSITIVE:
        for case in _explicit_cases(operation, target.seeded):
            run = example(case=case)(run)
    run()
    return seen


# schemathesis.pytest.from_fixture() would load the schema from a fixture too, but its wrapper
# does not run under pytest 9.2 (it rewrites Node._nodeid, which pytest no longer has): each
# operation runs here as a subtest, with its own Hypothesis test per generation mode.
def test_http_api_conforms_to_its_openapi_description(
    api_schema: OpenApiSchema, target: Target, subtests: pytest.Subtests
) -> None:
    operations: list[Operation] = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    seen: dict[str, set[int]] = {}
    for operation in operations:
        for mode in _modes(operation):
            with subtests.test(msg=f"{target.name}: {operation.label} ({mode.value})"):
                seen.setdefault(operation.label, set()).update(_fuzz(operation, mode, target))
    expected = ANONYMOUS_REACHES if target.only_status is not None else REACHES
    missed = {
        label: sorted(statuses - seen.get(label, set()))
        for label, statuses in expected.items()
        if not statuses <= seen.get(label, set())
    }
    assert not missed, f"answers the fuzzer never reached: {missed} (seen: {seen})"
