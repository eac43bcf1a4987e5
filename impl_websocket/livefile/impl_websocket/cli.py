"""``livefile serve``: run the server under uvicorn, closing WebSockets with 1001 on shutdown."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

import redis
import uvicorn
from uvicorn.supervisors import multiprocess

from livefile.impl_websocket.app import create_app
from livefile.impl_websocket.settings import Settings

APP_FACTORY = "livefile.impl_websocket.app:create_app_from_environment"


class LivefileServer(uvicorn.Server):
    """uvicorn's server, closing our WebSockets with 1001 before uvicorn drops connections."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        app: Any = self.config.loaded_app
        while hasattr(app, "app") and not hasattr(app, "state"):
            app = app.app  # unwrap uvicorn's middleware (proxy headers, message logger)
        connections = getattr(getattr(app, "state", None), "connections", None)
        if connections is not None:
            await connections.close_all()
        await super().shutdown(sockets)


class LivefileWorker(multiprocess.Process):
    """A uvicorn worker process running ``LivefileServer``."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = LivefileServer(config=self.config)
        return self._server


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    # Several workers each build their app from the environment; one builds it here.
    several = settings.workers > 1
    return uvicorn.Config(
        APP_FACTORY if several else create_app(settings),
        factory=several,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws="websockets-sansio",
        # Compression costs ~25x throughput on binary data and buys nothing for random bytes.
        ws_per_message_deflate=False,
        ws_max_size=max(settings.max_message_size, settings.max_text_message_size) + 1024,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )


def serve(args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    settings = Settings(**overrides)
    if settings.workers > 1 and not settings.redis_url:
        print(
            "livefile serve: --workers greater than 1 needs --redis-url (LIVEFILE_REDIS_URL):"
            " the workers share their catalog and statuses through Redis",
            file=sys.stderr,
        )
        return 2
    if settings.redis_url and (problem := redis_problem(settings.redis_url)):
        print(
            f"livefile serve: Redis at {settings.redis_url} is unreachable: {problem}",
            file=sys.stderr,
        )
        return 1
    config = uvicorn_config(settings)
    if settings.workers == 1:
        LivefileServer(config).run()
        return 0
    # The workers are new processes: hand them the settings through the environment.
    for name, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"LIVEFILE_{name.upper()}"] = str(value)
    # uvicorn's supervisor builds a plain uvicorn.Server in each worker; make it build ours,
    # so that every worker closes its WebSockets with 1001 on shutdown too.
    multiprocess.Process = LivefileWorker  # type: ignore[misc]
    multiprocess.Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def redis_problem(url: str) -> str | None:
    """Why Redis cannot be used (None when it answers a PING)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc)
    return None


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
