"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine
from starlette.types import Receive, Scope, Send

from control_tower.api.errors import install_error_handlers
from control_tower.api.fast_path import FastPaths
from control_tower.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from control_tower.api.routes_audit import router as audit_router
from control_tower.api.routes_cwom import router as cwom_router
from control_tower.api.routes_cwom_runs import router as cwom_runs_router
from control_tower.api.routes_health import router as health_router
from control_tower.api.routes_tasks import enqueue_lean
from control_tower.api.routes_tasks import router as tasks_router
from control_tower.db import make_engine, make_sessionmaker
from control_tower.github import events
from control_tower.github.deliveries_pg import AsyncStore
from control_tower.github.ingest import TYPED_EVENTS
from control_tower.github.processor import DeliveryProcessor, ProcessorConfig
from control_tower.github.webhook import InFlight
from control_tower.github.webhook import receive as receive_webhook
from control_tower.github.webhook import router as github_router
from control_tower.intake_pg import AsyncWriter
from control_tower.logs import configure_logging
from control_tower.runtime import freeze_startup_heap, tune_process
from control_tower.settings import Settings
from policy.redaction import Redactor

Hook = Callable[[FastAPI], None]


class ControlTowerApp(FastAPI):
    """The app, with the routes that take bursts sent straight to their endpoints (`api/fast_path.py`)."""

    fast_paths: FastPaths | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_paths.get(scope) if self.fast_paths is not None else None
        if fast is not None:
            scope["app"] = self  # what Starlette sets: `request.app` is the app
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# Routers of higher layers (the worker's /runs) that this layer cannot import; see register_router.
_EXTRA_ROUTERS: list[APIRouter] = []


def register_router(router: APIRouter) -> None:
    """Include `router` in every app built from now on (called by the worker layer's CLI module)."""
    if router not in _EXTRA_ROUTERS:
        _EXTRA_ROUTERS.append(router)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    on_startup: list[Hook] | None = None,
    on_shutdown: list[Hook] | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the app; the engine is made from settings unless one is given."""
    own_engine = engine is None
    engine = engine or make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in on_startup or []:
            hook(app)
        processor.start()
        try:
            yield
        finally:
            if app.state.intake_writer is not None:
                await app.state.intake_writer.aclose()
            if app.state.delivery_store is not None:
                await app.state.delivery_store.aclose()
            processor.close()
            for hook in on_shutdown or []:
                hook(app)
            if own_engine:
                engine.dispose()

    app = ControlTowerApp(
        title="Control Tower",
        version="0.1.0",
        summary="GitHub-native ops bot and policy gate",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.redactor = Redactor(named=settings.secret_values())
    app.state.session_factory = make_sessionmaker(engine, info={"redactor": app.state.redactor})
    app.state.policy_config = settings.policy_config()
    # POST /tasks/enqueue stores through this on PostgreSQL without leaving the event loop.
    app.state.intake_writer = AsyncWriter(engine) if engine.dialect.name == "postgresql" else None
    # POST /github/webhook stores deliveries through this on PostgreSQL, also from the event loop.
    app.state.delivery_store = AsyncStore(engine) if engine.dialect.name == "postgresql" else None
    app.state.webhook_inflight = InFlight()
    processor = DeliveryProcessor(
        app.state.session_factory,
        ProcessorConfig.from_settings(settings),
        busy=app.state.webhook_inflight.busy,
    )
    app.state.github_processor = processor
    install_error_handlers(app)
    # Routes are matched in order, and every route tried costs ~10 µs: the two that take bursts
    # (GitHub's deliveries and task intake) come first. (Their POSTs do not even get to the router:
    # see `ControlTowerApp`.)
    app.include_router(github_router)
    app.include_router(tasks_router)
    app.include_router(health_router)
    app.include_router(cwom_router)
    app.include_router(cwom_runs_router)
    app.include_router(audit_router)
    for router in [*_EXTRA_ROUTERS, *(r for r in extra_routers if r not in _EXTRA_ROUTERS)]:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    fast = FastPaths(max_bytes=settings.max_body_bytes)
    fast.add("POST", "/github/webhook", receive_webhook)
    fast.add("POST", "/tasks/enqueue", enqueue_lean)
    app.fast_paths = fast
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (several worker processes)."""
    settings = Settings()
    tune_process()
    configure_logging(settings.log_level, json=settings.log_json)
    app = create_app(settings)
    ready_for_traffic()
    return app


def ready_for_traffic() -> None:
    """Last step before a server process takes requests: build what the first request would pay for."""
    events.warm(TYPED_EVENTS)
    freeze_startup_heap()
