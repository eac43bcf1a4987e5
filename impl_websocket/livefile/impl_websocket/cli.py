"""``livefile serve`` and ``livefile token``: the command lines of the server. The server
itself (uvicorn, FastAPI, redis) is imported only when ``serve`` runs, so that every other
``livefile`` command starts fast."""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def serve(args: argparse.Namespace) -> int:
    from livefile.impl_websocket import preflight
    from livefile.impl_websocket.settings import Settings

    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    origins = preflight.Origins(args.setting_flags, overrides)
    try:
        settings = preflight.load_settings(overrides, origins)
        preflight.check(settings, origins)
    except preflight.StartupProblem as problem:
        for line in str(problem).splitlines():
            print(f"livefile serve: {line}", file=sys.stderr)
        return problem.exit_status
    from livefile.impl_websocket.server import run  # FastAPI and uvicorn: seconds to import

    return run(settings)


class OneLineErrors(argparse.ArgumentParser):
    """``livefile serve``'s own parse errors in one line (argparse prints the whole usage
    first, 20 lines for this command), with the pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the livefile server",
        description="Run the livefile server. Every flag has a LIVEFILE_* environment variable.",
    )
    parser.__class__ = OneLineErrors
    # Numbers are taken as typed and checked by the settings, which say in one line what is
    # allowed, the same for a flag and its environment variable.
    parser.add_argument("--host", help="interface to listen on (LIVEFILE_HOST, 127.0.0.1)")
    parser.add_argument("--port", help="TCP port (LIVEFILE_PORT, 8080)")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (LIVEFILE_DATA_DIR)")
    parser.add_argument(
        "--checkpoint-interval",
        dest="checkpoint_interval",
        help="seconds between checkpoints, 0 = every write (LIVEFILE_CHECKPOINT_INTERVAL, 0.25)",
    )
    parser.add_argument(
        "--max-message-size",
        dest="max_message_size",
        help="largest binary message in bytes (LIVEFILE_MAX_MESSAGE_SIZE, 1 MiB)",
    )
    parser.add_argument(
        "--max-resource-size",
        dest="max_resource_size",
        help="quota: largest resource in bytes (LIVEFILE_MAX_RESOURCE_SIZE)",
    )
    parser.add_argument(
        "--max-resources-per-context",
        dest="max_resources_per_context",
        help="quota: resources per upload context",
    )
    parser.add_argument(
        "--require-upload-context",
        dest="require_upload_context",
        action="store_true",
        default=None,
        help="refuse uploads without ?streamingUploadContextId=",
    )
    for flag, text in (
        ("--start-timeout", "seconds for a new upload to send StartUpload (30)"),
        ("--upload-idle-timeout", "seconds an upload may send nothing before it FAILS"),
        ("--send-timeout", "seconds a send may block before a slow consumer is dropped"),
        ("--max-uploads", "concurrent uploads per process (1000)"),
        ("--max-downloads", "concurrent download connections per process (10000)"),
        (
            "--request-head-timeout",
            "seconds a connection has to send a complete request head, from its accept or its"
            " previous response (LIVEFILE_REQUEST_HEAD_TIMEOUT, 10)",
        ),
        (
            "--max-pending-connections",
            "connections per process still waiting for a request head; beyond, the oldest"
            " is closed (LIVEFILE_MAX_PENDING_CONNECTIONS, 1000)",
        ),
        (
            "--max-connections-per-client",
            "connections per process from one client address; beyond, new ones get 503"
            " (LIVEFILE_MAX_CONNECTIONS_PER_CLIENT, no limit)",
        ),
        (
            "--job-concurrency",
            "server jobs running at once per process (2); 0 with Redis: run none here",
        ),
        ("--job-queue", "jobs waiting beyond those; more are refused with 503 (100)"),
        ("--job-time-limit", "seconds one job may take, waiting for its source included (3600)"),
        ("--repack-max-entries", "entries one archive may hold (10000)"),
        ("--repack-max-unpacked-size", "bytes one archive may unpack to (4 GiB)"),
        ("--repack-max-ratio", "unpacked/archive bytes, checked once 64 MiB are unpacked (200)"),
        ("--repack-compression-level", "Deflate level of compressible entries, 0-9 (6)"),
        (
            "--transfer-allowed-networks",
            "comma-separated CIDR networks transfers may reach although not public, e.g."
            " 127.0.0.0/8,10.1.0.0/16 (LIVEFILE_TRANSFER_ALLOWED_NETWORKS; none)",
        ),
        ("--transfer-max-size", "bytes one transfer may hold (4 GiB, or the quota if smaller)"),
        ("--transfer-max-redirects", "redirects a transfer follows (5)"),
        ("--transfer-connect-timeout", "seconds to connect to a transfer's server (10)"),
        ("--transfer-stall-timeout", "seconds a transfer's server may send nothing (30)"),
        # ZIP bundles
        ("--bundle-max-members", "members one bundle may hold (10000)"),
        ("--bundle-max-size", "bytes one bundle's ZIP may reach (64 GiB)"),
    ):
        parser.add_argument(flag, help=text)
    parser.add_argument(
        "--redis-url",
        dest="redis_url",
        help="share catalog and statuses through Redis (LIVEFILE_REDIS_URL),"
        " e.g. redis://127.0.0.1:6379/0",
    )
    parser.add_argument(
        "--redis-prefix",
        dest="redis_prefix",
        help="prefix of every Redis key (LIVEFILE_REDIS_PREFIX, livefile)",
    )
    parser.add_argument(
        "--workers",
        help="worker processes (LIVEFILE_WORKERS, 1); more than 1 needs Redis",
    )
    parser.add_argument(
        "--lease-seconds",
        dest="lease_seconds",
        help="with Redis: how long a dead uploader's resource may stay"
        " IN_PROGRESS before another process fails it (default 6)",
    )
    parser.add_argument(
        "--terminal-write-patience",
        dest="terminal_write_patience",
        help="with Redis: seconds an upload's end waits for Redis to record it before the"
        " upload is refused and its resource FAILED (LIVEFILE_TERMINAL_WRITE_PATIENCE, 30)",
    )
    parser.add_argument(
        "--durable",
        dest="durable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fsync each upload's bytes, line index, record and catalog entry before it is"
        " acknowledged; --no-durable for scratch data, e.g. on tmpfs (LIVEFILE_DURABLE, on)",
    )
    parser.add_argument(
        "--log-level",
        dest="log_level",
        help="critical, error, warning, info, debug or trace (LIVEFILE_LOG_LEVEL, info)",
    )
    _add_key_arguments(parser)
    parser.add_argument(
        "--public-docs",
        dest="public_docs",
        action="store_true",
        default=None,
        help="with access control on, serve /docs and /openapi.json without a token"
        " (LIVEFILE_PUBLIC_DOCS)",
    )
    parser.add_argument(
        "--reference-token-ttl",
        dest="reference_token_ttl",
        type=duration,
        help="lifetime of the download token in references, e.g. 7d (LIVEFILE_REFERENCE_TOKEN_TTL)",
    )
    _add_image_arguments(parser)
    _add_lifecycle_arguments(parser)
    parser.add_argument(
        "--cors-origins",
        dest="cors_origins",
        metavar="ORIGINS",
        help="comma-separated origins whose pages may read the HTTP API, e.g."
        " https://ci.example.com,http://localhost:3000, or * (LIVEFILE_CORS_ORIGINS, none)",
    )
    # tus uploads (tus_api.py)
    parser.add_argument(
        "--tus-path", dest="tus_path", help="path of the tus endpoint (LIVEFILE_TUS_PATH, /files)"
    )
    parser.add_argument(
        "--tus-expiry",
        dest="tus_expiry",
        type=duration,
        help="how long an unfinished tus upload stays resumable after its last PATCH, e.g. 1d;"
        " then it ends FAILED (expired) (LIVEFILE_TUS_EXPIRY, 1d)",
    )
    parser.add_argument(
        "--upload-resume-grace",
        dest="upload_resume_grace",
        help="seconds an upload whose connection was lost (or whose server restarted) waits"
        " for its client to resume it; 0 = it FAILS at once (LIVEFILE_UPLOAD_RESUME_GRACE, 300)",
    )
    flags = {
        action.dest: action.option_strings[-1]
        for action in parser._actions
        if action.option_strings and action.dest != "help"
    }
    parser.set_defaults(handler=serve, setting_flags=flags)


def _add_lifecycle_arguments(parser: argparse.ArgumentParser) -> None:
    """The lifecycle of resources: deletion tombstones, expiry, retention, storage quota."""
    for flag, text in (
        (
            "--tombstone-seconds",
            "seconds a deleted resource answers 410 Gone before 404; 0: 404 at once"
            " (LIVEFILE_TOMBSTONE_SECONDS, 86400)",
        ),
        (
            "--upload-expiry",
            "seconds after its start an unfinished upload ends FAILED (expired); 0: never"
            " (LIVEFILE_UPLOAD_EXPIRY, 86400)",
        ),
        (
            "--retention",
            "seconds after its end a finished resource is deleted; 0: kept (LIVEFILE_RETENTION, 0)",
        ),
        (
            "--max-storage-bytes",
            "bytes the resources may take in the data directory; beyond, new uploads are"
            " refused (LIVEFILE_MAX_STORAGE_BYTES, no limit)",
        ),
        (
            "--sweep-interval",
            "seconds between two sweeps applying expiry, retention and tombstones"
            " (LIVEFILE_SWEEP_INTERVAL, 60)",
        ),
    ):
        parser.add_argument(flag, dest=flag[2:].replace("-", "_"), help=text)


def _add_key_arguments(parser: argparse.ArgumentParser) -> None:
    # The HS256 secret has no flag on purpose: command lines are visible to every local user.
    parser.add_argument(
        "--jwt-public-key",
        dest="jwt_public_key",
        help="PEM file verifying RS256/ES256/EdDSA tokens (LIVEFILE_JWT_PUBLIC_KEY);"
        " an HS256 secret comes only from LIVEFILE_JWT_SECRET",
    )
    parser.add_argument(
        "--jwt-private-key",
        dest="jwt_private_key",
        help="PEM file signing tokens (LIVEFILE_JWT_PRIVATE_KEY)",
    )
    parser.add_argument(
        "--jwt-audience",
        dest="jwt_audience",
        help="token audience (LIVEFILE_JWT_AUDIENCE, livefile)",
    )
    parser.add_argument(
        "--jwt-issuer", dest="jwt_issuer", help="token issuer (LIVEFILE_JWT_ISSUER)"
    )


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h`` or ``7d``."""
    match = DURATION.match(text)
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration like 90s, 15m, 1h, 7d: {text!r}")
    return float(match[1]) * SECONDS_PER_UNIT[match[2]]


