"""What the collector derives from events: loops, waiting for input, durations, capped labels."""

from __future__ import annotations

import time
from typing import Any

import pytest

from collector.accounting import COST_SOURCES
from collector.metrics import LabelCap
from tests.conftest import BACKENDS, Harness, envelope


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """These tests run on both stores (tests/conftest.py)."""
    return str(request.param)


def send(h: Harness, *envs: dict[str, Any]) -> None:
    r = h.post("/v1/events", list(envs))
    assert r.status_code == 200 and r.json()["accepted"] == len(envs), r.text


def call(session: str, command: str, **kw: Any) -> dict[str, Any]:
    return envelope(session_id=session, payload={"tool_input": {"command": command}}, **kw)


def test_loop_counted_once_when_a_call_repeats_more_than_n_times(make_harness: Any) -> None:
    h = make_harness(loop_threshold=5)
    send(h, *[call("s-loop", "make test") for _ in range(5)])
    assert h.metric("agentwatch_agent_loops_total", tool="Bash", source_app="shop") == 0
    send(h, call("s-loop", "make test"))  # the 6th in a row
    assert h.metric("agentwatch_agent_loops_total", tool="Bash", source_app="shop") == 1
    send(h, *[call("s-loop", "make test") for _ in range(4)])  # same run: not counted again
    assert h.metric("agentwatch_agent_loops_total", tool="Bash", source_app="shop") == 1
    send(h, call("s-loop", "ls"), *[call("s-loop", "make test") for _ in range(6)])
    assert h.metric("agentwatch_agent_loops_total", tool="Bash", source_app="shop") == 2


def test_interleaved_sessions_do_not_make_a_loop(make_harness: Any) -> None:
    h = make_harness(loop_threshold=2)
    send(h, *[call(f"s-{i % 2}", f"cmd {i // 2 % 2}") for i in range(12)])
    assert h.metric("agentwatch_agent_loops_total", tool="Bash", source_app="shop") == 0


def test_waiting_for_input_until_the_next_event(make_harness: Any) -> None:
    h = make_harness(waiting_seconds=0)
    prompt = envelope(
        session_id="s-wait",
        hook_event="Notification",
        payload={"hook_event_name": "Notification", "notification_type": "permission_prompt"},
    )
    send(h, prompt)
    time.sleep(0.01)
    assert h.metric("agentwatch_sessions_waiting_for_input") == 1
    send(h, envelope(session_id="s-wait", hook_event="PostToolUse"))
    assert h.metric("agentwatch_sessions_waiting_for_input") == 0


def test_permission_request_not_yet_over_the_threshold(make_harness: Any) -> None:
    h = make_harness(waiting_seconds=3600)
    send(h, envelope(session_id="s-p", hook_event="PermissionRequest"))
    assert h.metric("agentwatch_sessions_waiting_for_input") == 0


def test_tool_outcomes_and_duration(harness: Harness) -> None:
    now = int(time.time() * 1000)
    pre = envelope(session_id="s-t", hook_event="PreToolUse", tool_use_id="toolu_1", ts=now)
    ok = envelope(session_id="s-t", hook_event="PostToolUse", tool_use_id="toolu_1", ts=now + 2000)
    fail = envelope(
        session_id="s-t",
        hook_event="PostToolUseFailure",
        payload={"is_interrupt": False, "error": "exit 1 error error"},
    )
    interrupted = envelope(
        session_id="s-t", hook_event="PostToolUseFailure", payload={"is_interrupt": True}
    )
    # Output that *mentions* errors is still a success: failure comes from the event type.
    noisy = envelope(
        session_id="s-t",
        hook_event="PostToolUse",
        payload={"tool_response": {"stdout": "ERROR: 0 errors found"}},
    )
    send(h := harness, pre, ok, fail, interrupted, noisy)
    assert h.metric("agentwatch_tool_calls_total", tool="Bash", outcome="success") == 2
    assert h.metric("agentwatch_tool_calls_total", tool="Bash", outcome="error") == 1
    assert h.metric("agentwatch_tool_calls_total", tool="Bash", outcome="blocked") == 1
    assert h.metric("agentwatch_tool_duration_seconds_count", tool="Bash") == 1
    assert h.metric("agentwatch_tool_duration_seconds_sum", tool="Bash") == 2.0


def test_tokens_cost_and_session_duration(harness: Harness) -> None:
    now = int(time.time() * 1000)
    usage = {"claude-opus-4-1": {"input": 1000, "output": 2000, "cache_read": 10_000}}
    send(
        harness,
        envelope(session_id="s-c", hook_event="SessionStart", ts=now - 90_000),
        envelope(session_id="s-c", hook_event="Stop", usage=usage, ts=now - 1000),
        envelope(session_id="s-c", hook_event="SessionEnd", ts=now),
    )
    m = harness.metric
    assert (
        m(
            "agentwatch_tokens_total",
            model="claude-opus-4-1",
            type="input",
            source_app="shop",
            user="unknown",
        )
        == 1000
    )
    assert (
        m(
            "agentwatch_tokens_total",
            model="claude-opus-4-1",
            type="cache_read",
            source_app="shop",
            user="unknown",
        )
        == 10_000
    )
    # opus 4.1: $15 in, $75 out per MTok; cache reads at 0.1x input.
    expected = 1000 * 15e-6 + 2000 * 75e-6 + 10_000 * 1.5e-6
    labels = {"source_app": "shop", "user": "unknown", "cost_source": "estimated"}
    cost = m("agentwatch_cost_usd_total", model="claude-opus-4-1", **labels)
    assert abs(cost - expected) < 1e-9
    assert m("agentwatch_session_duration_seconds_count", source_app="shop") == 1
    assert m("agentwatch_session_duration_seconds_sum", source_app="shop") == 90.0
    assert m("agentwatch_sessions_active", source_app="shop") == 0


