"""Which Task/Agent call started which subagent (collector/launches.py): the rule on its own, and
the agent tree API and the exported spans agreeing on it over the same stored events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.launches import Call, Failure, Launches, Sighting, attribute
from collector.otlp.ids import span_id
from collector.otlp.spans import OpenSpan, SpanBuilder
from collector.payloads import EVENT_SELECT
from collector.store.sql import dict_rows
from tests.conftest import BACKENDS, Harness
from tests.test_query_data import NOW_MS, env, parallel_subagents_session, task_pre, tool_call

Events = list[dict[str, Any]]


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """These tests run on both stores (tests/conftest.py)."""
    return str(request.param)


# -- the rule ------------------------------------------------------------------------------------
def test_types_pair_in_launch_order_whatever_order_the_subagents_start_in() -> None:
    calls = [Call(1, "t-e1", "Explore"), Call(2, "t-p", "Plan"), Call(3, "t-e2", "Explore")]
    seen = [
        Sighting(10, "plan", "Plan"),
        Sighting(11, "e-a", "Explore"),
        Sighting(12, "e-b", "Explore"),
    ]
    assert attribute(calls, seen) == {"plan": "t-p", "e-a": "t-e1", "e-b": "t-e2"}
    assert attribute(reversed(calls), reversed(seen)) == attribute(calls, seen)  # any input order


def test_only_calls_made_before_the_first_event_are_candidates() -> None:
    assert attribute([Call(5, "t-1", "Explore")], [Sighting(4, "a", "Explore")]) == {}
    # A subagent's first event that is itself a call (it starts one) cannot claim that call.
    assert attribute([Call(4, "t-1", None)], [Sighting(4, "a", "Explore")]) == {}


def test_a_call_of_another_type_is_never_taken() -> None:
    calls = [Call(1, "t-plan", "Plan")]
    seen = [Sighting(2, "explore", "Explore"), Sighting(3, "plan", "Plan")]
    assert attribute(calls, seen) == {"plan": "t-plan"}


def test_untyped_calls_and_unknown_types_fall_back_to_the_earliest() -> None:
    # Older versions omit subagent_type: an untyped call serves any type, oldest first...
    calls = [Call(1, "t-plan", "Plan"), Call(2, "t-any", None), Call(3, "t-any2", "")]
    seen = [Sighting(5, "a", "Explore"), Sighting(6, "b", "Explore")]
    assert attribute(calls, seen) == {"a": "t-any", "b": "t-any2"}
    # ...but a typed call of the right type wins over an older untyped one.
    calls = [Call(1, "t-any", None), Call(2, "t-explore", "Explore")]
    assert attribute(calls, [Sighting(5, "a", "Explore")]) == {"a": "t-explore"}
    # A subagent whose type is unknown takes the earliest call of any type.
    calls = [Call(1, "t-plan", "Plan"), Call(2, "t-explore", "Explore")]
    assert attribute(calls, [Sighting(5, "a", None)]) == {"a": "t-plan"}


def test_plugin_agents_match_with_or_without_their_plugin_prefix() -> None:
    calls = [
        Call(1, "t-1", "reviewer"),
        Call(2, "t-2", "kit:reviewer"),
        Call(3, "t-3", "x:reviewer"),
    ]
    seen = [Sighting(5, "a", "kit:reviewer"), Sighting(6, "b", "kit:reviewer")]
    assert attribute(calls, seen) == {"a": "t-1", "b": "t-2"}  # never x:reviewer


def test_a_call_that_failed_before_its_subagent_appeared_started_nothing() -> None:
    calls = [Call(1, "t-failed", "Explore"), Call(3, "t-ok", "Explore")]
    assert attribute(calls, [Sighting(4, "a", "Explore")], [Failure(2, "t-failed")]) == {
        "a": "t-ok"
    }
    # A failure after the claim (the subagent failed) does not undo it.
    assert attribute(calls[:1], [Sighting(2, "a", "Explore")], [Failure(3, "t-failed")]) == {
        "a": "t-failed"
    }


def test_launches_decide_once_per_subagent_and_ignore_repeated_calls() -> None:
    launches = Launches()
    launches.call("t-1", "Explore")
    launches.call("t-1", "Explore")  # the same PreToolUse stored twice
    assert launches.claim("a", "Explore") == "t-1"
    assert launches.claim("a", "Explore") == "t-1"  # its later events
    launches.call("t-1", "Explore")
    assert launches.claim("b", "Explore") is None
    assert launches.claims == {"a": "t-1", "b": None}


# -- the tree API and the spans agree ------------------------------------------------------------
def agent_call(
    session: str, ts: int, tid: str, subagent_type: str | None, *, end: str = "PostToolUse"
) -> Events:
    """A Task/Agent call's PreToolUse and, one ms later, its end (a background launch)."""
    pre = task_pre(session, ts, tid, subagent_type)
    pre["tool_name"] = pre["payload"]["tool_name"] = "Agent"
    body = {"tool_response": "launched"} if end == "PostToolUse" else {"error": "denied"}
    return [pre, env(session, end, ts + 1, tool="Agent", tool_use_id=tid, payload=body)]


