"""Relay pieces without a receiver: configuration, the breaker, ids, the disabled state."""

from __future__ import annotations

import re

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from collector.otlp.breaker import Breaker
from collector.otlp.export import RelayConfig, SignalTarget
from collector.otlp.ids import span_id, trace_context, trace_id
from collector.otlp.logs import add_log_record
from collector.otlp.relay import relay_config_from
from collector.settings import Settings, SettingsError
from tests.conftest import Harness


def test_no_endpoint_means_disabled(harness: Harness) -> None:
    body = harness.client.get("/readyz").json()
    assert body["relay"] == {"state": "disabled"}
    assert harness.metric("agentwatch_relay_state", state="disabled") == 1
    assert harness.metric("agentwatch_relay_state", state="ok") == 0


def relay_config(env: dict[str, str]) -> RelayConfig:
    """As the collector builds it: AGENTWATCH_RELAY_* through Settings, OTEL_* as given."""
    return relay_config_from(Settings.from_env(env), env)


def test_config_from_standard_variables() -> None:
    grpc = relay_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"})
    assert grpc.logs == grpc.traces == SignalTarget("http://otel:4317", "grpc")
    http = relay_config(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces",
            "AGENTWATCH_RELAY_SPAN_TIMEOUT_SECONDS": "60",
        }
    )
    assert http.logs == SignalTarget("http://otel:4318/v1/logs", "http/protobuf")
    assert http.traces == SignalTarget("http://tempo:4318/v1/traces", "http/protobuf")
    assert http.span_timeout_seconds == 60
    only_logs = relay_config(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317", "AGENTWATCH_RELAY_TRACES": "off"}
    )
    assert only_logs.traces is None and only_logs.logs is not None
    per_signal = relay_config(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
        }
    )
    assert per_signal.logs == SignalTarget("http://otel:4317/v1/logs", "http/protobuf")
    assert per_signal.traces == SignalTarget("http://otel:4317", "grpc")
    assert not relay_config({}).enabled
    assert not relay_config({"AGENTWATCH_RELAY_LOGS": "on"}).enabled  # no endpoint: off


def test_knobs_are_the_settings_defaults() -> None:
    config = relay_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"})
    settings = Settings()
    assert (config.timeout_seconds, config.batch_events, config.max_sessions) == (
        settings.relay_timeout_seconds,
        settings.relay_batch_events,
        settings.relay_max_sessions,
    )
    assert (config.backoff_base_seconds, config.backoff_max_seconds) == (0.5, 30.0)
    assert (config.breaker_failures, config.breaker_cooldown_seconds) == (5, 30.0)
    assert config.span_timeout_seconds == 1800.0


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "udp"},
            "OTEL_EXPORTER_OTLP_PROTOCOL must be one of",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "PROTOCOL must be one of",
        ),
        ({"AGENTWATCH_RELAY_BATCH_EVENTS": "-1"}, "AGENTWATCH_RELAY_BATCH_EVENTS must be > 0"),
        ({"AGENTWATCH_RELAY_LOGS": "maybe"}, "AGENTWATCH_RELAY_LOGS='maybe'"),
    ],
)
def test_bad_relay_values_are_settings_errors(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        relay_config(env)


def test_breaker_goes_ok_delayed_open_ok() -> None:
    now = [100.0]
    seen: list[str] = []
    b = Breaker(
        3, cooldown=30, backoff_base=1, backoff_max=8, on_state=seen.append, clock=lambda: now[0]
    )
    assert b.state == "ok" and b.wait_seconds() == 0
    b.failure("down")
    assert b.state == "delayed" and 0.5 <= b.wait_seconds() <= 1
    b.failure("down")
    assert 1 <= b.wait_seconds() <= 2  # exponential, with jitter
    b.failure("down")
    assert b.state == "circuit_open" and 24 <= b.wait_seconds() <= 36
    now[0] += 40
    assert b.wait_seconds() == 0  # the probe may go
    b.failure("still down")
    assert b.state == "circuit_open" and b.last_error == "still down"
    b.success()
    assert b.state == "ok" and b.consecutive == 0
    assert seen == ["delayed", "circuit_open", "ok"]


def _row(**kw: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "session_id": "s-1",
        "agent_id": "s-1",
        "hook_event": "Notification",
        "tool_use_id": None,
        "event_id": "e-1",
    }
    return base | kw


def test_trace_context_is_pure_and_matches_the_spans() -> None:
    trace = trace_id("s-1").hex()
    assert len(trace) == 32 and trace_id("s-1") != trace_id("s-2")
    assert trace_context(_row()) == (trace, span_id("s-1", "agent", "s-1").hex())
    tool = _row(hook_event="PostToolUse", tool_use_id="toolu_1")
    assert trace_context(tool) == (trace, span_id("s-1", "tool", "toolu_1").hex())
    prompt = _row(hook_event="UserPromptSubmit", event_id="e-9")
    assert trace_context(prompt) == (trace, span_id("s-1", "turn", "e-9").hex())
    sub = _row(hook_event="SubagentStop", agent_id="a-1")
    assert trace_context(sub) == (trace, span_id("s-1", "agent", "a-1").hex())
    assert trace_context(_row(session_id="", hook_event="AlertNotification")) == ("", "")
    assert trace_context(tool) == trace_context(dict(tool))  # no hidden state


def log_row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_id": "e1", "ts": 1_760_000_000_000, "received_at": 1_760_000_000_000,
        "source_app": "shop", "machine_id": "m-1", "session_id": "s1", "agent_id": "s1",
        "agent_type": None, "hook_event": "claude_code.api_request", "tool_name": None,
        "tool_use_id": None, "outcome": "", "source": "otel",
    }  # fmt: skip
    return row | over


def record_attributes(row: dict[str, object], payload: dict[str, object]) -> dict[str, object]:
    scope = ScopeLogs()
    add_log_record(scope, row, payload, None)
    (rec,) = scope.log_records
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in rec.attributes}


def test_a_log_record_names_its_machine_and_an_api_request_its_cost() -> None:
    """agentwatch.machine_id on every record (one Loki stream per machine); agentwatch.cost_usd,
    a double, only on Claude Code's own api_request events, which carry their cost."""
    native = record_attributes(log_row(), {"cost_usd": 0.0123, "model": "claude-x"})
    assert native["agentwatch.machine_id"] == "m-1"
    assert native["agentwatch.cost_usd"] == pytest.approx(0.0123)
    assert record_attributes(log_row(), {"cost_usd": 2})["agentwatch.cost_usd"] == 2.0
    for row, payload in [
        (log_row(), {"cost_usd": "n/a"}),
        (log_row(), {"cost_usd": True}),
        (log_row(), {}),
        (log_row(source="hook"), {"cost_usd": 1.5}),  # a hook's payload is not Claude Code's figure
        (log_row(hook_event="PostToolUse", source="hook"), {"cost_usd": 1.5}),
    ]:
        attrs = record_attributes(row, payload)
        assert "agentwatch.cost_usd" not in attrs and attrs["agentwatch.machine_id"] == "m-1"
