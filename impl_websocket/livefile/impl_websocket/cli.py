"""``livefile serve``: run the server under uvicorn, closing WebSockets with 1001 on shutdown."""

from __future__ import annotations

import argparse
import socket
from typing import Any

import uvicorn

from livefile.impl_websocket.app import create_app
from livefile.impl_websocket.settings import Settings


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


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
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
    server = LivefileServer(uvicorn_config(settings))
    server.run()
    return 0


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
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    parser.set_defaults(handler=serve)
