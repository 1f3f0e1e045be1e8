"""What the store works out as it commits a batch, written once for every backend.

Tool calls are paired (a duration on the end that completes them), each session's counters roll
up (collector/counting.py) and its tokens and cost move on (collector/accounting.py). The results
are Facts handed to the commit listeners beside each event; the Event objects a request handed in
are never changed. The SQL here runs on both SQLite and PostgreSQL (`?` placeholders: the
PostgreSQL connection translates them, collector/store/sql.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from collector.accounting import Increment, SessionCost
from collector.counting import Counted, count
from collector.events import Event, batch_calls
from collector.pricing import PriceTable
from collector.store.sql import Connection, PgConnection
from collector.vocabulary import SOURCE_OTEL, TOOL_END_EVENTS, HookEvent

DURATION = -1  # duration_ms is the last value of a backend's events row


@dataclass
class Facts:
    """What one committed event adds, for the metrics (collector/tracker.py)."""

    counted: Counted | None = None  # to its session's counters (counting.py)
    increments: tuple[Increment, ...] = ()  # to the token and cost counters
    duration_ms: int | None = None  # a paired tool call's duration (on whichever end came last)
    session_started_ts: int | None = None  # on SessionEnd: the session's first event
    user: str | None = None  # the session's user, who the increments belong to


class Committed(NamedTuple):
    event: Event
    facts: Facts


_SESSION_UPSERT = """
INSERT INTO sessions (session_id, source_app, machine_id, first_ts, last_ts, ended_ts, events,
    tool_calls, errors, prompts, subagents)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    first_ts = CASE WHEN excluded.first_ts < sessions.first_ts THEN excluded.first_ts
        ELSE sessions.first_ts END,
    last_ts = CASE WHEN excluded.last_ts > sessions.last_ts THEN excluded.last_ts
        ELSE sessions.last_ts END,
    source_app = CASE WHEN sessions.source_app = 'unknown' THEN excluded.source_app
        ELSE sessions.source_app END,
    machine_id = CASE WHEN sessions.machine_id = 'unknown' THEN excluded.machine_id
        ELSE sessions.machine_id END,
    ended_ts = coalesce(excluded.ended_ts, sessions.ended_ts),
    events = sessions.events + excluded.events,
    tool_calls = sessions.tool_calls + excluded.tool_calls,
    errors = sessions.errors + excluded.errors, prompts = sessions.prompts + excluded.prompts,
    subagents = sessions.subagents + excluded.subagents
RETURNING first_ts
"""


def derive(
    conn: Connection, events: list[Event], rows: list[list[Any]], first_seq: int
) -> tuple[list[Facts], ToolPairs]:
    """Facts for events about to be inserted with seqs first_seq, first_seq + 1, ...: the tool
    pairing fills in the rows' duration_ms (still editable), save() the pairs after the insert."""
    facts = [Facts() for _ in events]
    return facts, ToolPairs(conn, events, rows, facts, first_seq)


def roll_up(
    conn: Connection, new: list[Event], facts: list[Facts], first_seq: int, prices: PriceTable
) -> None:
    """After the insert: each session's counters, tokens and cost."""
    _upsert_sessions(conn, new, facts, first_seq)
    _account(conn, new, facts, prices)


@dataclass
class _SessionDelta:
    source_app: str
    machine_id: str
    first_ts: int
    last_ts: int
    ended_ts: int | None = None
    events: int = 0
    tool_calls: int = 0
    errors: int = 0
    prompts: int = 0
    subagents: int = 0


