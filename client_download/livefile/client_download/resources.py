"""Deleting and listing resources through the server's HTTP routes (``DELETE /resources/{id}``,
``GET /resources``, see docs/protocol.md): blocking calls on the standard library's urllib,
and ``async`` twins that run them in a thread, so the SDK needs no HTTP client of its own."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

from livefile.api.errors import (
    AuthenticationError,
    AuthorizationError,
    LivefileError,
    ResourceNotFoundError,
    ServerError,
)
from livefile.api.model import ResourcePage, ResourceSummary, TransferStatus, is_valid_id
from livefile.impl_common.references import (
    DEFAULT_SERVER,
    http_base_url,
    parse_reference,
    ws_base_url,
)

TIMEOUT = 30.0


def delete_resource(
    resource: str,
    *,
    server: str = DEFAULT_SERVER,
    token: str | None = None,
    timeout: float = TIMEOUT,
) -> None:
    """Delete ``resource`` (a reference, or an id on ``server``): needs an admin token, or the
    token that uploaded it while its upload runs. ``ResourceNotFoundError`` when there is no
    such resource (its message says whether it was deleted already)."""
    base, resource_id = _base_and_id(resource, server)
    _request(f"{base}/resources/{resource_id}", "DELETE", token, timeout)


def list_resources(
    server: str = DEFAULT_SERVER,
    *,
    token: str | None = None,
    context: str | None = None,
    statuses: Iterable[TransferStatus] = (),
    page_size: int = 100,
    timeout: float = TIMEOUT,
) -> Iterator[ResourceSummary]:
    """Every resource (admin token), or every one of ``context`` (its access), newest first,
    in some ``statuses`` only if given, fetched a page at a time."""
    cursor: str | None = None
    while True:
        page = _page(server, token, context, statuses, page_size, cursor, timeout)
        yield from page.resources
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def adelete_resource(
    resource: str,
    *,
    server: str = DEFAULT_SERVER,
    token: str | None = None,
    timeout: float = TIMEOUT,
) -> None:
    """``delete_resource``, awaited."""
    await asyncio.to_thread(delete_resource, resource, server=server, token=token, timeout=timeout)


async def alist_resources(
    server: str = DEFAULT_SERVER,
    *,
    token: str | None = None,
    context: str | None = None,
    statuses: Iterable[TransferStatus] = (),
    page_size: int = 100,
    timeout: float = TIMEOUT,
) -> AsyncIterator[ResourceSummary]:
    """``list_resources``, each page fetched in a thread."""
    statuses = tuple(statuses)
    cursor: str | None = None
    while True:
        page = await asyncio.to_thread(
            _page, server, token, context, statuses, page_size, cursor, timeout
        )
        for summary in page.resources:
            yield summary
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _page(
    server: str,
    token: str | None,
    context: str | None,
    statuses: Iterable[TransferStatus],
    page_size: int,
    cursor: str | None,
    timeout: float,
) -> ResourcePage:
    query: list[tuple[str, str]] = [("limit", str(page_size))]
    query += [("status", TransferStatus(status).value) for status in statuses]
    if context is not None:
        query.append(("context", context))
    if cursor is not None:
        query.append(("cursor", cursor))
    url = f"{http_base_url(ws_base_url(server))}/resources?{urlencode(query)}"
    return ResourcePage.model_validate(_request(url, "GET", token, timeout))


def _base_and_id(resource: str, server: str) -> tuple[str, str]:
    if is_valid_id(resource):
        return http_base_url(ws_base_url(server)), resource
    parsed = parse_reference(resource)
    return parsed.http_base, parsed.resource_id


def _request(url: str, method: str, token: str | None, timeout: float) -> Any:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise _error_of(error.code, error.read()) from None
    except OSError as exc:
        raise LivefileError(f"{method} {url} failed: {exc}") from exc
    return json.loads(body) if body else None


def _error_of(status: int, body: bytes) -> LivefileError:
    try:
        detail = str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        detail = body.decode("utf-8", "replace")[:200]
    if status in (404, 410):
        return ResourceNotFoundError(detail)
    if status == 401:
        return AuthenticationError(detail)
    if status == 403:
        return AuthorizationError(detail)
    return ServerError(f"HTTP {status}: {detail}")
