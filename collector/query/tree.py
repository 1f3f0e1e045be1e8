"""The agent tree of a session: the main agent, its subagents (each under the Task/Agent call
that started it, by collector/launches.py) and the tool calls of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from collector.events import batch_calls
from collector.launches import Call, Failure, Sighting, attribute, subagent_type
from collector.otlp import ids as otlp_ids
from collector.payloads import AGENT_TYPE, PAYLOAD_TEXT
from collector.store.sql import Connection
from collector.vocabulary import (
    BLOCKED,
    OUTCOMES,
    SUBAGENT_TOOLS,
    TOOL_END_EVENTS,
    HookEvent,
)


def trace_id(session_id: str) -> str:
    """The session's trace id, as the OTLP relay exports it (collector/otlp/ids.py)."""
    return otlp_ids.trace_id(session_id).hex()


@lru_cache(maxsize=65536)
def span_id(session_id: str, kind: str, key: str) -> str:
    """The relay's span id of an agent (key: agent id), turn or tool call (key: tool_use_id).
    Cached as hex: a tree names each span once, and a dashboard asks for the same tree again."""
    return otlp_ids.span_id(session_id, kind, key).hex()


@dataclass(slots=True)
class _Agent:
    agent_id: str
    agent_type: str | None  # None: not known yet
    parent: str | None
    start: int | None
    end: int | None
    first_seq: int = 0  # its first event in store order, and that event's agent_type
    first_type: str | None = None
    started_by: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


# A row's part in a tool call as one small integer, not two text columns: i for _STEPS[i] (its
# hook and stored outcome: 0 is the PreToolUse), NULL for any other row.
_STEPS = [(HookEvent.PRE_TOOL_USE, "")]


_STEPS += [(end, outcome) for end in sorted(TOOL_END_EVENTS) for outcome in OUTCOMES]


_BATCH = -1  # a PostToolBatch: it ends, as blocked, the calls it lists that never ran


_STEP = " ".join(
    [
        f"CASE WHEN hook_event = '{HookEvent.POST_TOOL_BATCH}' THEN {_BATCH} WHEN tool_use_id IS NULL THEN NULL"
    ]
    + [f"WHEN hook_event = '{h}' AND outcome = '{o}' THEN {i}" for i, (h, o) in enumerate(_STEPS)]
    + ["END"]
)


# In time order, straight from the (session_id, ts) index, and as few Python objects as will do:
# making them is most of the cost (a text column ~1.5 ms per 10,000 rows, an integer or NULL
# less). agent_id is NULL for the main agent, whose type is not read, and parent_agent_id when
# it is the session; a subagent's type is what the relay reads (AGENT_TYPE). A payload is
# unpacked (a few µs) only for a Task/Agent call, for its subagent_type.
_SUBAGENT_TOOLS = ", ".join(f"'{t}'" for t in sorted(SUBAGENT_TOOLS))


_TREE_SELECT = (
    "SELECT seq, ts, nullif(agent_id, session_id), nullif(parent_agent_id, session_id), "
    f"CASE WHEN agent_id IS NOT NULL THEN {AGENT_TYPE} END, {_STEP}, tool_name, tool_use_id, "
    f"CASE WHEN hook_event = '{HookEvent.PRE_TOOL_USE}' AND tool_name IN ({_SUBAGENT_TOOLS}) "
    f"OR hook_event = '{HookEvent.POST_TOOL_BATCH}' "
    f"THEN {PAYLOAD_TEXT} END FROM events WHERE session_id = ? ORDER BY ts, seq"
)


