"""SQL and cursor logic of the query API (the routes live in collector/routes/query.py).

Every page is keyset-paginated: the cursor is an opaque base64url token holding the sort key of
the last row served, so a page costs an index seek however deep it is (OFFSET would rescan).
Event pages sort on (ts, seq): seq is the rowid, which every SQLite index ends with, so the
(ts), (session_id, ts), (hook_event, ts) and (tool_name, ts) indexes deliver that order unsorted.
"""

from __future__ import annotations

import base64
import binascii
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from collector import events, otlp_ids
from collector.accounting import SessionCost
from collector.events import batch_calls
from collector.launches import Call, Failure, Sighting, attribute, subagent_type
from collector.payloads import AGENT_TYPE, EVENT_SELECT, PAYLOAD_TEXT
from collector.vocabulary import (
    BLOCKED,
    ERROR,
    OUTCOMES,
    SUBAGENT_TOOLS,
    TOOL_END_EVENTS,
    HookEvent,
)

RANGE_PRESETS = {"5m": 300_000, "1h": 3_600_000, "6h": 21_600_000, "24h": 86_400_000}
RANGE_PRESETS.update({"7d": 7 * 86_400_000, "30d": 30 * 86_400_000})
SESSION_STATUSES = ("active", "idle", "ended")
MAX_LIMIT = 10_000
TEXT_SCAN_BUDGET = 10_000  # events a page with free text looks at (see list_events)
EVENT_COLUMNS = (
    "seq",
    "event_id",
    "ts",
    "received_at",
    "source_app",
    "machine_id",
    "session_id",
    "agent_id",
    "parent_agent_id",
    "agent_type",
    "hook_event",
    "tool_name",
    "tool_use_id",
    "outcome",
    "usage",
    "payload",
)
_SELECT_EVENTS = f"SELECT {EVENT_SELECT} FROM events"  # EVENT_COLUMNS, unpacked
_SESSION_COLUMNS = (
    "session_id, source_app, machine_id, first_ts, last_ts, ended_ts, events, tool_calls, "
    "errors, prompts, subagents, tokens, cost_usd, cost_source"
)


class QueryError(ValueError):
    """An invalid filter or cursor: the message goes back to the client in a 400."""


# -- parameters ------------------------------------------------------------------------------
def parse_time(value: str, name: str) -> int:
    """Epoch milliseconds from an integer string or an ISO 8601 timestamp (naive means UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} must be epoch milliseconds or ISO 8601, not {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def time_range(
    range_: str | None, from_: str | None, to: str | None, now_ms: int | None = None
) -> tuple[int | None, int | None]:
    """[from, to) in epoch ms from a preset (5m, 1h, 6h, 24h, 7d, 30d) or explicit bounds."""
    if range_ is not None:
        if from_ is not None or to is not None:
            raise QueryError("give either range or from/to, not both")
        if range_ not in RANGE_PRESETS:
            raise QueryError(f"range must be one of {', '.join(RANGE_PRESETS)}")
        now = now_ms if now_ms is not None else events.now_ms()
        return now - RANGE_PRESETS[range_], None
    start = parse_time(from_, "from") if from_ is not None else None
    end = parse_time(to, "to") if to is not None else None
    if start is not None and end is not None and end <= start:
        raise QueryError("to must be after from")
    return start, end


def encode_cursor(kind: str, *key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([kind, *key])).decode().rstrip("=")


def decode_cursor(token: str, kind: str, types: Sequence[type]) -> list[Any]:
    """The sort key inside a cursor made by encode_cursor(kind, ...), checked against types."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise QueryError("invalid cursor: not a cursor this API issued") from None
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != kind
        or not all(type(v) is t for v, t in zip(value[1:], types, strict=True))
    ):
        raise QueryError(f"invalid cursor: not a cursor of this {kind} listing")
    return value[1:]


