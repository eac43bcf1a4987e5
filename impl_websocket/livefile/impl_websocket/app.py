"""The FastAPI application: assembles the manager from its backends and mounts the endpoints."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from livefile.api.errors import AccessDeniedError
from livefile.api.interfaces import Catalog, StatusBus
from livefile.api.messages import SUBPROTOCOL, Dialect
from livefile.impl_common.references import CONTEXT_PARAMETER
from livefile.impl_server.bus import InProcessStatusBus
from livefile.impl_server.catalog import SqliteCatalog
from livefile.impl_server.contexts import RedisUploadContexts, UploadContexts
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.jobs import JobRunner
from livefile.impl_server.manager import CatalogUnavailableError, ResourceManager
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.redis_backend import (
    LeaseKeeper,
    RedisCatalog,
    RedisStatusBus,
    RedisStore,
)
from livefile.impl_server.storage import FilesystemStorage
from livefile.impl_websocket.access import (
    AccessControlMiddleware,
    authorize_read,
    close_denied,
    denial_response,
    grant_of,
)
from livefile.impl_websocket.connections import Connections
from livefile.impl_websocket.download_endpoint import DownloadSession
from livefile.impl_websocket.http_api import router
from livefile.impl_websocket.http_content import router as content_router
from livefile.impl_websocket.http_fast_content import CompletedContentFastPath, FinishedFiles
from livefile.impl_websocket.http_metrics import TrafficCounter
from livefile.impl_websocket.http_metrics import router as metrics_router
from livefile.impl_websocket.settings import Settings
from livefile.impl_websocket.upload_endpoint import UploadSession

logger = logging.getLogger("livefile")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    connections = Connections()
    authority = settings.token_authority()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_dir = settings.data_dir.resolve()
        catalog: Catalog
        bus: StatusBus
        leases: LeaseKeeper | None = None
        contexts: UploadContexts
        if settings.redis_url:
            store = RedisStore(settings.redis_url, settings.redis_prefix)
            await store.ping()
            catalog = redis_catalog = RedisCatalog(
                store, settings.lease_seconds, settings.terminal_write_patience
            )
            bus = redis_bus = RedisStatusBus(store)
            redis_bus.start()
            contexts = redis_contexts = RedisUploadContexts(store.client, settings.redis_prefix)
            redis_contexts.start()
        else:
            catalog = SqliteCatalog(data_dir / "catalog.sqlite3", durable=settings.durable)
            bus = InProcessStatusBus()
            contexts = UploadContexts()
        manager = ResourceManager(
            storage=FilesystemStorage(data_dir / "resources"),
            catalog=catalog,
            bus=bus,
            contexts=contexts,
            quotas=Quotas(settings.max_resource_size, settings.max_resources_per_context),
            checkpoint_interval=settings.checkpoint_interval,
            durable=settings.durable,
            resume_grace=settings.upload_resume_grace,
        )
        if settings.redis_url:
            redis_bus.restore_missing = manager.entry
        runner = JobRunner(settings.job_limits())
        app.state.derivations = Derivations(manager, runner, settings.repack_settings())
        # With Redis another worker may hold an unfinished upload: orphans are failed as before.
        recovered = await manager.recover(resumable=not settings.redis_url)
        if recovered:
            logger.warning("%d unfinished upload(s) of a previous run marked FAILED", recovered)
        if settings.redis_url:
            leases = LeaseKeeper(
                redis_catalog,
                lambda: manager.active_ids,
                manager.recover,
                settings.lease_seconds,
                manager.restore_entries,
            )
            leases.start()
        app.state.manager = manager
        logger.info("livefile serving data in %s", data_dir)
        try:
            yield
        finally:
            await connections.close_all()
            await runner.close()  # each job ends its resource FAILED (interrupted)
            await manager.shutdown()
            if leases is not None:
                await leases.close()
            await contexts.stop()
            await bus.close()
            await catalog.close()

    app = FastAPI(
        title="livefile",
        summary="Files downloadable while they are still being uploaded.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.connections = connections
    app.state.token_authority = authority
    app.state.finished_files = FinishedFiles()
    # Middleware added last runs first: access control, then the fast path for finished files.
    app.add_middleware(CompletedContentFastPath)
    if authority is not None:
        app.add_middleware(
            AccessControlMiddleware, authority=authority, public_docs=settings.public_docs
        )
        if not authority.can_sign:
            logger.warning(
                "access control on without a signing key: references carry no download token"
            )
    # Outermost: every response is counted, refusals by access control included.
    app.add_middleware(TrafficCounter)
    app.include_router(router)

    @app.exception_handler(AccessDeniedError)
    async def access_denied(request: Request, exc: AccessDeniedError) -> JSONResponse:
        return denial_response(exc)

    @app.exception_handler(RedisError)
    async def redis_unavailable(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"Service unavailable: Redis is unreachable ({exc})"}, status_code=503
        )

    @app.exception_handler(CatalogUnavailableError)
    async def catalog_unavailable(request: Request, exc: CatalogUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    app.include_router(content_router)
    app.include_router(metrics_router)

    @app.websocket("/ws/streaming/upload")
    async def upload(websocket: WebSocket) -> None:
        context_id = websocket.query_params.get(CONTEXT_PARAMETER) or None
        try:
            context_id = grant_of(websocket).authorize_upload(context_id)
        except AccessDeniedError as exc:
            await close_denied(websocket, exc)
            return
        dialect = await accept(websocket)
        async with connections.track(websocket, "upload", settings.max_uploads) as admitted:
            if admitted:
                await UploadSession(
                    websocket,
                    app.state.manager,
                    settings,
                    context_id,
                    app.state.derivations,
                    authority,
                    dialect,
                ).run()

    @app.websocket("/ws/streaming/download/{resource_id}", name="download")
    async def download(websocket: WebSocket, resource_id: str) -> None:
        try:
            await authorize_read(grant_of(websocket), app.state.manager, resource_id)
        except AccessDeniedError as exc:
            await close_denied(websocket, exc)
            return
        dialect = await accept(websocket)
        async with connections.track(websocket, "download", settings.max_downloads) as admitted:
            if admitted:
                await DownloadSession(
                    websocket, app.state.manager, settings, resource_id, dialect
                ).run()

    return app


async def accept(websocket: WebSocket) -> Dialect:
    """Accept the connection in the dialect its client asked for: livefile's extensions when it
    offered ``livefile.v1`` (the subprotocol is then confirmed in the handshake's answer),
    step-streaming's protocol exactly when it offered nothing livefile knows."""
    dialect = Dialect.of(websocket.scope.get("subprotocols", []))
    await websocket.accept(subprotocol=SUBPROTOCOL if dialect is Dialect.LIVEFILE else None)
    return dialect


def create_app_from_environment() -> FastAPI:
    """The app of one worker process, configured from ``LIVEFILE_*`` (``livefile serve
    --workers N`` passes its settings on that way)."""
    return create_app(Settings())