def _upsert_sessions(
    conn: Connection, new: list[Event], facts: list[Facts], first_seq: int
) -> None:
    deltas: dict[str, _SessionDelta] = {}
    seen = StoredSeen(conn, first_seq)
    for e, f in zip(new, facts, strict=True):
        if not e.session_id or e.hook_event == HookEvent.ALERT_NOTIFICATION:
            continue
        d = deltas.get(e.session_id)
        if d is None:
            d = deltas[e.session_id] = _SessionDelta(e.source_app, e.machine_id, e.ts, e.ts)
        d.first_ts = min(d.first_ts, e.ts)
        d.last_ts = max(d.last_ts, e.ts)
        d.events += 1
        if e.hook_event == HookEvent.SESSION_END:
            d.ended_ts = e.ts
        c = f.counted = count(e, seen)
        seen.note(e, c)
        d.tool_calls += len(c.tool_calls)
        d.prompts += c.prompt
        d.subagents += c.subagent
        d.errors += c.error
    for sid, d in deltas.items():
        counts = (d.events, d.tool_calls, d.errors, d.prompts, d.subagents)
        (first_ts,) = conn.execute(
            _SESSION_UPSERT,
            (sid, d.source_app, d.machine_id, d.first_ts, d.last_ts, d.ended_ts, *counts),
        ).fetchone()
        if d.ended_ts is not None:
            for e, f in zip(new, facts, strict=True):
                if e.session_id == sid and e.hook_event == HookEvent.SESSION_END:
                    f.session_started_ts = first_ts


def _account(conn: Connection, new: list[Event], facts: list[Facts], prices: PriceTable) -> None:
    """Tokens and cost: each session's figures move on, and each event learns what it adds to
    the counters (collector/accounting.py)."""
    costly = [(e, f) for e, f in zip(new, facts, strict=True) if e.usage or e.cost_state or e.user]
    if not costly:
        return
    sql = "SELECT session_id, models FROM sessions WHERE session_id IN ({})"
    sessions = {
        sid: SessionCost.load(orjson.loads(models) if models else None)
        for sid, models in select_in(conn, sql, {e.session_id for e, _ in costly})
    }
    for e, f in costly:
        cost = sessions[e.session_id]
        if e.user and (e.source == SOURCE_OTEL or cost.user is None):
            cost.user = e.user  # Claude Code's own events name it as the operator chose
        if e.source == SOURCE_OTEL:
            increments = cost.add_native(e.usage or {}, e.cost_usd, e.user)
        else:
            increments = cost.add_transcript(e.usage or {}, prices)
        if e.cost_state:
            increments += cost.settle(e.cost_state)
        f.increments = tuple(increments)
        f.user = e.user or cost.user  # the session's user labels what it adds
    conn.executemany(
        "UPDATE sessions SET models = ?, cost_source = ?, tokens = ?, cost_usd = ? "
        "WHERE session_id = ?",
        [
            (orjson.dumps(c.dump()).decode(), c.cost_source, c.tokens, c.cost_usd, sid)
            for sid, c in sessions.items()
        ],
    )


class StoredSeen:
    """counting.Seen over the store: the rows committed before (seq < first_new) and the events
    of this commit counted so far. Only SubagentStart/Stop and PostToolBatch ask (a few a turn)."""

    _ENDS = tuple(sorted(TOOL_END_EVENTS))
    _SUBAGENT = (HookEvent.SUBAGENT_START, HookEvent.SUBAGENT_STOP)

    def __init__(self, conn: Connection, first_new: int) -> None:
        self.conn = conn
        self.first_new = first_new
        self.agents: set[tuple[str, str]] = set()
        self.calls: set[tuple[str, str]] = set()

    def subagent_counted(self, session_id: str, agent_id: str) -> bool:
        return (session_id, agent_id) in self.agents or self._stored(
            "agent_id = ?", agent_id, self._SUBAGENT, session_id
        )

    def call_ended(self, session_id: str, tool_use_id: str) -> bool:
        return (session_id, tool_use_id) in self.calls or self._stored(
            "tool_use_id = ?", tool_use_id, self._ENDS, session_id
        )

    def _stored(self, term: str, value: str, hooks: tuple[str, ...], session_id: str) -> bool:
        marks = ",".join("?" * len(hooks))
        row = self.conn.execute(
            f"SELECT 1 FROM events WHERE session_id = ? AND {term} AND hook_event IN ({marks}) "
            "AND seq < ? LIMIT 1",
            (session_id, value, *hooks, self.first_new),
        ).fetchone()
        return row is not None

    def note(self, e: Event, counted: Counted) -> None:
        if counted.subagent and e.agent_id:
            self.agents.add((e.session_id, e.agent_id))
        if e.hook_event in TOOL_END_EVENTS and e.tool_use_id:
            self.calls.add((e.session_id, e.tool_use_id))
        elif e.hook_event == HookEvent.POST_TOOL_BATCH:
            self.calls.update((e.session_id, i) for i, _ in batch_calls(orjson.loads(e.payload)))


