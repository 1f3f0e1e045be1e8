"""One stored event -> one OTLP log record (the Loki contract in the README).

Attributes follow the OpenTelemetry GenAI conventions where one exists (gen_ai.*), agentwatch.*
otherwise; Loki turns them into structured metadata (dots become underscores). Only the stored,
already redacted payload is read: nothing raw is added here.

Protobuf messages are filled in place with `.add()`: building them through keyword arguments or
the SDK's ReadableLogRecord + encoder costs three times as much per record (bench/relay.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from collector.native.events import API_REQUEST, PREFIX
from collector.otlp.ids import event_span
from collector.vocabulary import BLOCKED, ERROR, FAILURE_EVENTS, SOURCE_OTEL, HookEvent

SEVERITY = {ERROR: (17, "ERROR"), BLOCKED: (13, "WARN")}
INFO = (9, "INFO")
MAX_DETAIL = 200
MAX_ERROR = 500
NATIVE_API_REQUEST = PREFIX + API_REQUEST  # the stored hook_event of Claude Code's api_request
_INPUT_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description")


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _input_summary(payload: Mapping[str, Any]) -> str:
    tool_input = payload.get("tool_input")
    if not isinstance(tool_input, dict):
        return ""
    for key in _INPUT_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def error_text(hook: str, payload: Mapping[str, Any]) -> str:
    if hook not in FAILURE_EVENTS:
        return ""
    for key in ("error", "error_type", "reason"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return one_line(value, MAX_ERROR)
        if isinstance(value, dict | list):
            return one_line(str(value), MAX_ERROR)
    return "interrupted" if payload.get("is_interrupt") is True else ""


def summary(row: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    """The one-line human summary: the log body and agentwatch.detail."""
    hook = row["hook_event"]
    tool = row["tool_name"] or payload.get("tool_name") or ""
    agent = row["agent_type"] or ""
    if hook == HookEvent.PRE_TOOL_USE:
        what = f"{tool}: {_input_summary(payload)}"
    elif hook == HookEvent.POST_TOOL_USE:
        what = f"{tool} succeeded"
    elif hook == HookEvent.POST_TOOL_USE_FAILURE:
        what = f"{tool} failed: {error_text(hook, payload)}"
    elif hook == HookEvent.PERMISSION_REQUEST:
        what = f"{tool}: {_input_summary(payload)}"
    elif hook == HookEvent.USER_PROMPT_SUBMIT:
        prompt = payload.get("prompt")
        what = prompt if isinstance(prompt, str) else ""
    elif hook == HookEvent.NOTIFICATION:
        what = f"{payload.get('notification_type') or ''}: {payload.get('message') or ''}"
    elif hook in (HookEvent.SUBAGENT_START, HookEvent.SUBAGENT_STOP):
        what = f"{agent} {row['agent_id'] or ''}"
    elif hook == HookEvent.SESSION_START:
        what = f"{payload.get('source') or ''} {payload.get('model') or ''}"
    elif hook == HookEvent.SESSION_END:
        what = str(payload.get("reason") or "")
    elif hook == HookEvent.STOP_FAILURE:
        what = error_text(hook, payload)
    elif hook == HookEvent.ALERT_NOTIFICATION:
        what = f"{payload.get('alertname') or ''} {payload.get('status') or ''}"
    else:
        what = ""
    return one_line(f"{hook} {what}".rstrip(" :"), MAX_DETAIL)


def model_of(payload: Mapping[str, Any], usage: Mapping[str, Any] | None) -> str:
    model = payload.get("model")
    if isinstance(model, str) and model:
        return model
    if usage:
        return str(next(iter(usage)))
    return ""


def usage_attributes(usage: Mapping[str, Mapping[str, int]] | None) -> dict[str, int]:
    if not usage:
        return {}
    totals = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    for counts in usage.values():
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    return {
        "gen_ai.usage.input_tokens": totals["input"],
        "gen_ai.usage.output_tokens": totals["output"],
        "gen_ai.usage.cache_read.input_tokens": totals["cache_read"],
        "gen_ai.usage.cache_creation.input_tokens": totals["cache_creation"],
    }


def cost_usd(row: Mapping[str, Any], payload: Mapping[str, Any]) -> float | None:
    """The event's own cost in USD where it has one: Claude Code's api_request events carry
    cost_usd (stored in the payload as a number, collector/native/events.py). Hook events have
    none: a session's hook-derived cost is an estimate made over its whole usage
    (collector/accounting.py), not stored per event, so it is not made up here."""
    if row["source"] != SOURCE_OTEL or row["hook_event"] != NATIVE_API_REQUEST:
        return None
    value = payload.get("cost_usd")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 <= value < 1e9 else None


def agent_name(row: Mapping[str, Any]) -> str:
    if row["agent_type"]:
        return str(row["agent_type"])
    return "main" if (row["agent_id"] or row["session_id"]) == row["session_id"] else "subagent"


# Attributes whose values repeat from record to record: their KeyValue messages are built once
# and copied (in C) into each record, which halves the cost of a log record.
_REPEATED = frozenset(
    {
        "gen_ai.conversation.id",
        "gen_ai.agent.id",
        "gen_ai.agent.name",
        "gen_ai.tool.name",
        "gen_ai.request.model",
        "agentwatch.hook_event",
        "agentwatch.source_app",
        "agentwatch.machine_id",
        "agentwatch.outcome",
        "agentwatch.error",
        "gen_ai.operation.name",
    }
)


@lru_cache(maxsize=4096)
def _kv(key: str, value: str) -> KeyValue:
    kv = KeyValue(key=key)
    kv.value.string_value = value
    return kv


def put_attrs(attrs: Any, values: Mapping[str, Any]) -> None:
    """Append values to a repeated KeyValue field (of a log record, span or resource)."""
    for key, value in values.items():
        if isinstance(value, str):
            if key in _REPEATED:
                attrs.append(_kv(key, value))
            else:
                attrs.add(key=key).value.string_value = value
        elif isinstance(value, bool):
            attrs.add(key=key).value.bool_value = value
        elif isinstance(value, float):
            attrs.add(key=key).value.double_value = value
        else:
            attrs.add(key=key).value.int_value = value


def add_log_record(
    scope: ScopeLogs,
    row: Mapping[str, Any],
    payload: Mapping[str, Any],
    usage: Mapping[str, Mapping[str, int]] | None,
) -> None:
    hook = row["hook_event"]
    outcome = row["outcome"] or ""
    number, text = SEVERITY.get(outcome, INFO)
    detail = summary(row, payload)
    rec = scope.log_records.add(
        time_unix_nano=row["ts"] * 1_000_000,
        observed_time_unix_nano=row["received_at"] * 1_000_000,
        severity_number=number,
        severity_text=text,
    )
    rec.body.string_value = detail
    ids = event_span(row)
    if ids is not None:
        rec.trace_id, rec.span_id = ids
        rec.flags = 1  # sampled
    attrs: dict[str, Any] = {
        "gen_ai.conversation.id": row["session_id"],
        "gen_ai.agent.id": row["agent_id"] or row["session_id"],
        "gen_ai.agent.name": agent_name(row),
    }
    if row["tool_name"]:
        attrs["gen_ai.tool.name"] = row["tool_name"]
    if row["tool_use_id"]:
        attrs["gen_ai.tool.call.id"] = row["tool_use_id"]
    model = model_of(payload, usage)
    if model:
        attrs["gen_ai.request.model"] = model
    attrs.update(usage_attributes(usage))
    attrs["agentwatch.hook_event"] = hook
    attrs["agentwatch.source_app"] = row["source_app"]
    # One Loki stream per machine: the otel-collector moves this to the resource
    # (groupbyattrs/machine) and Loki indexes it (loki/config.yaml), so one machine's late spool
    # is not refused as too far behind the others' live events.
    attrs["agentwatch.machine_id"] = row["machine_id"]
    attrs["agentwatch.outcome"] = outcome
    attrs["agentwatch.event_id"] = row["event_id"]
    attrs["agentwatch.error"] = error_text(hook, payload)
    attrs["agentwatch.detail"] = detail
    cost = cost_usd(row, payload)
    if cost is not None:
        attrs["agentwatch.cost_usd"] = cost  # per session in Loki: sum_over_time ... | unwrap
    put_attrs(rec.attributes, attrs)
