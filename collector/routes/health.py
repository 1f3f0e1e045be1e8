"""GET /healthz (liveness), /readyz (readiness with reasons) and /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.auth import check_token
from collector.context import AppContext
from collector.responses import json_response
from collector.store import EventStore

SATURATION = 0.9  # not ready above this share of the writer queue


class StoreProbe:
    """After a failed write, Store.probe (a tiny write that waits up to 2 s for the writer
    thread) tells whether the store recovered. It runs in a worker thread, never on the event
    loop, and one at a time: a request that comes while a probe is in flight does not start
    another (a stuck writer holds one thread, not one per request) and reports the failure as
    it stands."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.running = False  # only read and written on the event loop

    async def __call__(self) -> None:
        if not self.store.failure or self.running:
            return
        self.running = True
        try:
            await asyncio.to_thread(self.store.probe)
        finally:
            self.running = False


def readiness(c: AppContext) -> tuple[bool, dict[str, Any]]:
    """Ready or not, with the reasons; no I/O (the probe, if needed, runs before)."""
    store = c.store
    reasons = []
    if store.corrupt:
        reasons.append(store.corrupt)
    if store.failure:
        reasons.append(store.failure)
    if not store.running:
        reasons.append("store writer is not running")
    depth = store.queue_depth
    if depth >= SATURATION * store.capacity:
        reasons.append(f"writer queue saturated ({depth}/{store.capacity})")
    detail: dict[str, Any] = {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
        "store": {"queue_depth": depth, "queue_capacity": store.capacity},
        "relay": c.relay.status() if c.relay else {"state": "disabled"},
    }
    return not reasons, detail


def build_router(c: AppContext) -> APIRouter:
    """The health routes of one app (its store probe is per app)."""
    router = APIRouter(tags=["health"])
    probe = StoreProbe(c.store)

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @router.get(
        "/readyz",
        summary="Readiness: store writable, writer not saturated, relay state",
        responses={503: {"description": "Not ready; the body lists the reasons"}},
    )
    async def readyz() -> Response:
        await probe()
        ok, detail = readiness(c)
        return json_response(detail, status=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus exposition",
        response_class=PlainTextResponse,
        responses={401: {"description": "Bad token"}},
    )
    async def metrics(request: Request) -> Response:
        if c.settings.metrics_auth:
            check_token(request, c.settings.token)
        await probe()
        ok, _ = readiness(c)
        m = c.metrics
        m.ready.set(1 if ok else 0)
        m.store_queue_depth.set(c.store.queue_depth)
        m.store_queue_capacity.set(c.store.capacity)
        m.store_size.set(c.store.size_bytes())
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return router