def subagent(session: str, ts: int, agent: str, kind: str, calls: int = 1) -> Events:
    out = [env(session, "SubagentStart", ts, agent=agent, agent_type=kind)]
    for i in range(calls):
        out += tool_call(session, "Read", ts + 1 + 2 * i, 1, agent=agent, agent_type=kind)
    return [*out, env(session, "SubagentStop", ts + 2 + 2 * calls, agent=agent, agent_type=kind)]


def prompt(session: str, ts: int) -> dict[str, Any]:
    return env(session, "UserPromptSubmit", ts, payload={"prompt": "go on"})


def background(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    """Claude Code 2.1: the Agent call returns and the turn stops before the subagent starts;
    its result comes back as a new turn."""
    data = [env(s, "SessionStart", t), prompt(s, t + 1), *agent_call(s, t + 10, "t-bg", "Explore")]
    data += [env(s, "Stop", t + 12), *subagent(s, t + 20, "bg", "Explore", calls=2)]
    data += [prompt(s, t + 40), env(s, "Stop", t + 50)]
    return data, {"bg": "t-bg"}


def parallel_types(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    data = [prompt(s, t), *agent_call(s, t + 10, "t-explore", "Explore")]
    data += [*agent_call(s, t + 12, "t-plan", "Plan"), env(s, "Stop", t + 14)]
    data += [*subagent(s, t + 20, "plan", "Plan"), *subagent(s, t + 21, "explore", "Explore")]
    return data, {"plan": "t-plan", "explore": "t-explore"}


def unmatched(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    """An Explore subagent with only a Plan call around, and one with no SubagentStart and no
    call at all (hooks installed mid-session): neither is pinned on a call."""
    data = [prompt(s, t), *agent_call(s, t + 10, "t-plan", "Plan")]
    data += [*subagent(s, t + 20, "explore", "Explore"), *subagent(s, t + 30, "plan", "Plan")]
    data += tool_call(s, "Grep", t + 40, 2, agent="orphan", agent_type="general-purpose")
    return data, {"explore": None, "plan": "t-plan", "orphan": None}


def same_type_twice(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    data = [prompt(s, t), *agent_call(s, t + 10, "t-first", "Explore")]
    data += [*subagent(s, t + 20, "first", "Explore"), prompt(s, t + 30)]
    data += [
        *agent_call(s, t + 40, "t-second", "Explore"),
        *subagent(s, t + 50, "second", "Explore"),
    ]
    return data, {"first": "t-first", "second": "t-second"}


def failed_then_retried(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    data = [prompt(s, t), *agent_call(s, t + 10, "t-denied", "Explore", end="PostToolUseFailure")]
    data += [*agent_call(s, t + 20, "t-retry", "Explore"), *subagent(s, t + 30, "sub", "Explore")]
    return data, {"sub": "t-retry"}


def start_stored_before_its_call(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    """Store order decides (what the relay streams): a call stored after the subagent's first
    event is no candidate, even with an earlier timestamp."""
    late = agent_call(s, t + 10, "t-late", "Explore")
    return [prompt(s, t), *subagent(s, t + 20, "sub", "Explore"), *late], {"sub": None}


def nested(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    """A subagent that starts a subagent: the inner one belongs under the outer one's call."""
    data = [prompt(s, t), *agent_call(s, t + 10, "t-outer", "general-purpose")]
    data.append(env(s, "SubagentStart", t + 20, agent="outer", agent_type="general-purpose"))
    inner = agent_call(s, t + 21, "t-inner", "Explore")
    for e in inner:
        e.update(agent_id="outer", agent_type="general-purpose")
    data += [*inner, *subagent(s, t + 30, "inner", "Explore")]
    data.append(env(s, "SubagentStop", t + 40, agent="outer", agent_type="general-purpose"))
    return data, {"outer": "t-outer", "inner": "t-inner"}


def parallel_tasks(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    """Foreground Task calls (Explore, Plan, Explore) whose subagents start Plan first."""
    data, expected = parallel_subagents_session(s, t)
    return data, dict(expected)


def untyped_tasks(s: str, t: int) -> tuple[Events, dict[str, str | None]]:
    data = [task_pre(s, t, "t-a", None), task_pre(s, t + 1, "t-b", None)]
    data += [*subagent(s, t + 5, "a", "general-purpose"), *subagent(s, t + 6, "b", "Plan")]
    return data, {"a": "t-a", "b": "t-b"}


SCENARIOS = [
    background,
    parallel_types,
    unmatched,
    same_type_twice,
    failed_then_retried,
    start_stored_before_its_call,
    nested,
    parallel_tasks,
    untyped_tasks,
]


def tree_attribution(h: Harness, session: str) -> dict[str, str | None]:
    r = h.client.get(f"/v1/sessions/{session}/tree")
    assert r.status_code == 200, r.text
    out: dict[str, str | None] = {}

    def walk(agent: dict[str, Any]) -> None:
        for sub in agent["subagents"]:
            started_by = sub["started_by"]
            out[sub["agent_id"]] = started_by["tool_use_id"] if started_by else None
            if started_by:  # the tree names the span the exporter makes its parent
                assert sub["parent_span_id"] == span_id(session, "tool", out[sub["agent_id"]]).hex()
            walk(sub)

    walk(r.json()["agent"])
    return out


def span_attribution(h: Harness, session: str) -> dict[str, str | None]:
    """The exported agent spans' parents, from the stored events as the relay streams them."""
    with h.client.app.state.ctx.store.reader() as conn:  # type: ignore[attr-defined]
        rows = dict_rows(
            conn.execute(
                f"SELECT {EVENT_SELECT} FROM events WHERE session_id = ? ORDER BY seq", (session,)
            )
        )
    builder = SpanBuilder(lambda sid, seq: iter(()), max_sessions=10, timeout_ms=1)
    spans: list[OpenSpan] = []
    for row in rows:
        payload = orjson.loads(row["payload"])
        spans += builder.process(row, payload, orjson.loads(row["usage"]) if row["usage"] else None)
    spans += [s for _, s in builder.sweep(now_ms=NOW_MS * 2)]
    tools = {span_id(session, "tool", r["tool_use_id"]): r["tool_use_id"] for r in rows}
    root = span_id(session, "agent", session)
    return {
        s.attrs["gen_ai.agent.id"]: tools.get(s.parent_id)
        for s in spans
        if s.name.startswith("invoke_agent ") and s.span_id != root
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_tree_and_spans_attribute_subagents_alike(harness: Harness, scenario: Any) -> None:
    session = f"s-{scenario.__name__}"
    data, expected = scenario(session, NOW_MS - 60_000)
    r = harness.post("/v1/events", data)
    assert r.status_code == 200 and not r.json()["rejected"], r.text
    tree = tree_attribution(harness, session)
    assert tree == expected
    assert span_attribution(harness, session) == tree


def test_a_nested_subagent_hangs_under_the_agent_whose_call_started_it(harness: Harness) -> None:
    data, _ = nested("s-nest", NOW_MS - 60_000)
    harness.post("/v1/events", data)
    main = harness.client.get("/v1/sessions/s-nest/tree").json()["agent"]
    [outer] = main["subagents"]
    [inner] = outer["subagents"]
    assert (outer["agent_id"], inner["agent_id"], inner["parent_agent_id"]) == (
        "outer",
        "inner",
        "outer",
    )
    assert [c["subagent_id"] for c in outer["tool_calls"] if c["tool_name"] == "Agent"] == ["inner"]
