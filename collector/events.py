"""Turning what clients send (hook envelopes, raw hook JSON) into stored Events.

Validation is hand-written rather than a pydantic model per event: ingest handles tens of
thousands of events a second and every microsecond per event shows in the benchmark.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from collector.redact import redact
from collector.settings import Settings
from collector.vocabulary import (
    BLOCKED,
    ERROR,
    FAILURE_EVENTS,
    SOURCE_HOOK,
    SUCCESS,
    TOKEN_TYPES,
    HookEvent,
)

# AGENTWATCH_CAPTURE=metadata keeps only these payload keys: ids, names, kinds, flags and
# numbers. Everything else (prompts, tool input and output, messages, summaries, permission
# rules, error texts, and whatever fields a newer Claude Code adds) is dropped.
METADATA_KEYS = frozenset(
    (
        "session_id",
        "transcript_path",
        "agent_transcript_path",
        "cwd",
        "hook_event_name",
        "permission_mode",
        "prompt_id",
        "agent_id",
        "agent_type",
        "tool_name",
        "tool_use_id",
        "source",
        "model",
        "reason",
        "trigger",
        "notification_type",
        "stop_hook_active",
        "is_interrupt",
        "duration_ms",
        "effort",
        # Claude Code's own events (source otel): ids, counts, kinds; never prompt or response
        # text, tool parameters, error texts or the e-mail.
        "session.id",
        "event.name",
        "event.timestamp",
        "event.sequence",
        "prompt.id",
        "user.id",
        "terminal.type",
        "claude_code.version",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "cache_creation_5m_tokens",
        "cache_creation_1h_tokens",
        "cost_usd",
        "cost_usd_micros",
        "ttft_ms",
        "request_id",
        "speed",
        "query_source",
        "success",
        "decision",
        "decision_type",
        "decision_source",
        "tool_source",
        "tool_input_size_bytes",
        "tool_result_size_bytes",
        "mcp_server_scope",
        "status_code",
        "attempt",
        "prompt_length",
        "response_length",
        "message.uuid",
        "hook_event",
        "hook_name",
        "num_hooks",
        "num_success",
        "num_blocking",
        "num_non_blocking_error",
        "num_cancelled",
        "total_duration_ms",
    )
)
# ... and, on these events only, the key that holds a kind rather than a text.
METADATA_KEYS_OF = {HookEvent.STOP_FAILURE: frozenset(("error",))}
# Kept when a payload is too big even after capping: what identifies the event.
CONTENT_KEYS = (
    "prompt",
    "tool_input",
    "tool_response",
    "last_assistant_message",
    "message",
    "custom_instructions",
    "compact_summary",
    "error",
    "error_details",
    "tool_calls",
    "permission_suggestions",
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$")
_MIN_TS_MS = 1_577_836_800_000  # 2020-01-01: older timestamps are clock errors
_MAX_FUTURE_MS = 24 * 3600 * 1000
_MAX_STR = 256


class InvalidEvent(ValueError):
    """The item cannot be stored; the message says why (it is sent back to the client)."""


@dataclass(slots=True)
class Event:
    event_id: str
    ts: int
    received_at: int
    source_app: str
    machine_id: str
    session_id: str
    agent_id: str | None
    parent_agent_id: str | None
    agent_type: str | None
    hook_event: str
    tool_name: str | None
    tool_use_id: str | None
    outcome: str
    usage: dict[str, dict[str, int]] | None
    payload: str  # redacted, capped JSON text
    input_hash: str | None = None  # tool name + input digest, for loop detection
    spool_dropped: int = 0
    cost_state: dict[str, Any] | None = None  # Claude Code's own session totals (SessionEnd)
    # `hook`, or `otel`: one of Claude Code's own OpenTelemetry log events (hook_event is its
    # name, e.g. claude_code.api_request), whose usage and cost_usd are Claude Code's figures.
    source: str = SOURCE_HOOK
    cost_usd: float | None = None
    user: str | None = None  # Claude Code's user.id (a hash), or e-mail where the operator opts in


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string")
    if len(value) > _MAX_STR:
        raise InvalidEvent(f"{key} is longer than {_MAX_STR} characters")
    return value


def _ts(value: Any, received_at: int) -> int:
    if value is None:
        return received_at
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("ts must be epoch milliseconds (a number)")
    ts = int(value)
    if ts < _MIN_TS_MS or ts > received_at + _MAX_FUTURE_MS:
        raise InvalidEvent("ts is out of range (before 2020 or more than 24 h in the future)")
    return ts


def _usage(value: Any) -> dict[str, dict[str, int]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 50:
        raise InvalidEvent("usage must be an object of model -> token counts")
    out: dict[str, dict[str, int]] = {}
    for model, counts in value.items():
        if not isinstance(counts, dict) or len(model) > _MAX_STR:
            raise InvalidEvent("usage must be an object of model -> token counts")
        clean: dict[str, int] = {}
        for kind, n in counts.items():
            if kind not in TOKEN_TYPES:
                raise InvalidEvent(f"usage type {kind!r} is not one of {TOKEN_TYPES}")
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 10**12:
                raise InvalidEvent("usage counts must be non-negative integers")
            clean[kind] = n
        out[model] = clean
    return out


def _cost_state(value: Any) -> dict[str, Any] | None:
    """Claude Code's totals as the hook sends them: {"total_cost_usd", "models": {model: counts
    and "cost_usd"}}."""
    if value is None:
        return None
    bad = InvalidEvent(
        "cost_state must be {total_cost_usd: number, models: {model: {input, output, "
        "cache_read, cache_creation: integers, cost_usd: number}}}"
    )
    if not isinstance(value, dict) or not isinstance(value.get("models"), dict):
        raise bad
    total = value.get("total_cost_usd")
    if isinstance(total, bool) or not isinstance(total, int | float) or not 0 <= total < 1e9:
        raise bad
    models: dict[str, dict[str, Any]] = {}
    for model, m in value["models"].items():
        if not isinstance(m, dict) or len(model) > _MAX_STR or len(models) >= 50:
            raise bad
        counts: dict[str, Any] = {}
        for kind in TOKEN_TYPES:
            n = m.get(kind, 0)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 10**12:
                raise bad
            counts[kind] = n
        cost = m.get("cost_usd", 0.0)
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < 1e9:
            raise bad
        counts["cost_usd"] = float(cost)
        models[model] = counts
    return {"total_cost_usd": float(total), "models": models}


def _cap(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        if len(value) > limit:
            return value[:limit] + f"…[truncated {len(value) - limit} chars]"
        return value
    if isinstance(value, dict):
        return {k: _cap(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap(v, limit) for v in value]
    return value


def prepare_payload(payload: dict[str, Any], settings: Settings) -> str:
    """Redacted, size-capped JSON text of a hook payload.

    Redaction runs on the full text first: capping first could cut a secret in half and leave
    a prefix that no pattern recognises any more.
    """
    if settings.capture == "metadata":
        hook_event = payload.get("hook_event_name")
        extra = METADATA_KEYS_OF.get(str(hook_event), frozenset())
        kept = {k: v for k, v in payload.items() if k in METADATA_KEYS or k in extra}
        if hook_event == HookEvent.POST_TOOL_BATCH:  # which calls, not what they did
            kept["tool_calls"] = [
                {"tool_use_id": i, "tool_name": n} for i, n in batch_calls(payload)
            ]
        payload = kept
    try:
        text = redact(orjson.dumps(payload).decode())
    except TypeError as exc:  # e.g. an integer beyond 64 bits
        raise InvalidEvent(f"payload cannot be encoded: {exc}") from None
    if len(text) <= settings.max_field_chars:
        return text
    capped = orjson.dumps(_cap(orjson.loads(text), settings.max_field_chars)).decode()
    if len(capped) > settings.max_payload_bytes:
        keep = {k: v for k, v in payload.items() if k not in CONTENT_KEYS}
        keep["_truncated"] = f"payload over {settings.max_payload_bytes} bytes"
        capped = redact(orjson.dumps(_cap(keep, 256)).decode())
    return capped


def input_digest(tool_input: Any) -> str:
    """64 bits of hash of a tool input, key order aside (the store keeps it for loop queries)."""
    return hashlib.blake2b(
        orjson.dumps(tool_input, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def _input_hash(tool_name: str | None, payload: dict[str, Any]) -> str | None:
    if not tool_name or "tool_input" not in payload:
        return None
    return f"{tool_name}:{input_digest(payload['tool_input'])}"


def batch_calls(payload: Any) -> list[tuple[str, str | None]]:
    """(tool_use_id, tool_name) of each call a PostToolBatch lists.

    A listed call with no end event of its own (TOOL_END_EVENTS) by then never ran: refused for
    want of a permission in a headless run, or blocked by Claude Code before PreToolUse. The
    batch ends it, as blocked (the tree, the spans and the tool-call counter all read it so)."""
    calls = payload.get("tool_calls") if isinstance(payload, dict) else None
    if not isinstance(calls, list):
        return []
    out = []
    for call in calls:
        if isinstance(call, dict) and isinstance(call.get("tool_use_id"), str):
            name = call.get("tool_name")
            out.append((call["tool_use_id"], name if isinstance(name, str) else None))
    return out


def outcome_of(hook_event: str, payload: dict[str, Any]) -> str:
    if hook_event == HookEvent.PERMISSION_DENIED:
        return BLOCKED
    if hook_event == HookEvent.POST_TOOL_USE_FAILURE:
        return BLOCKED if payload.get("is_interrupt") is True else ERROR
    if hook_event in FAILURE_EVENTS:
        return ERROR
    if hook_event == HookEvent.POST_TOOL_USE:
        return SUCCESS
    return ""


def from_envelope(env: Any, received_at: int, settings: Settings) -> Event:
    """An Event from the hook script's envelope (built by hooks/awhook/main.py build_envelope)."""
    if not isinstance(env, dict):
        raise InvalidEvent("each event must be a JSON object")
    event_id = env.get("event_id")
    if not isinstance(event_id, str) or not _ID.match(event_id):
        raise InvalidEvent("event_id must be a string of 8-128 characters [A-Za-z0-9._:-]")
    payload = env.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidEvent("payload must be a JSON object")
    dropped = env.get("spool_dropped", 0)
    if isinstance(dropped, bool) or not isinstance(dropped, int) or dropped < 0:
        raise InvalidEvent("spool_dropped must be a non-negative integer")
    event = _build(
        event_id,
        _ts(env.get("ts"), received_at),
        received_at,
        env,
        payload,
        _usage(env.get("usage")),
        settings,
        dropped,
    )
    event.cost_state = _cost_state(env.get("cost_state"))
    event.user = _opt_str(env, "user")
    return event


