"""The FastAPI application: ``create_app()`` and the lifespan that owns every long-lived part.

lifespan: storage dir → database engine → migrations → kinds → event bus → task engine
          (→ LISTEN/NOTIFY on PostgreSQL); torn down in reverse, tasks requeued gracefully.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.config import Settings, get_settings
from app.db import Database
from app.http.cors import install_cors
from app.http.draining import Draining
from app.http.problems import install_error_handlers
from app.logs import configure_logging
from app.middleware import BodyLimitMiddleware, MethodOverrideMiddleware, RequestContextMiddleware
from app.migrate import upgrade
from app.openapi import install_openapi
from app.routers import downloads as downloads_router
from app.routers import files as files_router
from app.routers import health, tasks
from app.routers import metrics as metrics_router
from app.routers import previews as previews_router
from app.routers import tus as tus_router
from app.routers.console import install_console
from app.services.files.storage import ensure_dirs
from app.services.files.stores import open_store
from app.services.files.sweeper import UploadSweeper, reconcile_uploads
from app.services.runtime.bus import EventBus, PgListener, asyncpg_dsn
from app.services.runtime.engine import TaskEngine
from app.services.runtime.kinds import load_kinds

logger = logging.getLogger("tsm")
DOCS_STATIC = "/static-offline-docs"

DESCRIPTION = """
Start long-running data work — uploads, downloads, CSV imports, table exports, any long
process — then **pause**, **resume** or **cancel** it at any moment, losing nothing, and
watch its progress.

Authenticate with **Authorize** and an API key (`tsm-server keys create OWNER`) when the
server requires it. Errors are RFC 9457 problem details.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stack = AsyncExitStack()  # the byte store's client
        ensure_dirs(settings)
        database = Database(settings.effective_database_url)
        await upgrade(database.engine)
        load_kinds(settings.kind_modules)
        bus = EventBus()
        store = await stack.enter_async_context(open_store(settings))
        app.state.store = store
        engine = TaskEngine(database, settings, bus, store)
        app.state.settings = settings
        app.state.database = database
        app.state.bus = bus
        app.state.engine = engine
        draining = Draining()
        draining.install()
        app.state.draining = draining
        listener = None
        if database.is_postgres:
            listener = PgListener(asyncpg_dsn(settings.effective_database_url), engine.on_notification)
            listener.start()
        await engine.start()
        await reconcile_uploads(database, settings, store)  # offsets never ahead of the stored bytes
        sweeper = UploadSweeper(database, settings, store)
        sweeper.start()
        if not settings.auth_required:
            logger.warning("authentication is off: every request without a key acts as owner 'local'")
        logger.info("ready: database=%s worker=%s", database.dialect, engine.worker_id)
        try:
            yield
        finally:
            draining.set()
            draining.uninstall()
            await sweeper.stop()
            await engine.stop()
            if listener is not None:
                await listener.stop()
            await database.dispose()
            await stack.aclose()

    # /docs and /redoc from the assets fastapi-offline ships (under DOCS_STATIC): no CDN, so
    # they work on a closed network. The validator badge would call out to swagger.io: off.
    app = FastAPIOffline(
        title="Task State Manager",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_STATIC,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    # Each add wraps the ones before: a request meets RequestContext first, BodyLimit last.
    # CORS sits outside the tus method override and the body limit, so it answers preflights
    # (before the tus router's own OPTIONS) and its headers reach the 4xx those two send.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_json_body_bytes)
    app.add_middleware(MethodOverrideMiddleware)
    install_cors(app, settings.cors_origins)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    app.include_router(tasks.router)
    app.include_router(previews_router.router)
    app.include_router(files_router.router)
    app.include_router(tus_router.router)
    app.include_router(downloads_router.router)
    install_console(app)
    return app
