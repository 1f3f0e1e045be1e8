"""Envelopes for the query API tests (no tests here): sessions with tool calls, errors and
parallel subagents."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

_ids = itertools.count()

NOW_MS = int(time.time() * 1000)


def env(
    session: str,
    hook: str,
    ts: int,
    *,
    app: str = "shop",
    agent: str | None = None,
    agent_type: str | None = None,
    tool: str | None = None,
    tool_use_id: str | None = None,
    payload: dict[str, Any] | None = None,
    usage: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": session, "hook_event_name": hook, "cwd": f"/w/{app}"}
    if agent:
        body.update(agent_id=agent, agent_type=agent_type)
    if tool:
        body.update(tool_name=tool, tool_use_id=tool_use_id)
    body.update(payload or {})
    out: dict[str, Any] = {
        "event_id": f"evt-{next(_ids):08d}-{uuid.uuid4().hex[:8]}",
        "ts": ts,
        "source_app": app,
        "machine_id": "m-test",
        "session_id": session,
        "hook_event": hook,
        "payload": body,
    }
    if agent:
        out.update(agent_id=agent, agent_type=agent_type)
    if tool:
        out.update(tool_name=tool, tool_use_id=tool_use_id)
    if usage:
        out["usage"] = usage
    return out


def tool_call(
    session: str,
    tool: str,
    start: int,
    duration: int,
    *,
    failed: bool = False,
    agent: str | None = None,
    agent_type: str | None = None,
    tool_input: dict[str, Any] | None = None,
    app: str = "shop",
) -> list[dict[str, Any]]:
    tid = "toolu_" + uuid.uuid4().hex[:20]
    tool_input = tool_input or {"command": "pytest -q"}
    kw: dict[str, Any] = {"agent": agent, "agent_type": agent_type, "tool": tool, "app": app}
    end_payload: dict[str, Any] = {"tool_input": tool_input}
    end_payload.update({"error": "exit status 1"} if failed else {"tool_response": "ok"})
    return [
        env(
            session, "PreToolUse", start, tool_use_id=tid, payload={"tool_input": tool_input}, **kw
        ),
        env(
            session,
            "PostToolUseFailure" if failed else "PostToolUse",
            start + duration,
            tool_use_id=tid,
            payload=end_payload,
            **kw,
        ),
    ]


def simple_session(
    session: str, start: int, *, app: str = "shop", errors: int = 0, ended: bool = True
) -> list[dict[str, Any]]:
    out = [
        env(session, "SessionStart", start, app=app, payload={"source": "startup"}),
        env(session, "UserPromptSubmit", start + 10, app=app, payload={"prompt": "fix the bug"}),
    ]
    for i in range(3):
        out += tool_call(session, "Bash", start + 100 + i * 100, 50, failed=i < errors, app=app)
    usage = {"claude-sonnet-4-5": {"input": 1000, "output": 500}}
    out.append(env(session, "Stop", start + 900, app=app, usage=usage))
    if ended:
        out.append(env(session, "SessionEnd", start + 1000, app=app, payload={"reason": "exit"}))
    return out


def task_pre(session: str, ts: int, tid: str, subagent_type: str | None) -> dict[str, Any]:
    tool_input: dict[str, Any] = {"description": "look around", "prompt": "explore"}
    if subagent_type:
        tool_input["subagent_type"] = subagent_type
    return env(
        session, "PreToolUse", ts, tool="Task", tool_use_id=tid, payload={"tool_input": tool_input}
    )


def parallel_subagents_session(
    session: str, t0: int
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Three Task calls (Explore, Plan, Explore) whose subagents start in another order (Plan
    first); returns the envelopes and the expected agent -> tool_use_id pairing."""
    tids = {name: f"toolu_{name}_{uuid.uuid4().hex[:12]}" for name in ("e1", "p", "e2")}
    agents = {"explore-1": "e1", "plan-1": "p", "explore-2": "e2"}
    out = [
        env(session, "SessionStart", t0),
        env(session, "UserPromptSubmit", t0 + 1, payload={"prompt": "plan and explore"}),
        task_pre(session, t0 + 10, tids["e1"], "Explore"),
        task_pre(session, t0 + 11, tids["p"], "Plan"),
        task_pre(session, t0 + 12, tids["e2"], "Explore"),
        env(session, "SubagentStart", t0 + 20, agent="plan-1", agent_type="Plan"),
        env(session, "SubagentStart", t0 + 21, agent="explore-1", agent_type="Explore"),
        env(session, "SubagentStart", t0 + 22, agent="explore-2", agent_type="Explore"),
    ]
    for i, (agent, kind) in enumerate(
        (("plan-1", "Plan"), ("explore-1", "Explore"), ("explore-2", "Explore"))
    ):
        out += tool_call(session, "Read", t0 + 30 + i, 5 + i, agent=agent, agent_type=kind)
        out += tool_call(
            session, "Grep", t0 + 40 + i, 7, agent=agent, agent_type=kind, failed=agent == "plan-1"
        )
        out.append(env(session, "SubagentStop", t0 + 60 + i, agent=agent, agent_type=kind))
    for i, name in enumerate(("e1", "p", "e2")):
        out.append(
            env(
                session,
                "PostToolUse",
                t0 + 70 + i,
                tool="Task",
                tool_use_id=tids[name],
                payload={"tool_response": "done"},
            )
        )
    out += tool_call(session, "Edit", t0 + 80, 3)
    out.append(env(session, "Stop", t0 + 90))
    return out, {agent: tids[name] for agent, name in agents.items()}
