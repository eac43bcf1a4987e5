"""The transfer producer: a file the server fetches from a URL into a live resource, readable
while it arrives (Open Workshop Storage's ``/transfer/start``, without its silent failures).

Stages: ``waiting`` (for a job slot) → ``connecting`` (resolving, connecting, redirects) →
``downloading`` (``percent`` from the ``Content-Length``, when the server sent one) →
COMPLETED. Every failure ends FAILED with an ``error.code`` and keeps the bytes received:
``unreachable``, ``address_refused``, ``scheme_refused``, ``bad_url``, ``tls_error``,
``http_status``, ``too_many_redirects``, ``bad_redirect``, ``quota_exceeded``,
``longer_than_declared``, ``shorter_than_declared``, ``connection_lost``, ``stalled``,
``protocol_error``, ``storage_failed``, ``time_limit``, ``interrupted`` (shutdown),
``internal_error``.

The job's spec holds the URL only (``params["url"]``): a re-run on another worker fetches it
again from the start, with the settings it was given at registration.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from livefile.api.errors import ServerError
from livefile.api.interfaces import ResourceWriter
from livefile.api.model import ResourceError, ResourceKind, ResourceMetadata
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.jobs import JobSpec
from livefile.impl_server.manager import ResourceManager
from livefile.impl_server.transfer_guard import AddressPolicy, IPNetwork, TransferError
from livefile.impl_server.transfer_http import FetchLimits, open_url

logger = logging.getLogger(__name__)

STAGE_CONNECTING = "connecting"
STAGE_DOWNLOADING = "downloading"
FALLBACK_FILENAME = "download.bin"
GiB = 1024**3


@dataclass(frozen=True)
class TransferSettings:
    allowed_networks: tuple[IPNetwork, ...] = ()  # allowed although not public (SSRF guard)
    fetch: FetchLimits = field(default_factory=FetchLimits)
    max_size: int = 4 * GiB  # bytes one transfer may hold (or the resource quota if smaller)
    seconds: float = 3600.0  # wall-clock limit per transfer, from its job's start


def filename_of(url: str) -> str:
    """The name a transfer gets when none is given: the URL path's last segment, decoded, if
    it is a valid file name; ``download.bin`` otherwise."""
    name = posixpath.basename(unquote(urlsplit(url).path))
    try:
        return ResourceMetadata(filename=name, mime_type="a/b").filename
    except ValueError:
        return FALLBACK_FILENAME


class TransferJob:
    """Fetches ``url`` into ``writer``."""

    def __init__(self, url: str, writer: ResourceWriter, settings: TransferSettings) -> None:
        self._url = url
        self._writer = writer
        self._settings = settings
        self._policy = AddressPolicy(settings.allowed_networks)

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self._settings.seconds):
                await self._fetch()
        except TimeoutError:
            await self._fail(
                "time_limit", f"the transfer took longer than {self._settings.seconds:g} s"
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._fail("interrupted", "the server stopped the transfer"))
            raise
        except TransferError as exc:
            await self._fail(exc.code, exc.message)
        except ServerError as exc:  # storing failed (a full disk): the writer says so
            await self._fail("storage_failed", str(exc))
        except Exception as exc:
            logger.exception("transfer into %s failed", self._writer.resource_id)
            await self._fail("internal_error", str(exc)[:200])

    async def _fetch(self) -> None:
        self._writer.progress(STAGE_CONNECTING)
        response = await open_url(self._url, self._policy, self._settings.fetch)
        try:
            limit = self._settings.max_size
            expected = response.content_length
            if expected is not None and expected > limit:
                raise TransferError(
                    "quota_exceeded",
                    f"the Content-Length {expected} exceeds the {limit} bytes a transfer may hold",
                )
            self._writer.progress(STAGE_DOWNLOADING, 0 if expected else None)
            received = 0
            async for piece in response.body():
                if received + len(piece) > limit:
                    await self._writer.append(piece[: limit - received])
                    raise TransferError(
                        "quota_exceeded",
                        f"the body exceeds the {limit} bytes a transfer may hold",
                    )
                received += len(piece)
                await self._writer.append(piece)
                if expected:
                    # 100 only once it is complete: the end is checked after the last byte.
                    self._writer.progress(STAGE_DOWNLOADING, min(99.9, 100 * received / expected))
        finally:
            response.close()
        if expected is not None:
            self._writer.progress(STAGE_DOWNLOADING, 100)
        await self._writer.complete()

    async def _fail(self, code: str, message: str) -> None:
        await self._writer.fail(ResourceError(code=code, message=message[:1000]))


class TransferHandler:
    """The ``JobHandler`` of ``ResourceKind.TRANSFER``: ``spec.params["url"]`` is fetched."""

    def __init__(self, manager: ResourceManager, settings: TransferSettings) -> None:
        quota = manager.quotas.max_resource_size
        if quota is not None and quota < settings.max_size:
            settings = TransferSettings(
                settings.allowed_networks, settings.fetch, quota, settings.seconds
            )
        self._settings = settings

    async def run(self, spec: JobSpec, writer: ResourceWriter) -> None:
        await TransferJob(str(spec.params["url"]), writer, self._settings).run()


class DerivationUnavailableError(Exception):
    """A derivation was asked for that this server does not produce."""


@dataclass(frozen=True)
class StartedTransfer:
    resource_id: str
    derived: list[tuple[str, ResourceKind]]  # started on it at once (repack, image)


async def start_transfer(
    derivations: Derivations,
    url: str,
    metadata: ResourceMetadata,
    *,
    repack: bool = False,
    image: bool = False,
    context_id: str | None = None,
) -> StartedTransfer:
    """Create the transfer's resource and queue its job, then the derivations asked for, which
    read the transfer while it arrives. Raises ``JobRefusedError`` when the queue is full and
    ``DerivationUnavailableError`` (before anything starts) for a derivation not on offer."""
    if image and not derivations.handles(ResourceKind.IMAGE):
        raise DerivationUnavailableError("this server does not convert images (no image producer)")
    transfer_id = await derivations.start(
        ResourceKind.TRANSFER, metadata, params={"url": url}, context_id=context_id
    )
    derived: list[tuple[str, ResourceKind]] = []
    if repack:
        derived.append((await derivations.start_repack(transfer_id), ResourceKind.REPACK))
    if image:
        derived.append((await derivations.start_image(transfer_id), ResourceKind.IMAGE))
    return StartedTransfer(transfer_id, derived)
