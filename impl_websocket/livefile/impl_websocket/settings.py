"""Server settings: ``LIVEFILE_*`` environment variables, overridden by ``livefile serve`` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from livefile.impl_server.access import TokenAuthority
from livefile.impl_server.bundle_job import BundleSettings
from livefile.impl_server.image_job import ImageSettings
from livefile.impl_server.images import ImageLimits, WebpOptions
from livefile.impl_server.images.convert import PILLOW_PIXEL_LIMIT
from livefile.impl_server.jobs import JobLimits
from livefile.impl_server.lifecycle import Lifecycle
from livefile.impl_server.repack import RepackLimits
from livefile.impl_server.repack_job import RepackSettings
from livefile.impl_server.transfer_guard import parse_networks
from livefile.impl_server.transfer_http import FetchLimits
from livefile.impl_server.transfer_job import TransferSettings
from livefile.impl_websocket.cors import parse_origins

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVEFILE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("livefile-data")
    checkpoint_interval: float = Field(default=0.25, ge=0, description="seconds; 0 = every write")
    max_message_size: int = Field(default=1 * MiB, ge=1024, description="largest binary message")
    max_text_message_size: int = Field(default=64 * 1024, ge=1024)
    max_resource_size: int | None = Field(default=None, ge=0, description="bytes; None = no limit")
    max_resources_per_context: int | None = Field(default=None, ge=0)
    require_upload_context: bool = False
    chunk_reply_size: int = Field(
        default=1 * MiB, ge=4096, description="largest data reply message"
    )
    max_lines_reply_bytes: int = Field(
        default=1 * MiB, ge=1024, description="text in one Lines reply (at least one line)"
    )
    start_timeout: float = Field(
        default=30.0, gt=0, description="seconds for a new upload connection to send StartUpload"
    )
    upload_idle_timeout: float = Field(
        default=600.0, gt=0, description="seconds an upload may send nothing before it FAILS"
    )
    send_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds a send to a client may stay blocked (slow consumer)",
    )
    max_uploads: int = Field(default=1000, ge=1, description="concurrent uploads per process")
    max_downloads: int = Field(default=10000, ge=1, description="concurrent watchers per process")
    redis_url: str | None = Field(
        default=None, description="shared catalog and status bus (several workers or nodes)"
    )
    redis_prefix: str = "livefile"
    lease_seconds: float = Field(
        default=6.0, gt=0, description="an upload's owner must renew its lease within this"
    )
    terminal_write_patience: float = Field(
        default=30.0,
        gt=0,
        description="seconds an upload's end waits for Redis to record it; beyond, the upload"
        " is refused (close 1011) and its resource ends FAILED",
    )
    durable: bool = Field(
        default=True,
        description="fsync bytes, line index, record and catalog before acknowledging an upload"
        " (false: for scratch data, e.g. on tmpfs)",
    )
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 key (32+ bytes): turns access control on"
    )
    jwt_public_key: str | None = Field(
        default=None, description="PEM (text or file) verifying RS256/ES256/EdDSA tokens"
    )
    jwt_private_key: str | None = Field(
        default=None, description="PEM (text or file) signing reference and minted tokens"
    )
    public_docs: bool = Field(
        default=False, description="with access control on, /docs and /openapi.json need no token"
    )
    jwt_audience: str = "livefile"
    jwt_issuer: str | None = None
    jwt_leeway: float = Field(default=10.0, ge=0, description="seconds of clock skew allowed")
    reference_token_ttl: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="seconds the download token in a ReadyForUpload reference stays valid",
    )
    request_head_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a connection has to send a complete request head, from its accept"
        " or the end of the previous response (slow or silent clients are closed)",
    )
    max_pending_connections: int = Field(
        default=1000,
        ge=1,
        description="connections per process still waiting for a request head; beyond, the"
        " oldest of them is closed",
    )
    max_connections_per_client: int | None = Field(
        default=None,
        ge=1,
        description="connections per process from one client address; None = no limit",
    )
    job_concurrency: int = Field(
        default=2,
        ge=0,
        description="server jobs (repack, images, bundles, transfers) running at once per"
        " process; 0 (only with Redis): a front node, whose jobs other workers run",
    )
    job_queue: int = Field(default=100, ge=0, description="jobs waiting beyond those; more: 503")
    job_time_limit: float = Field(
        default=3600.0, gt=0, description="seconds one job may take, waiting for its source too"
    )
    repack_max_entries: int = Field(default=10_000, ge=1, description="entries in one archive")
    repack_max_unpacked_size: int = Field(
        default=4 * 1024**3, ge=0, description="bytes unpacked (or the resource quota if smaller)"
    )
    repack_max_ratio: float = Field(
        default=200.0, gt=1, description="unpacked/packed bytes, once 64 MiB are unpacked"
    )
    repack_compression_level: int = Field(
        default=6, ge=0, le=9, description="Deflate level of compressible entries"
    )
    workers: int = Field(default=1, ge=1)
    log_level: str = "info"
    # Remote transfers (POST /transfers, transfer_job.py).
    transfer_allowed_networks: str = Field(
        default="",
        description="comma-separated CIDR networks transfers may reach although they are not"
        " public (loopback, private, link-local...); empty: public addresses only",
    )
    transfer_max_size: int = Field(
        default=4 * 1024**3, ge=0, description="bytes one transfer may hold (or the quota)"
    )
    transfer_max_redirects: int = Field(default=5, ge=0, le=50, description="redirects followed")
    transfer_connect_timeout: float = Field(
        default=10.0, gt=0, description="seconds to connect to the remote server (TLS included)"
    )
    transfer_stall_timeout: float = Field(
        default=30.0, gt=0, description="seconds the remote server may send nothing"
    )

    @field_validator("transfer_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # raises ValueError naming the bad one
        return value

    # ZIP bundles (POST /bundles)
    bundle_max_members: int = Field(default=10_000, ge=1, description="members in one bundle")
    bundle_max_size: int = Field(
        default=64 * 1024**3, ge=0, description="bytes one bundle's ZIP may reach"
    )
    # Images → WebP + BlurHash (POST /resources/{id}/image, POST /blurhashes)
    image_quality: int = Field(default=80, ge=0, le=100, description="WebP quality (lossy)")
    image_method: int = Field(
        default=4, ge=0, le=6, description="WebP method: 0 fast, 6 smallest output"
    )
    image_keep_icc: bool = Field(
        default=True, description="keep the ICC colour profile (other metadata is dropped)"
    )
    image_blurhash_x: int = Field(default=4, ge=1, le=9, description="BlurHash components across")
    image_blurhash_y: int = Field(default=3, ge=1, le=9, description="BlurHash components down")
    image_max_size: int = Field(default=256 * MiB, ge=1, description="bytes of an image file")
    image_max_pixels: int = Field(
        default=64_000_000,
        ge=1,
        le=PILLOW_PIXEL_LIMIT,
        description="width x height, checked from the header (at most Pillow's own limit)",
    )
    image_max_animation_pixels: int = Field(
        default=1_000_000_000, ge=1, description="width x height x frames of an animation"
    )
    blurhash_cache_size: int = Field(
        default=4096, ge=0, description="BlurHashes kept in memory per process"
    )
    blurhash_cache_ttl: float = Field(
        default=7 * 24 * 3600.0, ge=0, description="seconds a BlurHash stays in Redis; 0 = ever"
    )
    # The lifecycle of resources (issue 17): deletion, expiry, retention, storage quota.
    tombstone_seconds: float = Field(
        default=86400.0,
        ge=0,
        description="seconds a deleted resource answers 410 Gone; then 404 (0: 404 at once)",
    )
    upload_expiry: float = Field(
        default=86400.0,
        ge=0,
        description="seconds after its start an unfinished upload ends FAILED (expired); 0 = never",
    )
    retention: float = Field(
        default=0.0,
        ge=0,
        description="seconds after its end a finished resource is deleted; 0 = kept",
    )
    max_storage_bytes: int | None = Field(
        default=None,
        ge=0,
        description="bytes the resources may take in the data directory; at that, new uploads"
        " are refused; None = no limit",
    )
    sweep_interval: float = Field(
        default=60.0,
        gt=0,
        description="seconds between two sweeps applying expiry, retention and tombstones",
    )

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(
            tombstone_seconds=self.tombstone_seconds,
            upload_expiry=self.upload_expiry or None,
            retention=self.retention or None,
            max_storage_bytes=self.max_storage_bytes,
            sweep_interval=self.sweep_interval,
        )

    # HTTP for browsers (cors.py): pages on these origins may read the HTTP API.
    cors_origins: str = Field(
        default="",
        description="comma-separated origins (scheme://host[:port]) whose pages may read the"
        " HTTP API, or * for every origin; empty = none",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        parse_origins(value)
        return value

    def cors_origin_list(self) -> list[str]:
        return parse_origins(self.cors_origins)

    # tus uploads (tus_api.py)
    tus_path: str = Field(
        default="/files",
        pattern=r"^/[A-Za-z0-9._~/-]*$",
        description="path of the tus endpoint (creation POSTs go to <path>/)",
    )
    tus_expiry: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="seconds an unfinished tus upload stays resumable after its last PATCH;"
        " then it ends FAILED (expired)",
    )
    # Resumable WebSocket uploads (livefile's dialect; docs/protocol.md, "Resuming an upload").
    upload_resume_grace: float = Field(
        default=300.0,
        ge=0,
        description="seconds an upload in livefile's dialect whose connection was lost (or whose"
        " server restarted) waits for its client to resume it before it FAILS (client_lost);"
        " 0 = it FAILS at once",
    )

    def token_authority(self) -> TokenAuthority | None:
        """The configured verifier and signer of tokens; None when access control is off."""
        return TokenAuthority.from_settings(
            secret=self.jwt_secret.get_secret_value() if self.jwt_secret else None,
            public_key=self.jwt_public_key,
            private_key=self.jwt_private_key,
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
            leeway=self.jwt_leeway,
        )

    def repack_settings(self) -> RepackSettings:
        limits = RepackLimits(
            max_entries=self.repack_max_entries,
            max_unpacked_bytes=self.repack_max_unpacked_size,
            max_ratio=self.repack_max_ratio,
            compression_level=self.repack_compression_level,
        )
        return RepackSettings(limits=limits, seconds=self.job_time_limit)

    def transfer_settings(self) -> TransferSettings:
        fetch = FetchLimits(
            connect_timeout=self.transfer_connect_timeout,
            stall_timeout=self.transfer_stall_timeout,
            max_redirects=self.transfer_max_redirects,
        )
        return TransferSettings(
            allowed_networks=parse_networks(self.transfer_allowed_networks),
            fetch=fetch,
            max_size=self.transfer_max_size,
            seconds=self.job_time_limit,
        )

    def bundle_settings(self) -> BundleSettings:
        return BundleSettings(
            max_members=self.bundle_max_members,
            max_bytes=self.bundle_max_size,
            seconds=self.job_time_limit,
        )

    def image_settings(self) -> ImageSettings:
        limits = ImageLimits(
            max_bytes=self.image_max_size,
            max_pixels=self.image_max_pixels,
            max_animation_pixels=self.image_max_animation_pixels,
        )
        webp = WebpOptions(
            quality=self.image_quality,
            method=self.image_method,
            keep_icc=self.image_keep_icc,
            components_x=self.image_blurhash_x,
            components_y=self.image_blurhash_y,
        )
        return ImageSettings(limits=limits, webp=webp, seconds=self.job_time_limit)

    def job_limits(self) -> JobLimits:
        return JobLimits(concurrency=self.job_concurrency, queue=self.job_queue)