def token(args: argparse.Namespace) -> int:
    from livefile.api.model import is_valid_id
    from livefile.impl_server.access import Scope
    from livefile.impl_websocket import preflight

    scopes = {Scope(scope) for scope in args.scope}
    for value, name, scope in (
        (args.resource, "--resource", Scope.DOWNLOAD),
        (args.context, "--context", Scope.UPLOAD),
    ):
        if value is None:
            continue
        if scope not in scopes:
            print(f"livefile token: {name} needs --scope {scope}", file=sys.stderr)
            return 2
        if not is_valid_id(value):
            print(f"livefile token: {name} is not a livefile id: {value!r}", file=sys.stderr)
            return 2
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key.startswith("jwt_") and value is not None
    }
    try:
        settings = preflight.load_settings(overrides, preflight.Origins({}, overrides))
    except preflight.StartupProblem as problem:  # e.g. LIVEFILE_JWT_LEEWAY=abc
        for line in str(problem).splitlines():
            print(f"livefile token: {line}", file=sys.stderr)
        return problem.exit_status
    try:
        authority = settings.token_authority()
    except (ValueError, OSError) as exc:
        print(f"livefile token: cannot use the JWT key: {exc}", file=sys.stderr)
        return 2
    if authority is None or not authority.can_sign:
        print(
            "livefile token: no signing key: set LIVEFILE_JWT_SECRET or LIVEFILE_JWT_PRIVATE_KEY"
            " (or --jwt-private-key)",
            file=sys.stderr,
        )
        return 2
    print(
        authority.mint(
            scopes,
            args.ttl,
            resource_id=args.resource,
            context_id=args.context,
            subject=args.subject,
        )
    )
    return 0


