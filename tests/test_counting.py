"""The sessions table and the live metrics count a session the same way (collector/counting.py),
whatever the order and batching of its events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness, envelope

SID = "s-count"


def ev(hook: str, **payload: Any) -> dict[str, Any]:
    tool_use_id = payload.get("tool_use_id")
    return envelope(
        session_id=SID,
        hook_event=hook,
        tool_name=payload.get("tool_name"),
        tool_use_id=tool_use_id,
        agent_id=payload.get("agent_id"),
        agent_type=payload.get("agent_type"),
        payload={"hook_event_name": hook, "tool_use_id": tool_use_id, **payload},
    )


def sub(hook: str, agent: str) -> dict[str, Any]:
    return ev(hook, agent_id=agent, agent_type="Explore")


def call(end: str, tool_use_id: str, **kw: Any) -> list[dict[str, Any]]:
    ids = {"tool_name": "Bash", "tool_use_id": tool_use_id}
    return [ev("PreToolUse", **ids), ev(end, **ids, **kw)]


BATCH = [{"tool_name": "Write", "tool_use_id": "toolu_never_ran"}]
SCENARIOS = {
    "start then stop": [[sub("SubagentStart", "a1"), sub("SubagentStop", "a1")]],
    "stop without start (older Claude Code)": [[sub("SubagentStop", "a2")]],
    "stop before start, one batch": [[sub("SubagentStop", "a3"), sub("SubagentStart", "a3")]],
    "stop before start, two batches": [[sub("SubagentStop", "a4")], [sub("SubagentStart", "a4")]],
    "tool calls and a batch with one that never ran": [
        [ev("UserPromptSubmit", prompt="go"), *call("PostToolUse", "toolu_ok")],
        [*call("PostToolUseFailure", "toolu_bad", error="exit 1")],
        [ev("PostToolBatch", tool_calls=[*BATCH, {"tool_use_id": "toolu_ok"}])],
    ],
    "a batch and its ends in one commit": [
        [
            *call("PostToolUse", "toolu_a"),
            ev("PostToolBatch", tool_calls=[{"tool_use_id": "toolu_a"}]),
        ]
    ],
}


@pytest.mark.parametrize("batches", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_the_store_and_the_metrics_agree(harness: Harness, batches: list[list[Any]]) -> None:
    for batch in [*batches, batches[0]]:  # and a re-send: duplicates count nothing
        r = harness.post("/v1/events", batch)
        assert r.status_code == 200, r.text
    session = harness.client.get(f"/v1/sessions/{SID}").json()
    m = harness.metric
    tool_calls = sum(
        m("agentwatch_tool_calls_total", tool=t, outcome=o)
        for t in ("Bash", "Write")
        for o in ("success", "error", "blocked")
    )
    assert session["tool_calls"] == tool_calls
    assert session["prompts"] == m("agentwatch_prompts_total", source_app="shop")
    assert session["subagents"] == m("agentwatch_subagents_total", agent_type="Explore")
    assert session["subagents"] == len({e["agent_id"] for b in batches for e in b if e["agent_id"]})
