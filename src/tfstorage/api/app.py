"""`create_app(settings)`: the whole HTTP service, built on demand (nothing at import)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from tfstorage import __version__
from tfstorage.api.body_deadline import BodyDeadlineMiddleware
from tfstorage.api.docs import install_docs
from tfstorage.api.errors import install_error_handlers
from tfstorage.api.forwarded import ForwardedHeadersMiddleware
from tfstorage.api.hot_routes import HotObjectRoutes
from tfstorage.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tfstorage.api.routes import (
    access,
    batch,
    buckets,
    files,
    integrity,
    legacy,
    lifecycle,
    objects,
    storage,
    uploads,
)
from tfstorage.blobs.base import BlobStore
from tfstorage.config import Settings
from tfstorage.service.backends import build_blob_store
from tfstorage.service.storage import Storage, open_storage

log = logging.getLogger(__name__)


async def _collect_garbage_forever(store: Storage) -> None:
    """GC at start-up, then every GC_INTERVAL_SECONDS; a failed run is retried later."""
    interval = store.settings.gc_interval_seconds
    while True:
        try:
            await store.run_maintenance()
        except Exception:
            log.exception("garbage collection failed; retrying at the next interval")
        store.started_up.set()
        if interval <= 0:
            return
        await anyio.sleep(interval)


def create_app(settings: Settings, *, blobs: BlobStore | None = None) -> FastAPI:
    """Build the app. `blobs` replaces the configured blob store (tests use it)."""

    # Built here, not at start-up, so a bad STORAGE_TYPE fails before serving.
    blob_store = blobs or build_blob_store(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await open_storage(settings, blobs=blob_store)
        app.state.storage = store
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_collect_garbage_forever, store)
                tasks.start_soon(store.lifecycle.run_forever)
                tasks.start_soon(store.scrubber.run_forever)
                tasks.start_soon(store.access.audit_log.flush_forever)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            # Outside the cancelled task group (and shielded): inside it, the close's
            # first await was cancelled, leaving it half done and swallowing the error
            # that ended the lifespan.
            with anyio.CancelScope(shield=True):
                await store.close()

    app = FastAPI(
        title="TensorFleet Storage",
        version=__version__,
        description="Indexed, checksummed storage for ML datasets, models and checkpoints.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, with assets from a package
        redoc_url=None,
    )
    install_error_handlers(app)
    install_docs(app)
    # objects first: its routes carry nearly every request (PUT, GET and HEAD of an
    # object), and FastAPI tries routes in order, each try costing microseconds; no
    # other router has a path under its first segments (upload, objects, download,
    # list, delete, versions, restore). uploads/batch before files:
    # /api/v1/files/{file_id} must not shadow longer routes.
    routers = (
        objects,
        uploads,
        batch,
        lifecycle,
        integrity,
        files,
        buckets,
        access,
        storage,
        legacy,
    )
    for module in routers:
        app.include_router(module.router)
    # PUT, GET and HEAD of an object skip the route search when they can (hot_routes.py).
    app.router.middleware_stack = HotObjectRoutes(
        app.router, objects.router.routes, objects.HOT_ENDPOINTS
    )
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            # A wildcard origin never goes with credentials.
            allow_credentials="*" not in origins,
            allow_methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
            allow_headers=["*"],
            expose_headers=["ETag", "Content-Range", "X-Request-ID", "X-File-Id"],
        )
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(
        BodyDeadlineMiddleware,
        idle_seconds=settings.body_timeout_seconds,
        min_rate=settings.body_min_rate,
        grace_seconds=settings.body_grace_seconds,
    )
    app.add_middleware(RequestIdMiddleware)  # outermost but one, so every answer has an id
    # Outermost: the access log, the audit log and presigned links see the client's view.
    app.add_middleware(
        ForwardedHeadersMiddleware,
        trusted=settings.forwarded_allow_ips,
        family=settings.forwarded_headers,
    )
    return app


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory` with several worker processes: settings from the env."""
    from tfstorage.config import load_settings

    return create_app(load_settings())