def register_token(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "token",
        help="mint an access token from the configured key",
        description="Print a JWT granting upload, download or admin access, signed with the key"
        " livefile serve verifies (LIVEFILE_JWT_SECRET, or LIVEFILE_JWT_PRIVATE_KEY).",
    )
    parser.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=["upload", "download", "admin"],
        help="what the token grants; repeat for several",
    )
    parser.add_argument("--resource", help="download: only this resource id")
    parser.add_argument("--context", help="upload: only into this upload context")
    parser.add_argument("--subject", help="who the token is for (the sub claim)")
    parser.add_argument(
        "--ttl", type=duration, default=3600.0, help="lifetime: 90s, 15m, 1h (default), 7d"
    )
    _add_key_arguments(parser)
    parser.set_defaults(handler=token)


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Images → WebP + BlurHash (``POST /resources/{id}/image``, ``POST /blurhashes``)."""
    for flag, text in (
        ("--image-quality", "WebP quality, 0-100 (LIVEFILE_IMAGE_QUALITY, 80)"),
        ("--image-method", "WebP method, 0 fast to 6 smallest (LIVEFILE_IMAGE_METHOD, 4)"),
        ("--image-blurhash-x", "BlurHash components across, 1-9 (4)"),
        ("--image-blurhash-y", "BlurHash components down, 1-9 (3)"),
        ("--image-max-size", "bytes of an image file (LIVEFILE_IMAGE_MAX_SIZE, 256 MiB)"),
        ("--image-max-pixels", "width x height of an image (64000000, at most 89478485)"),
        ("--image-max-animation-pixels", "width x height x frames (1000000000)"),
        ("--blurhash-cache-size", "BlurHashes kept in memory per process (4096)"),
        ("--blurhash-cache-ttl", "seconds a BlurHash stays in Redis, 0 = ever (7 days)"),
    ):
        parser.add_argument(flag, help=text)
    parser.add_argument(
        "--image-keep-icc",
        dest="image_keep_icc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the ICC colour profile in the WebP (LIVEFILE_IMAGE_KEEP_ICC, on)",
    )
