"""Server settings: ``LIVEFILE_*`` environment variables, overridden by ``livefile serve`` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from livefile.impl_server.access import TokenAuthority
from livefile.impl_server.jobs import JobLimits
from livefile.impl_server.repack import RepackLimits
from livefile.impl_server.repack_job import RepackSettings

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
        default=2, ge=1, description="server jobs (repack) running at once per process"
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

    def job_limits(self) -> JobLimits:
        return JobLimits(concurrency=self.job_concurrency, queue=self.job_queue)