def test_active_sessions(harness: Harness) -> None:
    send(harness, envelope(session_id="a1"), envelope(session_id="a2"))
    assert harness.metric("agentwatch_sessions_active", source_app="shop") == 2


def test_label_values_are_capped(make_harness: Any) -> None:
    h = make_harness(label_cap=3)
    send(h, *[envelope(hook_event="PostToolUse", tool_name=f"tool{i}") for i in range(6)])
    assert h.metric("agentwatch_tool_calls_total", tool="tool2", outcome="success") == 1
    assert h.metric("agentwatch_tool_calls_total", tool="other", outcome="success") == 3


def test_label_cap_keeps_first_values() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ["a", "b", "c", "a", None]] == ["a", "b", "other", "a", "other"]


def test_claude_codes_own_totals_settle_the_session_without_counting_twice(
    harness: Harness,
) -> None:
    """Live usage is estimated; SessionEnd's cost-state replaces the session's figures and the
    counters get only what it adds; a resumed session's next settlement adds only its growth."""
    opus = "claude-opus-5-5"
    live = {opus: {"input": 1000, "output": 100, "cache_read": 0, "cache_creation": 0}}

    def state(inp: int, out: int, usd: float) -> dict[str, Any]:
        counts = {"input": inp, "output": out, "cache_read": 50, "cache_creation": 0}
        return {"total_cost_usd": usd, "models": {opus: {**counts, "cost_usd": usd}}}

    send(
        harness,
        envelope(session_id="s-x", hook_event="Stop", usage=live),
        envelope(session_id="s-x", hook_event="SessionEnd", cost_state=state(1500, 120, 0.01)),
    )

    def m(name: str, **labels: str) -> float:
        return harness.metric(name, source_app="shop", user="unknown", **labels)

    estimated = 1000 * 4e-6 + 100 * 20e-6  # opus 5.5 as Claude Code 2.1.328 prices it
    assert m("agentwatch_cost_usd_total", model=opus, cost_source="estimated") == estimated
    assert abs(m("agentwatch_cost_usd_total", model=opus, cost_source="exact") - 0.004) < 1e-12
    assert m("agentwatch_tokens_total", model=opus, type="input") == 1500
    assert m("agentwatch_tokens_total", model=opus, type="cache_read") == 50
    session = harness.client.get("/v1/sessions/s-x").json()
    assert session["cost_usd"] == 0.01 and session["cost_source"] == "exact"
    assert session["usage"] == {
        opus: {"input": 1500, "output": 120, "cache_read": 50, "cache_creation": 0}
    }
    # --resume: the same session, Claude Code's totals carry over.
    send(
        harness,
        envelope(session_id="s-x", hook_event="Stop", usage=live),
        envelope(session_id="s-x", hook_event="SessionEnd", cost_state=state(2600, 230, 0.02)),
    )
    assert m("agentwatch_tokens_total", model=opus, type="input") == 2600
    total = sum(m("agentwatch_cost_usd_total", model=opus, cost_source=s) for s in COST_SOURCES)
    assert abs(total - 0.02) < 1e-12
    assert harness.client.get("/v1/sessions/s-x").json()["tokens"] == 2600 + 230 + 50


def test_calls_that_never_ran_end_as_blocked(harness: Harness) -> None:
    """A PostToolBatch ends, as blocked, the calls it lists that have no end of their own (as the
    real Claude Code does for a call refused in a headless run); PermissionDenied is an end."""
    sid = "s-batch"

    def ev(hook: str, tool_use_id: str | None, tool: str = "Write", **payload: Any) -> Any:
        return envelope(
            session_id=sid,
            hook_event=hook,
            tool_name=tool if tool_use_id else None,
            tool_use_id=tool_use_id,
            payload={"hook_event_name": hook, "tool_use_id": tool_use_id, **payload},
        )

    listed = [
        {"tool_name": "Bash", "tool_use_id": "toolu_ran00001", "tool_response": "ok"},
        {"tool_name": "Write", "tool_use_id": "toolu_refused01", "tool_response": "no"},
        {"tool_name": "Bash", "tool_use_id": "toolu_neverpre1", "tool_response": "blocked"},
    ]
    send(
        harness,
        ev("PreToolUse", "toolu_ran00001", "Bash"),
        ev("PostToolUse", "toolu_ran00001", "Bash"),
        ev("PreToolUse", "toolu_refused01"),
        ev("PermissionRequest", None),
        ev("PostToolBatch", None, tool_calls=listed),
        ev("PreToolUse", "toolu_denied001", "Edit"),
        ev("PermissionDenied", "toolu_denied001", "Edit", reason="auto mode"),
    )
    m = harness.metric
    assert m("agentwatch_tool_calls_total", tool="Bash", outcome="success") == 1
    assert m("agentwatch_tool_calls_total", tool="Write", outcome="blocked") == 1
    assert m("agentwatch_tool_calls_total", tool="Bash", outcome="blocked") == 1
    assert m("agentwatch_tool_calls_total", tool="Edit", outcome="blocked") == 1
    tree = harness.client.get(f"/v1/sessions/{sid}/tree").json()["agent"]
    assert {c["tool_use_id"]: c["outcome"] for c in tree["tool_calls"]} == {
        "toolu_ran00001": "success",
        "toolu_refused01": "blocked",
        "toolu_neverpre1": "blocked",
        "toolu_denied001": "blocked",
    }
    stats = harness.client.get("/v1/tools/stats", params={"range": "24h"}).json()["tools"]
    assert {s["tool"]: (s["calls"], s["blocked"]) for s in stats} == {
        "Bash": (2, 1),
        "Edit": (1, 1),
        "Write": (1, 1),
    }
