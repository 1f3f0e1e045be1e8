"""The FastAPI app factory: create_app(settings) -> FastAPI.

Nothing happens at import time; the store opens in the lifespan, so tests can build apps with
their own settings and registries side by side.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.responses import Response

from collector import __version__
from collector.auth import HmacVerifier, Unauthorized
from collector.body import BadRequest
from collector.context import AppContext
from collector.host import register_host_metrics
from collector.metrics import build_metrics
from collector.middleware import ObserveRequests
from collector.native.metrics import NativeMetrics
from collector.otlp.export import RelayConfig
from collector.otlp.relay import Relay, relay_config_from
from collector.pricing import PriceTable
from collector.responses import error_response
from collector.routes import alerts, health, ingest, otlp
from collector.routes import query as query_routes
from collector.routes import stream as stream_routes
from collector.settings import Settings
from collector.store import Committed, EventStore, StoreError, StoreSaturated, store_for
from collector.tracker import Tracker

log = logging.getLogger("collector")


def create_app(
    settings: Settings | None = None,
    registry: CollectorRegistry | None = None,
    relay_config: RelayConfig | None = None,
) -> FastAPI:
    """The collector for `settings` (default: the environment); its relay sends as
    `relay_config` says (default: built from `settings` and OTEL_EXPORTER_OTLP_*). Raises
    SettingsError for a value it cannot use (a relay protocol, the prices file)."""
    settings = settings or Settings.from_env()
    metrics = build_metrics(registry or CollectorRegistry(), settings.label_cap)
    store = store_for(
        settings,
        queue_max_events=settings.queue_max_events,
        on_write=lambda seconds, _n: metrics.store_write.observe(seconds),
        on_error=lambda _exc: metrics.store_errors.inc(),
        prices=PriceTable.from_file(settings.prices_file),
    )
    tracker = Tracker(
        metrics, settings.loop_threshold, settings.waiting_seconds, settings.session_idle_seconds
    )
    local_store = settings.sqlite_path.resolve().parent if settings.postgres_url is None else None
    register_host_metrics(metrics, local_store)
    context = AppContext(
        settings=settings,
        store=store,
        metrics=metrics,
        tracker=tracker,
        hmac=HmacVerifier(settings.hmac_secret, settings.hmac_window_seconds)
        if settings.hmac_secret
        else None,
        # Claude Code's own metrics (POST /v1/metrics): only counted until a sink exposes them.
        native_metrics=NativeMetrics(metrics.registry, settings.label_cap, settings.user_label),
    )
    relay = Relay(store, metrics, relay_config or relay_config_from(settings))
    context.relay = relay

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            store.open()
        except StoreError as exc:
            log.error("store unavailable: %s", exc)
            raise
        with store.reader() as conn:
            tracker.restore(conn)
        # The tracker's Python work runs on the event loop, not the writer thread: the writer
        # then spends its time in SQLite (which releases the GIL). One call per commit, in order.
        loop = asyncio.get_running_loop()

        def observe_on_loop(new: list[Committed]) -> None:
            loop.call_soon_threadsafe(tracker.observe, new)

        store.add_listener(observe_on_loop)
        relay.start()  # after the store opened; reads its cursor from it
        if settings.integrity_check != "off":
            threading.Thread(
                target=store.check_integrity, args=(settings.integrity_check,), daemon=True
            ).start()
        retention = asyncio.create_task(_retention_loop(store, settings))
        log.info(
            "collector started",
            extra={
                "version": __version__,
                "db": settings.sqlite_path.as_posix()
                if settings.postgres_url is None
                else "postgresql",
                "port": settings.port,
            },
        )
        try:
            yield
        finally:
            retention.cancel()
            await asyncio.to_thread(relay.stop)  # before the store closes: it writes the cursor
            await asyncio.to_thread(store.close)  # drains the writer queue: nothing acked is lost
            log.info("collector stopped; writer queue drained")

    app = FastAPI(
        title="Agentwatch collector",
        version=__version__,
        description="Ingest, metrics and query API for AI coding agent events.",
        lifespan=lifespan,
    )
    app.state.ctx = context
    app.include_router(ingest.router)
    app.include_router(alerts.router)
    app.include_router(otlp.router)
    app.include_router(health.build_router(context))
    app.include_router(query_routes.router)
    app.include_router(stream_routes.build_router(context))
    app.add_middleware(ObserveRequests, metrics=metrics)
    _error_handlers(app, context)
    return app


async def _retention_loop(store: EventStore, settings: Settings) -> None:
    while True:
        cutoff = int((time.time() - settings.retention_days * 86400) * 1000)
        try:
            deleted = await asyncio.to_thread(store.prune, cutoff)
            if deleted:
                log.info("retention pruned events", extra={"deleted": deleted})
        except StoreError as exc:
            log.error("retention failed: %s", exc)
        except Exception:
            log.exception("retention failed")
        await asyncio.sleep(settings.retention_interval_seconds)


def _error_handlers(app: FastAPI, c: AppContext) -> None:
    rejected = c.metrics.rejected

    async def bad_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        rejected.labels(reason=exc.reason).inc()
        return error_response(exc.status, exc.message)

    async def unauthorized(_: Request, exc: Exception) -> Response:
        rejected.labels(reason="unauthorized").inc()
        return error_response(401, str(exc), {"WWW-Authenticate": "Bearer"})

    async def unavailable(_: Request, exc: Exception) -> Response:
        rejected.labels(reason="store_unavailable").inc()
        retry = "1" if isinstance(exc, StoreSaturated) else "5"
        return error_response(503, str(exc), {"Retry-After": retry})

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"invalid parameter {where}: {first.get('msg', 'invalid')}")

    async def internal(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal error; see the collector log for the request id")

    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(StoreError, unavailable)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
