"""OTLP/HTTP from Claude Code itself (CLAUDE_CODE_ENABLE_TELEMETRY=1, OTEL_EXPORTER_OTLP_ENDPOINT
= the collector): POST /v1/logs stores its events in their sessions' timelines, POST /v1/metrics
hands its metrics to the native-metrics sink (AppContext.native_metrics).

Same auth and limits as POST /v1/events. Answers follow the OTLP specification: 200 with an
Export*ServiceResponse in the request's encoding (partial_success naming the records refused),
and errors as a google.rpc.Status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from collector.body import BadRequest
from collector.context import AppContext, ctx
from collector.events import now_ms
from collector.native import decode as otlp
from collector.native.events import Converted, count_records, to_events
from collector.routes.ingest import ERRORS, authorized_body

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class OtlpRoute(APIRoute):
    """Refusals as OTLP clients expect them: the collector's own exception handlers decide the
    status and headers and count the refusal (agentwatch_events_rejected_total), then the body
    becomes a google.rpc.Status in the request's encoding. Unexpected errors go on to the
    collector's 500 handler unchanged."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                respond = _handler_for(request, exc)
                if respond is None:
                    raise
                return _as_status(request, await respond(request, exc))

        return route


def _handler_for(request: Request, exc: Exception) -> Callable[..., Any] | None:
    handlers: dict[Any, Callable[..., Any]] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


def _as_status(request: Request, response: Response) -> Response:
    try:
        message = str(orjson.loads(response.body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = bytes(response.body).decode(errors="replace")
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    headers = {
        k: v for k, v in response.headers.items() if k not in ("content-type", "content-length")
    }
    return otlp.status_response(response.status_code, message, kind, headers)


router = APIRouter(tags=["otlp"], route_class=OtlpRoute)
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"description": "Export*ServiceResponse (partial_success: records refused)"},
}


@router.post(
    "/v1/logs",
    responses=RESPONSES,
    summary="OTLP/HTTP logs from Claude Code (protobuf or JSON, gzip or not): its events",
)
async def post_logs(request: Request) -> Response:
    c = ctx(request)
    body, kind = await authorized_body(request, c, otlp.OTLP_TYPES)
    encoding = otlp.content_encoding(request)
    received = now_ms()
    client = request.client.host if request.client else "unknown"
    # Decoding, redaction and the sessions' projects (a store read each) run off the event loop.
    converted = await asyncio.to_thread(_convert, c, body, kind, encoding, received, client)
    if converted.rejected:
        c.metrics.rejected.labels(reason="invalid_event").inc(len(converted.rejected))
    inserted = await c.store.write(converted.events)  # acknowledged once committed
    duplicate = len(inserted) - sum(inserted)
    if duplicate:
        c.metrics.duplicates.inc(duplicate)
    answer = ExportLogsServiceResponse()
    if converted.rejected:
        answer.partial_success.rejected_log_records = len(converted.rejected)
        answer.partial_success.error_message = converted.error_message()
    return otlp.answer(answer, kind)


def _convert(
    c: AppContext, body: bytes, kind: str, encoding: str, received: int, client: str
) -> Converted:
    limit = c.settings.max_body_bytes
    request = otlp.decode(body, kind, encoding, ExportLogsServiceRequest, limit)
    records = count_records(request)
    if records > c.settings.max_batch_events:
        raise BadRequest(
            413,
            "too_large",
            f"{records} log records in one request; at most {c.settings.max_batch_events}",
        )
    return to_events(request, received, c.settings, client, c.store.session_app)


@router.post(
    "/v1/metrics",
    responses=RESPONSES,
    summary="OTLP/HTTP metrics from Claude Code (protobuf or JSON, gzip or not)",
)
async def post_metrics(request: Request) -> Response:
    c = ctx(request)
    body, kind = await authorized_body(request, c, otlp.OTLP_TYPES)
    encoding = otlp.content_encoding(request)
    received = now_ms()
    limit = c.settings.max_body_bytes
    metrics = await asyncio.to_thread(
        otlp.decode, body, kind, encoding, ExportMetricsServiceRequest, limit
    )
    c.native_metrics.add(metrics, received)
    return otlp.answer(ExportMetricsServiceResponse(), kind)
