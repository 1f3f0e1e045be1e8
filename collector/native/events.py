"""Claude Code's own log events (an ExportLogsServiceRequest) -> Events of their sessions.

Each log record is one event of Claude Code's (body `claude_code.<name>`, attribute
`event.name` the bare name) and becomes one Event with source "otel" beside the hook events of
its session. Attribute values may arrive as any OTLP type (numbers often as strings): they are
read tolerantly. A record without a session.id has no place in a timeline and is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from collector.events import Event, InvalidEvent, prepare_payload
from collector.settings import Settings
from collector.vocabulary import ERROR, SOURCE_OTEL, SUCCESS

PREFIX = "claude_code."
API_REQUEST, TOOL_RESULT = "api_request", "tool_result"
# api_request attribute -> the collector's token type
TOKEN_ATTRIBUTES = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache_read",
    "cache_creation_tokens": "cache_creation",
}
# The event_id: a UUID named by what makes a record unique, so a re-sent batch is a duplicate.
ID_NAMESPACE = uuid.UUID("0b6e3c1e-5d0f-4f4e-9a57-6c1d2f0a7e11")
ID_ATTRIBUTES = ("session.id", "event.name", "event.timestamp", "event.sequence", "prompt.id")
_MAX_STR = 256
_MAX_DEPTH = 16  # nested array/kvlist values deeper than this are cut
_MIN_TS_MS = 1_577_836_800_000  # 2020-01-01: older timestamps are clock errors
_MAX_FUTURE_MS = 24 * 3600 * 1000
_MAX_REASONS = 5  # rejection reasons spelled out in the partial-success message

AppLookup = Callable[[str], str | None]


@dataclass
class Converted:
    """What a request's log records became."""

    events: list[Event] = field(default_factory=list)
    records: int = 0
    rejected: list[str] = field(default_factory=list)  # "record <i>: <reason>", one a rejection

    def error_message(self) -> str:
        shown = "; ".join(self.rejected[:_MAX_REASONS])
        more = len(self.rejected) - _MAX_REASONS
        return shown + (f"; and {more} more" if more > 0 else "")