def from_hook(
    payload: Any, received_at: int, settings: Settings, client: str, session_app: str | None = None
) -> Event:
    """An Event from the raw JSON Claude Code gives a hook (what a `type: "http"` hook posts).

    An http hook has no CLAUDE_PROJECT_DIR, and its cwd follows the agent's `cd`s: the project is
    the session's (`session_app`, from its SessionStart, which runs as a command hook) when the
    session is known, else the basename of cwd."""
    if not isinstance(payload, dict):
        raise InvalidEvent("the hook body must be a JSON object")
    meta = {
        "machine_id": "http-" + hashlib.sha256(client.encode()).hexdigest()[:12],
        "source_app": session_app or _source_app(payload),
    }
    return _build(str(uuid.uuid4()), received_at, received_at, meta, payload, None, settings, 0)


def _source_app(payload: dict[str, Any]) -> str:
    cwd = payload.get("cwd")
    if isinstance(cwd, str) and cwd.strip("/"):
        return cwd.rstrip("/").rsplit("/", 1)[-1][:_MAX_STR]
    return "unknown"


def _build(
    event_id: str,
    ts: int,
    received_at: int,
    env: dict[str, Any],
    payload: dict[str, Any],
    usage: dict[str, dict[str, int]] | None,
    settings: Settings,
    dropped: int,
) -> Event:
    # Envelope fields win; the payload (Claude Code's own JSON) fills what the envelope lacks.
    def field(key: str, payload_key: str | None = None) -> str | None:
        return _opt_str(env, key) or _opt_str(payload, payload_key or key)

    hook_event = field("hook_event", "hook_event_name")
    if not hook_event:
        raise InvalidEvent("hook_event (or payload.hook_event_name) is required")
    session_id = field("session_id")
    if not session_id:
        raise InvalidEvent("session_id (or payload.session_id) is required")
    sub_id = _opt_str(payload, "agent_id")
    agent_id = _opt_str(env, "agent_id") or sub_id or session_id
    parent = _opt_str(env, "parent_agent_id")
    if parent is None and agent_id != session_id:
        parent = session_id
    tool_name = field("tool_name")
    return Event(
        event_id=event_id,
        ts=ts,
        received_at=received_at,
        source_app=_opt_str(env, "source_app") or _source_app(payload),
        machine_id=_opt_str(env, "machine_id") or "unknown",
        session_id=session_id,
        agent_id=agent_id,
        parent_agent_id=parent,
        agent_type=field("agent_type") or (None if parent else "main"),
        hook_event=hook_event,
        tool_name=tool_name,
        tool_use_id=field("tool_use_id"),
        outcome=outcome_of(hook_event, payload),
        usage=usage,
        payload=prepare_payload(payload, settings),
        input_hash=_input_hash(tool_name, payload)
        if hook_event == HookEvent.PRE_TOOL_USE
        else None,
        spool_dropped=dropped,
    )
