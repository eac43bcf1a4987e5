"""``livefile serve``: the command line of the server. The server itself (uvicorn, FastAPI,
redis) is imported only when the command runs, so that every other ``livefile`` command starts
fast."""

from __future__ import annotations

import argparse


def serve(args: argparse.Namespace) -> int:
    from livefile.impl_websocket.server import run
    from livefile.impl_websocket.settings import Settings

    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    return run(Settings(**overrides))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the livefile server",
        description="Run the livefile server. Every flag has a LIVEFILE_* environment variable.",
    )
    parser.add_argument("--host", help="interface to listen on (LIVEFILE_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (LIVEFILE_PORT, 8080)")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (LIVEFILE_DATA_DIR)")
    parser.add_argument(
        "--checkpoint-interval",
        dest="checkpoint_interval",
        type=float,
        help="seconds between checkpoints, 0 = every write (LIVEFILE_CHECKPOINT_INTERVAL, 0.25)",
    )
    parser.add_argument(
        "--max-message-size",
        dest="max_message_size",
        type=int,
        help="largest binary message in bytes (LIVEFILE_MAX_MESSAGE_SIZE, 1 MiB)",
    )
    parser.add_argument(
        "--max-resource-size",
        dest="max_resource_size",
        type=int,
        help="quota: largest resource in bytes (LIVEFILE_MAX_RESOURCE_SIZE)",
    )
    parser.add_argument(
        "--max-resources-per-context",
        dest="max_resources_per_context",
        type=int,
        help="quota: resources per upload context",
    )
    parser.add_argument(
        "--require-upload-context",
        dest="require_upload_context",
        action="store_true",
        default=None,
        help="refuse uploads without ?streamingUploadContextId=",
    )
    for flag, kind, text in (
        ("--start-timeout", float, "seconds for a new upload to send StartUpload (30)"),
        ("--upload-idle-timeout", float, "seconds an upload may send nothing before it FAILS"),
        ("--send-timeout", float, "seconds a send may block before a slow consumer is dropped"),
        ("--max-uploads", int, "concurrent uploads per process (1000)"),
        ("--max-downloads", int, "concurrent download connections per process (10000)"),
    ):
        parser.add_argument(flag, type=kind, help=text)
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
        type=int,
        help="worker processes (LIVEFILE_WORKERS, 1); more than 1 needs Redis",
    )
    parser.add_argument(
        "--lease-seconds",
        dest="lease_seconds",
        type=float,
        help="with Redis: how long a dead uploader's resource may stay"
        " IN_PROGRESS before another process fails it (default 6)",
    )
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    parser.set_defaults(handler=serve)
