"""POST /v1/alerts: Alertmanager's webhook receiver. Each alert in a notification is stored as
an AlertNotification event and counted in agentwatch_alert_notifications_total.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from collector import events as ev
from collector.body import JSON_TYPES, BadRequest, parse_json
from collector.context import ctx
from collector.redact import redact
from collector.routes.ingest import ERRORS, authorized_body
from collector.vocabulary import HookEvent

router = APIRouter(tags=["alerts"])
ALERT_KEYS = (
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
)


def _event(alert: Any, notification: dict[str, Any], received: int) -> ev.Event:
    if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
        raise BadRequest(422, "invalid_event", "each alert needs a labels object")
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        raise BadRequest(422, "invalid_event", "alert status must be firing or resolved")
    payload = {k: alert.get(k) for k in ALERT_KEYS}
    payload["receiver"] = notification.get("receiver")
    text = redact(orjson.dumps(payload).decode())
    # Alertmanager retries a failed delivery with the same content: the same id dedupes it.
    key = "|".join(str(alert.get(k)) for k in ("fingerprint", "status", "startsAt", "endsAt"))
    alertname = str(alert["labels"].get("alertname", "unknown"))[:256]
    return ev.Event(
        event_id="alert-" + hashlib.sha256(key.encode()).hexdigest()[:40],
        ts=received,
        received_at=received,
        source_app="alertmanager",
        machine_id="alertmanager",
        session_id="",
        agent_id=None,
        parent_agent_id=None,
        agent_type=None,
        hook_event=HookEvent.ALERT_NOTIFICATION,
        tool_name=alertname,
        tool_use_id=None,
        outcome="error" if status == "firing" else "success",
        usage=None,
        payload=text,
    )


@router.post("/v1/alerts", responses=ERRORS, summary="Alertmanager webhook receiver")
async def post_alerts(request: Request) -> Response:
    c = ctx(request)
    # Alertmanager cannot sign bodies: this route takes the bearer token alone.
    body, _ = await authorized_body(request, c, JSON_TYPES, signed=False)
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("alerts"), list):
        raise BadRequest(
            422, "invalid_event", "expected an Alertmanager webhook body with an alerts list"
        )
    received = ev.now_ms()
    events = [_event(a, doc, received) for a in doc["alerts"]]
    inserted = await c.store.write(events)
    m = c.metrics
    for event, new in zip(events, inserted, strict=True):
        if new:
            status = "firing" if event.outcome == "error" else "resolved"
            m.alert_notifications.labels(
                alertname=m.cap_alertname(event.tool_name), status=status
            ).inc()
    return Response(status_code=200)
