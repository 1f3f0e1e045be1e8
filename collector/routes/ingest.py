"""Ingest: POST /v1/hooks (raw hook JSON) and POST /v1/events (hook script envelopes)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response

from collector import events as ev
from collector.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, check_token
from collector.body import (
    JSON_TYPES,
    NDJSON_TYPES,
    BadRequest,
    media_type,
    parse_json,
    parse_ndjson,
    read_body,
)
from collector.context import AppContext, ctx
from collector.responses import json_response
from collector.settings import Settings

router = APIRouter(tags=["ingest"])
OFFLOAD_BYTES = 1024 * 1024

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON"},
    401: {"description": "Missing or invalid token or signature"},
    408: {"description": "Body not received in time"},
    413: {"description": "Body or batch too large"},
    415: {"description": "Unsupported content type"},
    422: {"description": "Valid JSON of the wrong shape"},
    503: {"description": "Store unavailable or writer saturated; retry later"},
}


async def authorized_body(
    request: Request, c: AppContext, types: tuple[str, ...], signed: bool = True
) -> tuple[bytes, str]:
    """Token, content type, body (size and time limited), then the HMAC over the exact bytes
    (signed=False for senders that cannot sign, such as Alertmanager: the token still applies)."""
    check_token(request, c.settings.token)
    kind = media_type(request, types)
    body = await read_body(request, c.settings.max_body_bytes, c.settings.body_timeout_seconds)
    if signed and c.hmac is not None:
        c.hmac.verify(
            request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body
        )
    return body, kind


@router.post(
    "/v1/hooks",
    status_code=204,
    responses=ERRORS,
    summary="Raw Claude Code hook JSON (for type: http hooks); 204 with an empty body",
)
async def post_hook(request: Request) -> Response:
    c = ctx(request)
    body, _ = await authorized_body(request, c, JSON_TYPES)
    received = ev.now_ms()
    client = request.client.host if request.client else "unknown"
    doc = parse_json(body)
    sid = doc.get("session_id") if isinstance(doc, dict) else None
    app = await asyncio.to_thread(c.store.session_app, sid) if isinstance(sid, str) else None
    try:
        event = ev.from_hook(doc, received, c.settings, client, app)
    except ev.InvalidEvent as exc:
        raise BadRequest(422, "invalid_event", str(exc)) from None
    await c.store.write([event])
    # An empty 204: Claude Code could read a 2xx body as a hook decision or injected context.
    return Response(status_code=204)


def _decode(
    body: bytes, kind: str, settings: Settings
) -> tuple[bool, list[ev.Event], list[dict[str, Any]]]:
    """(single object?, valid events, rejected items with index and reason)."""
    received = ev.now_ms()
    single = False
    items: list[Any]
    if kind in NDJSON_TYPES:
        items = parse_ndjson(body)
    else:
        doc = parse_json(body)
        if isinstance(doc, dict):
            single, items = True, [doc]
        elif isinstance(doc, list):
            items = doc
        else:
            raise BadRequest(
                422, "invalid_event", "body must be an event object or an array of them"
            )
    if len(items) > settings.max_batch_events:
        raise BadRequest(
            413,
            "too_large",
            f"{len(items)} events in one batch; at most {settings.max_batch_events}",
        )
    good: list[ev.Event] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, BadRequest):
                raise ev.InvalidEvent(item.message)
            good.append(ev.from_envelope(item, received, settings))
        except ev.InvalidEvent as exc:
            rejected.append({"index": index, "reason": str(exc)})
    return single, good, rejected


@router.post(
    "/v1/events",
    responses={**ERRORS, 409: {"description": "The single event posted is a duplicate (success)"}},
    summary="Hook script envelopes: one object, a JSON array, or NDJSON",
)
async def post_events(request: Request) -> Response:
    c = ctx(request)
    body, kind = await authorized_body(request, c, JSON_TYPES + NDJSON_TYPES)
    # A large body takes a while to decode and redact: off the event loop, so health checks and
    # other clients are still served meanwhile.
    if len(body) > OFFLOAD_BYTES:
        single, good, rejected = await asyncio.to_thread(_decode, body, kind, c.settings)
    else:
        single, good, rejected = _decode(body, kind, c.settings)
    if single and rejected:
        raise BadRequest(422, "invalid_event", rejected[0]["reason"])
    if rejected:
        c.metrics.rejected.labels(reason="invalid_event").inc(len(rejected))
    inserted = await c.store.write(good)
    accepted = sum(inserted)
    duplicate = len(inserted) - accepted
    if duplicate:
        c.metrics.duplicates.inc(duplicate)
    result = {"accepted": accepted, "duplicate": duplicate, "rejected": rejected}
    return json_response(result, status=409 if single and duplicate else 200)
