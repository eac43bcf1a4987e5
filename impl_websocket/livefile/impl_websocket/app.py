"""The FastAPI application: assembles the manager from its backends and mounts the endpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from livefile.api.errors import AccessDeniedError
from livefile.api.interfaces import Catalog, StatusBus
from livefile.api.messages import SUBPROTOCOL, Dialect
from livefile.api.model import ResourceKind
from livefile.impl_common.references import CONTEXT_PARAMETER
from livefile.impl_server.bundle.reader import bundle_readers
from livefile.impl_server.bundle.store import BundleForms
from livefile.impl_server.bundle_job import BundleHandler
from livefile.impl_server.bus import InProcessStatusBus
from livefile.impl_server.catalog import SqliteCatalog
from livefile.impl_server.contexts import UploadContexts
from livefile.impl_server.derivations import Derivations
from livefile.impl_server.image_job import ImageHandler
from livefile.impl_server.images.blurhashes import Blurhashes
from livefile.impl_server.jobs import JobRunner
from livefile.impl_server.manager import CatalogUnavailableError, ResourceManager
from livefile.impl_server.quotas import Quotas
from livefile.impl_server.repack_job import RepackHandler
from livefile.impl_server.shared_resume import SharedParking
from livefile.impl_server.storage import FilesystemStorage
from livefile.impl_server.sweeper import Sweeper
from livefile.impl_server.transfer_job import TransferHandler
from livefile.impl_server.tus import TusUploads
from livefile.impl_websocket.access import (
    DOCS_ASSETS_PATH,
    AccessControlMiddleware,
    authorize_read,
    close_denied,
    denial_response,
    grant_of,
)
from livefile.impl_websocket.bundles_api import router as bundles_router
from livefile.impl_websocket.connections import Connections
from livefile.impl_websocket.cors import cors_options
from livefile.impl_websocket.download_endpoint import DownloadSession
from livefile.impl_websocket.http_api import router
from livefile.impl_websocket.http_content import router as content_router
from livefile.impl_websocket.http_fast_content import CompletedContentFastPath, FinishedFiles
from livefile.impl_websocket.http_lifecycle import router as lifecycle_router
from livefile.impl_websocket.http_metrics import TrafficCounter, route_template
from livefile.impl_websocket.http_metrics import router as metrics_router
from livefile.impl_websocket.http_search import router as search_router
from livefile.impl_websocket.image_api import router as image_router
from livefile.impl_websocket.offline_docs import DocsPolicy, docs_router
from livefile.impl_websocket.settings import Settings
from livefile.impl_websocket.tracing import (
    TracingMiddleware,
    install,
    tracer_provider_from_environment,
)
from livefile.impl_websocket.transfers_api import router as transfers_router
from livefile.impl_websocket.tus_api import tus_router
from livefile.impl_websocket.upload_endpoint import UploadSession
from livefile.impl_websocket.viewer import router as viewer_router

logger = logging.getLogger("livefile")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tracer_provider = tracer_provider_from_environment()
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
            # Imported here: Redis's client takes about a second of CPU to import, which a
            # server without Redis need not spend at every start.
            from livefile.impl_server.images.redis_summaries import RedisSummaries
            from livefile.impl_server.redis_backend import (
                LeaseKeeper,
                RedisCatalog,
                RedisDeletionFeed,
                RedisStatusBus,
                RedisStore,
            )
            from livefile.impl_server.redis_contexts import RedisUploadContexts
            from livefile.impl_server.redis_handover import RedisHandoverFeed
            from livefile.impl_server.redis_jobs import RedisJobQueue

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
            lifecycle=settings.lifecycle(),
            resume_grace=settings.upload_resume_grace,
        )
        manager.deletions.add_listener(app.state.finished_files.forget)
        deletion_feed: RedisDeletionFeed | None = None
        handovers: RedisHandoverFeed | None = None
        if settings.redis_url:
            redis_bus.restore_missing = manager.entry
            deletion_feed = RedisDeletionFeed(store, manager.deleted_elsewhere)
            await deletion_feed.start()
            manager.announce_deletion = deletion_feed.announce
            # A parked upload is released, for whichever worker its client reaches next.
            handovers = RedisHandoverFeed(store)
            parking = SharedParking(manager, handovers, patience=settings.lease_seconds)
            manager.resumable.share(parking)
            await handovers.listen(manager.resumable.let_go, parking.heard_released)
        runner = app.state.job_runner = JobRunner(settings.job_limits())
        derivations = app.state.derivations = Derivations(manager, runner)
        derivations.register(
            ResourceKind.REPACK, RepackHandler(manager, settings.repack_settings())
        )
        derivations.register(
            ResourceKind.TRANSFER, TransferHandler(manager, settings.transfer_settings())
        )
        bundle_forms = BundleForms(manager.storage)
        manager.register_reader(ResourceKind.BUNDLE, bundle_readers(bundle_forms))
        derivations.register(
            ResourceKind.BUNDLE,
            BundleHandler(manager, bundle_forms, settings.bundle_settings()),
        )
        image_settings = settings.image_settings()
        derivations.register(ResourceKind.IMAGE, ImageHandler(manager, image_settings))
        app.state.blurhashes = Blurhashes(
            manager,
            image_settings.limits,
            (settings.image_blurhash_x, settings.image_blurhash_y),
            cache_size=settings.blurhash_cache_size,
            shared=RedisSummaries(store.client, settings.redis_prefix, settings.blurhash_cache_ttl)
            if settings.redis_url
            else None,
            concurrency=settings.job_concurrency,
        )
        app.state.tus = tus = TusUploads(
            manager, settings.tus_expiry, data_dir / "tus-staging", shared=bool(settings.redis_url)
        )
        # With Redis, only resources whose lease has been missing for a lease period are found
        # (by the lease keeper, below): another worker may be producing the others.
        recovered = await manager.recover()
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
            # Jobs go to whichever worker claims them; a dead worker's are taken over.
            redis_catalog.on_taken = manager.taken_over
            shared_jobs = RedisJobQueue(
                store.client,
                settings.redis_prefix,
                store.node_id,
                settings.job_limits(),
                settings.lease_seconds,
                derivations.run_claimed,
                derivations.give_up,
            )
            derivations.share(shared_jobs)
            await shared_jobs.start()
        sweeper = Sweeper(manager)
        sweeper.start()
        app.state.manager = manager
        logger.info("livefile serving data in %s", data_dir)
        try:
            yield
        finally:
            await sweeper.close()
            await connections.close_all()
            # Jobs of this process alone end FAILED (interrupted); shared ones are handed over.
            await derivations.close()
            await tus.close()  # unfinished tus uploads stay resumable, not FAILED
            await manager.shutdown()
            if leases is not None:
                await leases.close()
            if deletion_feed is not None:
                await deletion_feed.close()
            if handovers is not None:
                await handovers.close()
            await contexts.stop()
            await bus.close()
            await catalog.close()
            if tracer_provider is not None:
                await asyncio.to_thread(tracer_provider.shutdown)  # exports the last spans

    # Swagger UI and ReDoc from assets shipped in the fastapi-offline package, not a CDN, so
    # that /docs and /redoc work on a machine without internet (offline_docs.py).
    app = FastAPIOffline(
        docs_url=None,  # the pages are docs_router's, which pass on the token
        redoc_url=None,
        static_url=DOCS_ASSETS_PATH,
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
    app.add_middleware(DocsPolicy)
    app.add_middleware(CompletedContentFastPath)
    if authority is not None:
        app.add_middleware(
            AccessControlMiddleware, authority=authority, public_docs=settings.public_docs
        )
        if not authority.can_sign:
            logger.warning(
                "access control on without a signing key: references carry no download token"
            )
    # Outside access control: preflights carry no token, and refusals must be readable.
    if origins := settings.cors_origin_list():
        app.add_middleware(CORSMiddleware, **cors_options(origins))
    app.state.cors_on = bool(origins)
    # Outermost: every response is counted, refusals by access control included.
    app.add_middleware(TrafficCounter)
    # Around that, when the OTEL_* variables ask for it: a span per request and connection.
    app.state.tracing_on = tracer_provider is not None
    if tracer_provider is not None:
        install(tracer_provider)
        app.add_middleware(TracingMiddleware, provider=tracer_provider, route_of=route_template)
    app.include_router(router)
    app.include_router(tus_router(settings.tus_path))

    @app.exception_handler(AccessDeniedError)
    async def access_denied(request: Request, exc: AccessDeniedError) -> JSONResponse:
        return denial_response(exc)

    if settings.redis_url:
        from redis.exceptions import RedisError  # imported only by a server that uses Redis

        @app.exception_handler(RedisError)
        async def redis_unavailable(request: Request, exc: RedisError) -> JSONResponse:
            return JSONResponse(
                {"detail": f"Service unavailable: Redis is unreachable ({exc})"}, status_code=503
            )

    @app.exception_handler(CatalogUnavailableError)
    async def catalog_unavailable(request: Request, exc: CatalogUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    app.include_router(content_router)
    app.include_router(bundles_router)
    app.include_router(metrics_router)
    app.include_router(transfers_router)
    app.include_router(image_router)
    app.include_router(lifecycle_router)
    app.include_router(search_router)
    app.include_router(viewer_router)
    app.include_router(docs_router(DOCS_ASSETS_PATH))

    @app.websocket("/ws/streaming/upload")
    async def upload(websocket: WebSocket) -> None:
        context_id = websocket.query_params.get(CONTEXT_PARAMETER) or None
        try:
            grant = grant_of(websocket)
            context_id = grant.authorize_upload(context_id)
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
                    uploader=grant.token_id,
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