def count_records(request: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def to_events(
    request: ExportLogsServiceRequest,
    received: int,
    settings: Settings,
    client: str,
    session_app: AppLookup,
) -> Converted:
    """One Event per log record that has a session.id. `session_app(session_id)` gives the
    project of a session the store already holds (asked once per distinct session: it reads the
    store, so call this off the event loop)."""
    out = Converted()
    apps: dict[str, str] = {}
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        machine_id = _machine_id(resource, client)
        for sl in rl.scope_logs:
            for record in sl.log_records:
                index = out.records
                out.records += 1
                try:
                    event = _event(record, resource, machine_id, received, settings)
                except InvalidEvent as exc:
                    out.rejected.append(f"log record {index}: {exc}")
                    continue
                sid = event.session_id
                if sid not in apps:
                    apps[sid] = session_app(sid) or "unknown"
                event.source_app = apps[sid]
                out.events.append(event)
    return out


def _event(
    record: LogRecord, resource: dict[str, Any], machine_id: str, received: int, settings: Settings
) -> Event:
    attrs = attributes(record.attributes)
    session_id = _text(attrs.get("session.id"))
    if not session_id:
        raise InvalidEvent("no session.id attribute")
    body = _value(record.body, 0) if record.HasField("body") else None
    name = _text(attrs.get("event.name"))
    if isinstance(body, str) and 0 < len(body) <= _MAX_STR:
        hook_event = body
    elif name:
        hook_event = PREFIX + name
    else:
        raise InvalidEvent("neither a string body nor an event.name attribute names the event")
    name = name or hook_event.removeprefix(PREFIX)
    payload = {k: _numeric(k, v) for k, v in attrs.items()}
    payload["event.name"] = name
    version = _text(resource.get("service.version"))
    if version:
        payload["claude_code.version"] = version
    usage, cost = _usage(attrs) if name == API_REQUEST else (None, None)
    return Event(
        event_id=_event_id(attrs, name, record),
        ts=_ts(attrs, record, received),
        received_at=received,
        source_app="unknown",  # the session's project, filled in by to_events
        machine_id=machine_id,
        session_id=session_id,
        agent_id=session_id,  # the main agent: which subagent a native event is of is unknown
        parent_agent_id=None,
        agent_type="main",
        hook_event=hook_event,
        tool_name=_text(attrs.get("tool_name")),
        tool_use_id=_text(attrs.get("tool_use_id")),
        outcome=_outcome(attrs) if name == TOOL_RESULT else "",
        usage=usage,
        payload=prepare_payload(payload, settings),
        source=SOURCE_OTEL,
        cost_usd=cost,
        user=_user(attrs, settings),
    )


# Attributes that are counts, sizes, times or money, which Claude Code sends as strings: stored
# as numbers, so they read as numbers (and "input_tokens": "1200" is no "token" to redact).
_NUMERIC_SUFFIXES = ("_tokens", "_ms", "_bytes", "_length", "_usd", "_micros", ".sequence")
_NUMERIC_NAMES = frozenset({"attempt", "status_code"})


def _numeric(key: str, value: Any) -> Any:
    if not isinstance(value, str) or not (
        key.endswith(_NUMERIC_SUFFIXES) or key.startswith("num_") or key in _NUMERIC_NAMES
    ):
        return value
    number = _number(value)
    if number is None:
        return value
    return int(number) if number.is_integer() and "." not in value else number


# -- attribute values --------------------------------------------------------------------------
def attributes(kvs: list[KeyValue] | Any) -> dict[str, Any]:
    """OTLP attributes as a flat dict of plain values (a repeated key: the last one wins)."""
    return {kv.key: _value(kv.value, 0) for kv in kvs}


def _value(v: AnyValue, depth: int) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        if depth >= _MAX_DEPTH:
            return "[nested too deep]"
        return [_value(item, depth + 1) for item in v.array_value.values]
    if kind == "kvlist_value":
        if depth >= _MAX_DEPTH:
            return "[nested too deep]"
        return {kv.key: _value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()  # as OTLP JSON writes bytes
    return getattr(v, kind)


def _text(value: Any) -> str | None:
    """A short string attribute (ids, names); anything else is taken as absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= _MAX_STR:
        return value
    return None


def _number(value: Any) -> float | None:
    """A finite number, from a number or a string that holds one ("1000", "0.5")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


# -- fields ------------------------------------------------------------------------------------
def _event_id(attrs: dict[str, Any], name: str, record: LogRecord) -> str:
    key = [str(attrs.get(k, "")) for k in ID_ATTRIBUTES]
    key[1] = name
    if "event.timestamp" not in attrs and "event.sequence" not in attrs:
        # Not Claude Code's usual record: its time and all its attributes tell it apart.
        key.append(str(record.time_unix_nano))
        key.append(hashlib.sha256(_sorted_json(attrs)).hexdigest())
    return str(uuid.uuid5(ID_NAMESPACE, "\x1f".join(key)))


def _sorted_json(attrs: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits
        return repr(sorted(attrs.items())).encode()


def _ts(attrs: dict[str, Any], record: LogRecord, received: int) -> int:
    """event.timestamp, else the record's time, else when it was received (ms)."""
    candidates = [_iso_ms(attrs.get("event.timestamp"))]
    if record.time_unix_nano:
        candidates.append(record.time_unix_nano // 1_000_000)
    for ts in candidates:
        if ts is not None and _MIN_TS_MS <= ts <= received + _MAX_FUTURE_MS:
            return ts
    return received


def _iso_ms(value: Any) -> int | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _machine_id(resource: dict[str, Any], client: str) -> str:
    """Stable per machine, never the raw host: a hash of the host's identity where the resource
    names one (host.id, host.name), else of the address the telemetry came from."""
    host = [str(resource[k]) for k in ("host.id", "host.name") if resource.get(k)]
    seed = "\x1f".join(host) if host else client
    return "otel-" + hashlib.sha256(seed.encode()).hexdigest()[:12]


def _usage(attrs: dict[str, Any]) -> tuple[dict[str, dict[str, int]] | None, float | None]:
    """(tokens by model and type, Claude Code's cost in USD) of an api_request."""
    cost = _number(attrs.get("cost_usd"))
    if cost is not None and not 0 <= cost < 1e9:
        cost = None
    model = _text(attrs.get("model"))
    if model is None:
        return None, cost
    counts: dict[str, int] = {}
    for attr, kind in TOKEN_ATTRIBUTES.items():
        n = _number(attrs.get(attr))
        if n is not None and 0 <= n < 10**12 and n == int(n):
            counts[kind] = int(n)
    return ({model: counts} if counts else None), cost


def _outcome(attrs: dict[str, Any]) -> str:
    """A tool_result's outcome, from its `success` field (never from any text)."""
    return SUCCESS if _flag(attrs.get("success")) else ERROR


def _user(attrs: dict[str, Any], settings: Settings) -> str | None:
    """Claude Code's user.id (a hash), or the signed-in e-mail where the operator opted in."""
    if settings.user_label == "email":
        email = _text(attrs.get("user.email"))
        if email:
            return email
    return _text(attrs.get("user.id"))
