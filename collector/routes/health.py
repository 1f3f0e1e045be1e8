"""GET /healthz (liveness), /readyz (readiness with reasons) and /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.auth import check_token
from collector.context import AppContext, ctx
from collector.responses import json_response

router = APIRouter(tags=["health"])
SATURATION = 0.9  # not ready above this share of the writer queue


def readiness(c: AppContext) -> tuple[bool, dict[str, Any]]:
    store = c.store
    if store.failure:
        store.probe()
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


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: store writable, writer not saturated, relay state",
    responses={503: {"description": "Not ready; the body lists the reasons"}},
)
async def readyz(request: Request) -> Response:
    ok, detail = readiness(ctx(request))
    return json_response(detail, status=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus exposition",
    response_class=PlainTextResponse,
    responses={401: {"description": "Bad token"}},
)
async def metrics(request: Request) -> Response:
    c = ctx(request)
    if c.settings.metrics_auth:
        check_token(request, c.settings.token)
    ok, _ = readiness(c)
    m = c.metrics
    m.ready.set(1 if ok else 0)
    m.store_queue_depth.set(c.store.queue_depth)
    m.store_queue_capacity.set(c.store.capacity)
    m.store_size.set(c.store.size_bytes())
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