# -- events ----------------------------------------------------------------------------------
@dataclass
class EventFilter:
    start: int | None = None
    end: int | None = None
    source_app: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    hook_event: str | None = None
    tool_name: str | None = None
    outcome: str | None = None
    q: str | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise QueryError(f"outcome must be one of {', '.join(OUTCOMES)}")
        if self.q is not None and not self.q.strip():
            raise QueryError("q must not be empty")

    def where(self, *, text: bool = True) -> tuple[list[str], list[Any]]:
        """SQL terms for the filters; text=False leaves out q (see list_events)."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("source_app", self.source_app),
            ("session_id", self.session_id),
            ("coalesce(agent_id, session_id)", self.agent_id),  # NULL is the main agent
            ("hook_event", self.hook_event),
            ("tool_name", self.tool_name),
            ("outcome", self.outcome),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.start is not None:
            clauses.append("ts >= ?")
            args.append(self.start)
        if self.end is not None:
            clauses.append("ts < ?")
            args.append(self.end)
        if text and self.q is not None:
            # Over the redacted JSON text, unpacked; LIKE is case-insensitive for ASCII.
            escaped = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(f"{PAYLOAD_TEXT} LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        return clauses, args


def with_errors(outcome: str | None, errors: bool) -> str | None:
    """errors=true is outcome=error; combining it with another outcome is a contradiction."""
    if not errors:
        return outcome
    if outcome not in (None, ERROR):
        raise QueryError("errors=true conflicts with outcome=" + str(outcome))
    return ERROR


def event_json(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(EVENT_COLUMNS, row, strict=True))
    out["trace_id"], out["span_id"] = otlp_ids.trace_context(out)
    # The stored texts are already JSON: embed them as they are instead of parsing them.
    out["usage"] = orjson.Fragment(row[14]) if row[14] else None
    out["payload"] = orjson.Fragment(row[15])
    return out


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {**self.extra, "items": self.items, "next_cursor": self.next_cursor}


def list_events(
    conn: sqlite3.Connection,
    flt: EventFilter,
    limit: int,
    cursor: str | None,
    *,
    ascending: bool = False,
    kind: str = "events",
    scan_budget: int = TEXT_SCAN_BUDGET,
) -> Page:
    """A page of events, newest first (or oldest first for timelines and exports).

    With free text, a page looks at no more than scan_budget events (each payload has to be
    unpacked, ~4 µs): it may come back short, even empty, with a next_cursor after the last
    event looked at, so no request costs more than ~50 ms however rare the text.
    """
    clauses, args = flt.where(text=False)
    op, order = (">", "ASC") if ascending else ("<", "DESC")
    if cursor is not None:
        ts, seq = decode_cursor(cursor, kind, (int, int))
        clauses.append(f"(ts, seq) {op} (?, ?)")
        args += [ts, seq]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sort = f"ORDER BY ts {order}, seq {order}"
    scanned_to: tuple[int, int] | None = None
    if flt.q is not None:
        # Where the budget ends (an index-only walk), then the same ordered walk up to there,
        # which stops as soon as a page of matches is found.
        last = conn.execute(
            f"SELECT ts, seq FROM events{where} {sort} LIMIT 1 OFFSET ?", (*args, scan_budget - 1)
        ).fetchone()
        if last is not None:
            scanned_to = (last[0], last[1])
            clauses.append(f"(ts, seq) {'<=' if op == '>' else '>='} (?, ?)")
            args += scanned_to
        text_clauses, text_args = EventFilter(q=flt.q).where()
        clauses += text_clauses
        args += text_args
        where = f" WHERE {' AND '.join(clauses)}"
    result = conn.execute(f"{_SELECT_EVENTS}{where} {sort} LIMIT ?", (*args, limit + 1))
    rows = result.fetchall()
    if len(rows) > limit:
        rows = rows[:limit]
        nxt: str | None = encode_cursor(kind, rows[-1][2], rows[-1][0])
    else:
        nxt = encode_cursor(kind, *scanned_to) if scanned_to else None
    return Page([event_json(r) for r in rows], nxt)


def iter_events(
    reader: Any, flt: EventFilter, batch: int = 1000, limit: int | None = None
) -> Iterator[tuple[Any, ...]]:
    """Every matching row, oldest first, read in keyset batches.

    Each batch takes the calling thread's reader connection afresh: a streaming response may
    resume the generator on another threadpool thread, and no statement stays open between.
    """
    cursor: str | None = None
    served = 0
    while True:
        size = batch if limit is None else min(batch, limit - served)
        if size <= 0:
            return
        clauses, args = flt.where()
        if cursor is not None:
            ts, seq = decode_cursor(cursor, "export", (int, int))
            clauses.append("(ts, seq) > (?, ?)")
            args += [ts, seq]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with reader() as conn:
            rows = conn.execute(
                f"{_SELECT_EVENTS}{where} ORDER BY ts, seq LIMIT ?", (*args, size)
            ).fetchall()
        yield from rows
        served += len(rows)
        if len(rows) < size:
            return
        cursor = encode_cursor("export", rows[-1][2], rows[-1][0])


# -- sessions --------------------------------------------------------------------------------
def session_json(row: Sequence[Any], now_ms: int, idle_ms: int) -> dict[str, Any]:
    (sid, app, machine, first, last, ended, events, tools, errors, prompts, subs, tokens, cost) = (
        row[:13]
    )
    end = ended if ended is not None else last
    if ended is not None:
        status = "ended"
    elif now_ms - last <= idle_ms:
        status = "active"
    else:
        status = "idle"
    return {
        "session_id": sid,
        "source_app": app,
        "machine_id": machine,
        "status": status,
        "start": first,
        "end": end,
        "last_event": last,
        "duration_ms": max(end - first, 0),
        "agents": subs + 1,
        "subagents": subs,
        "events": events,
        "tool_calls": tools,
        "errors": errors,
        "prompts": prompts,
        "tokens": tokens,
        "cost_usd": round(cost, 6),
        "cost_source": row[13],
        "trace_id": trace_id(sid),
    }


def list_sessions(
    conn: sqlite3.Connection,
    *,
    source_app: str | None,
    start: int | None,
    end: int | None,
    status: str | None,
    errors: bool,
    limit: int,
    cursor: str | None,
    idle_ms: int,
    now_ms: int | None = None,
) -> Page:
    """Sessions that overlap [start, end), most recently active first."""
    now = now_ms if now_ms is not None else events.now_ms()
    clauses: list[str] = []
    args: list[Any] = []
    if source_app is not None:
        clauses.append("source_app = ?")
        args.append(source_app)
    if start is not None:
        clauses.append("last_ts >= ?")
        args.append(start)
    if end is not None:
        clauses.append("first_ts < ?")
        args.append(end)
    if status is not None:
        if status not in SESSION_STATUSES:
            raise QueryError(f"status must be one of {', '.join(SESSION_STATUSES)}")
        if status == "ended":
            clauses.append("ended_ts IS NOT NULL")
        else:
            clauses.append(
                "ended_ts IS NULL AND last_ts " + (">= ?" if status == "active" else "< ?")
            )
            args.append(now - idle_ms)
    if errors:
        clauses.append("errors > 0")
    if cursor is not None:
        last_ts, sid = decode_cursor(cursor, "sessions", (int, str))
        clauses.append("(last_ts, session_id) < (?, ?)")
        args += [last_ts, sid]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions{where} "
        "ORDER BY last_ts DESC, session_id DESC LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor("sessions", rows[-1][4], rows[-1][0]) if more else None
    return Page([session_json(r, now, idle_ms) for r in rows], nxt)


def get_session(
    conn: sqlite3.Connection, session_id: str, idle_ms: int, now_ms: int | None = None
) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    now = now_ms if now_ms is not None else events.now_ms()
    out = session_json(row, now, idle_ms)
    (models,) = conn.execute(
        "SELECT models FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    cost = SessionCost.load(orjson.loads(models) if models else None, out["cost_source"])
    out["usage"] = cost.usage()
    out["cost_by_model"] = {
        m: round(float(v.get("cost_usd", 0.0)), 6) for m, v in cost.models.items()
    }
    return out


# -- the agent tree ----------------------------------------------------------------------------
def trace_id(session_id: str) -> str:
    """The session's trace id, as the OTLP relay exports it (collector/otlp_ids.py)."""
    return otlp_ids.trace_id(session_id).hex()