def session_tree(conn: Connection, session_id: str) -> dict[str, Any] | None:
    """The agent hierarchy of a session: the main agent, its subagents (each with the Task/Agent
    tool call that started it, by collector/launches.py), and the tool calls of each agent with
    durations and outcomes. One pass over the session's rows, in time order (10,000 rows and 1,000
    subagents take ~30 ms, more than half of it reading the rows)."""
    agents: dict[str | None, _Agent] = {}  # by agent_id column: None is the main agent
    calls: dict[str, dict[str, Any]] = {}
    launches: list[Call] = []
    failures: list[Failure] = []
    callers: dict[str, str] = {}  # the agent that made each Task/Agent call
    get_agent, get_call = agents.get, calls.get
    # Row by row, not fetchall(): each row is freed as soon as it is read, so the rows neither
    # pile up in memory nor set off the garbage collector (of the whole heap, when they survive).
    rows = conn.execute(_TREE_SELECT, (session_id,))
    for seq, ts, aid, parent, kind, step, tool, tool_use_id, task_payload in rows:
        agent = get_agent(aid)
        if agent is None:
            agent = agents[aid] = (
                _Agent(session_id, "main", None, ts, ts)
                if aid is None
                else _Agent(aid, kind, parent or session_id, ts, ts, seq, kind)
            )
        else:
            agent.end = ts  # rows come in time order
            if seq < agent.first_seq:
                agent.first_seq, agent.first_type = seq, kind
            if agent.agent_type is None:
                agent.agent_type = kind
        if step is None:
            continue
        if step == _BATCH:
            _end_unrun(calls, agent, session_id, ts, task_payload)
            continue
        call = get_call(tool_use_id)
        if call is None:
            call = calls[tool_use_id] = _new_call(session_id, tool_use_id, tool)
            agent.tool_calls.append(call)
        elif call["tool_name"] is None:
            call["tool_name"] = tool
        if step == 0:
            call["start"] = ts
            if task_payload is not None:
                launches.append(Call(seq, tool_use_id, _subagent_type(task_payload)))
                callers.setdefault(tool_use_id, agent.agent_id)
        else:
            hook, call["outcome"] = _STEPS[step]
            call["end"] = ts
            if hook == HookEvent.POST_TOOL_USE_FAILURE and tool in SUBAGENT_TOOLS:
                failures.append(Failure(seq, tool_use_id))
    if not agents:
        return None
    main = agents.pop(None, None) or _Agent(session_id, "main", None, None, None)
    subagents = list(agents.values())
    tree = {a.agent_id: a for a in subagents}
    tree[session_id] = main
    for agent in tree.values():
        for call in agent.tool_calls:
            start, end = call["start"], call["end"]
            if end is None:
                call["outcome"] = "running"
            elif start is not None:
                call["duration_ms"] = max(end - start, 0)
        agent.tool_calls.sort(key=_call_order)
    sightings = [Sighting(a.first_seq, a.agent_id, a.first_type) for a in subagents]
    types = {c.tool_use_id: c.subagent_type for c in launches}
    for aid, tool_use_id in attribute(launches, sightings, failures).items():
        call = calls[tool_use_id]
        call["subagent_id"] = aid
        agent = tree[aid]
        agent.parent = callers[tool_use_id]  # the agent that made the call
        agent.started_by = {
            "tool_use_id": tool_use_id,
            "tool_name": call["tool_name"],
            "subagent_type": types[tool_use_id],
            "start": call["start"],
            "end": call["end"],
            "duration_ms": call["duration_ms"],
            "outcome": call["outcome"],
        }
    for agent in subagents:
        if agent.parent is not None and agent.parent in tree:
            tree[agent.parent].children.append(agent.agent_id)
    return {
        "session_id": session_id,
        "trace_id": trace_id(session_id),
        "agent": _agent_json(tree, session_id, session_id),
    }


def _new_call(session_id: str, tool_use_id: str, tool: str | None) -> dict[str, Any]:
    return {
        "tool_use_id": tool_use_id,
        "tool_name": tool,
        "start": None,
        "end": None,
        "duration_ms": None,
        "outcome": "",
        "span_id": span_id(session_id, "tool", tool_use_id),
    }


def _end_unrun(
    calls: dict[str, dict[str, Any]], agent: _Agent, session_id: str, ts: int, payload: str
) -> None:
    """The calls a PostToolBatch lists that have no end yet never ran: blocked, ending now."""
    for tool_use_id, tool in batch_calls(orjson.loads(payload)):
        call = calls.get(tool_use_id)
        if call is None:  # blocked before its PreToolUse
            call = calls[tool_use_id] = _new_call(session_id, tool_use_id, tool)
            call["start"] = ts
            agent.tool_calls.append(call)
        if call["end"] is None:
            call["end"], call["outcome"] = ts, BLOCKED


def _subagent_type(payload: str) -> str | None:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return subagent_type(body) if isinstance(body, dict) else None


def _call_order(call: dict[str, Any]) -> tuple[int, str]:
    """By start (by end if the start was not seen), then by id."""
    start = call["start"]
    return (call["end"] if start is None else start), call["tool_use_id"]


def _agent_json(agents: dict[str, _Agent], aid: str, session_id: str) -> dict[str, Any]:
    agent = agents[aid]
    parent_span = (
        span_id(session_id, "tool", agent.started_by["tool_use_id"])
        if agent.started_by
        else (span_id(session_id, "agent", agent.parent) if agent.parent else None)
    )
    return {
        "agent_id": agent.agent_id,
        "agent_type": agent.agent_type or "unknown",
        "parent_agent_id": agent.parent,
        "span_id": span_id(session_id, "agent", aid),
        "parent_span_id": parent_span,
        "start": agent.start,
        "end": agent.end,
        "duration_ms": agent.end - agent.start
        if agent.start is not None and agent.end is not None
        else 0,
        "started_by": agent.started_by,
        "tool_calls": agent.tool_calls,
        "subagents": [_agent_json(agents, c, session_id) for c in agent.children],
    }