class ToolPairs:
    """PreToolUse and PostToolUse(Failure) meet on tool_use_id, in whichever order they come.

    The end event's row carries the call's duration; the event that completes a pair carries it
    too (in its Facts, for the metrics). A call with one end seen waits in open_calls. Worked
    out before the insert (rows still editable); save() writes open_calls and earlier end rows
    afterwards.
    """

    def __init__(
        self,
        conn: Connection,
        events: list[Event],
        rows: list[list[Any]],
        facts: list[Facts],
        first_seq: int,
    ) -> None:
        calls = [
            (i, e)
            for i, e in enumerate(events)
            if e.tool_use_id
            and (e.hook_event == HookEvent.PRE_TOOL_USE or e.hook_event in TOOL_END_EVENTS)
        ]
        self.before: dict[str, tuple[int, int | None]] = {}  # tool_use_id -> (ts, end_seq)
        sql = "SELECT tool_use_id, ts, end_seq FROM open_calls WHERE tool_use_id IN ({})"
        for tid, ts, end_seq in select_in(conn, sql, {e.tool_use_id for _, e in calls}):
            self.before[tid] = (ts, end_seq)
        self.after: dict[str, tuple[int, int | None] | None] = dict(self.before)
        self.stored_ends: list[tuple[int, int]] = []  # (duration, seq) of end rows stored before
        for i, e in calls:
            tid = e.tool_use_id
            assert tid is not None
            other = self.after.get(tid)
            if e.hook_event == HookEvent.PRE_TOOL_USE:
                end_seq = None if other is None else other[1]
                if other is None or end_seq is None:
                    self.after[tid] = (e.ts, None)
                    continue
                duration = facts[i].duration_ms = max(other[0] - e.ts, 0)
                if end_seq >= first_seq:
                    rows[end_seq - first_seq][DURATION] = duration
                else:
                    self.stored_ends.append((duration, end_seq))
            else:
                if other is None or other[1] is not None:
                    self.after[tid] = (e.ts, first_seq + i)
                    continue
                facts[i].duration_ms = rows[i][DURATION] = max(e.ts - other[0], 0)
            self.after[tid] = None

    def save(self, conn: Connection) -> None:
        if self.stored_ends:
            conn.executemany("UPDATE events SET duration_ms = ? WHERE seq = ?", self.stored_ends)
        gone = [(t,) for t, v in self.after.items() if v is None and t in self.before]
        if gone:
            conn.executemany("DELETE FROM open_calls WHERE tool_use_id = ?", gone)
        waiting = [
            (t, *v) for t, v in self.after.items() if v is not None and v != self.before.get(t)
        ]
        if waiting:
            conn.executemany(
                "INSERT INTO open_calls (tool_use_id, ts, end_seq) VALUES (?, ?, ?) "
                "ON CONFLICT (tool_use_id) DO UPDATE SET ts = excluded.ts, end_seq = excluded.end_seq",
                waiting,
            )


def select_in(conn: Connection, sql: str, values: Iterable[Any]) -> Iterator[Any]:
    """Rows of sql ("... IN ({})") for all the values: 500 bound parameters a statement, or on
    PostgreSQL one array parameter (`= ANY(?)`), so the statement's text is the same whatever
    the count and is parsed and planned once per connection."""
    values = list(values)
    if not values:
        return
    if isinstance(conn, PgConnection):
        yield from conn.execute(sql.replace("IN ({})", "= ANY(?)"), (values,))
        return
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        yield from conn.execute(sql.format(",".join("?" * len(chunk))), chunk)