def span_id(session_id: str, kind: str, key: str) -> str:
    """The relay's span id of an agent (key: agent id), turn or tool call (key: tool_use_id)."""
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
    f"CASE WHEN agent_id NOT NULL THEN {AGENT_TYPE} END, {_STEP}, tool_name, tool_use_id, "
    f"CASE WHEN hook_event = '{HookEvent.PRE_TOOL_USE}' AND tool_name IN ({_SUBAGENT_TOOLS}) "
    f"OR hook_event = '{HookEvent.POST_TOOL_BATCH}' "
    f"THEN {PAYLOAD_TEXT} END FROM events WHERE session_id = ? ORDER BY ts, seq"
)


def session_tree(conn: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
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


# -- tool statistics ---------------------------------------------------------------------------
def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted data by linear interpolation between closest ranks
    (the same as statistics.quantiles(method="inclusive") and numpy's default)."""
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def tool_stats(
    conn: sqlite3.Connection, start: int | None, end: int | None, source_app: str | None = None
) -> list[dict[str, Any]]:
    """Per tool, over calls that finished in [start, end): calls, errors, blocked, error rate and
    the mean, p50, p95, p99 of the duration (calls with both ends seen)."""
    # The end events carry the call's outcome and (once both ends are stored) its duration.
    clauses, args = EventFilter(start=start, end=end, source_app=source_app).where()
    clauses.append(f"hook_event IN ({', '.join('?' * len(_ENDS))})")
    per_tool: dict[str, tuple[list[int], list[int]]] = {}
    rows = conn.execute(
        f"SELECT tool_name, duration_ms, outcome FROM events WHERE {' AND '.join(clauses)}",
        (*args, *_ENDS),
    ).fetchall()
    rows += [(tool, None, BLOCKED) for tool in _unrun_calls(conn, start, end, source_app)]
    for tool, duration, outcome in rows:
        durations, counts = per_tool.setdefault(tool or "unknown", ([], [0, 0, 0]))
        counts[0] += 1
        counts[1] += outcome == ERROR
        counts[2] += outcome == BLOCKED
        if duration is not None:
            durations.append(duration)
    out = []
    for tool, (durations, (calls, errors, blocked)) in sorted(per_tool.items()):
        durations.sort()
        stats: dict[str, Any] = {
            "tool": tool,
            "calls": calls,
            "errors": errors,
            "blocked": blocked,
            "error_rate": errors / calls,
            "timed_calls": len(durations),
        }
        for name, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
            stats[name] = percentile(durations, q) if durations else None
        stats["mean_ms"] = sum(durations) / len(durations) if durations else None
        out.append(stats)
    return out


_ENDS = tuple(sorted(TOOL_END_EVENTS))


def _unrun_calls(
    conn: sqlite3.Connection, start: int | None, end: int | None, source_app: str | None
) -> list[str | None]:
    """Tool names of the calls that PostToolBatch events in the window list and that have no end
    event of their own: they never ran (events.batch_calls). Looked up per session, on the
    (session_id, ts) index: tool_use_id has none."""
    clauses, args = EventFilter(
        start=start, end=end, source_app=source_app, hook_event=HookEvent.POST_TOOL_BATCH
    ).where()
    listed: dict[str, dict[str, str | None]] = {}
    for sid, payload in conn.execute(
        f"SELECT session_id, {PAYLOAD_TEXT} FROM events WHERE {' AND '.join(clauses)}", args
    ):
        listed.setdefault(sid, {}).update(batch_calls(orjson.loads(payload)))
    unrun: list[str | None] = []
    ends = ",".join("?" * len(_ENDS))
    for sid, calls in listed.items():
        for (ended,) in conn.execute(
            f"SELECT tool_use_id FROM events WHERE session_id = ? AND hook_event IN ({ends}) "
            "AND tool_use_id IS NOT NULL",
            (sid, *_ENDS),
        ):
            calls.pop(ended, None)
        unrun += calls.values()
    return unrun


def tool_loops(
    conn: sqlite3.Connection, start: int | None, end: int | None, threshold: int
) -> list[dict[str, Any]]:
    """Runs of the same tool call (tool name and identical input) repeated more than threshold
    times in a row by one agent of a session: the staleness that agentwatch_agent_loops_total
    counts live."""
    clauses, args = EventFilter(start=start, end=end, hook_event=HookEvent.PRE_TOOL_USE).where()
    # Time order straight from the (hook_event, ts) index (no sort); runs are tracked per agent.
    rows = conn.execute(
        "SELECT session_id, agent_id, tool_name, ts, input_hash "
        f"FROM events WHERE {' AND '.join(clauses)} ORDER BY ts, seq",
        args,
    )
    loops: list[dict[str, Any]] = []
    runs: dict[tuple[str, str], list[Any]] = {}  # -> [tool, input, first_ts, last_ts, count]

    def flush(key: tuple[str, str], run: list[Any]) -> None:
        if run[4] > threshold:
            loops.append(
                {
                    "session_id": key[0],
                    "agent_id": key[1],
                    "tool": run[0],
                    "repeats": run[4],
                    "start": run[2],
                    "end": run[3],
                }
            )

    for session, agent, tool, ts, tool_input in rows:
        key = (session, agent or session)
        run = runs.get(key)
        if run is not None and run[0] == tool and run[1] == tool_input:
            run[3] = ts
            run[4] += 1
            continue
        if run is not None:
            flush(key, run)
        runs[key] = [tool, tool_input, ts, ts, 1]
    for key, run in runs.items():
        flush(key, run)
    loops.sort(key=lambda r: (-r["repeats"], r["session_id"]))
    return loops
