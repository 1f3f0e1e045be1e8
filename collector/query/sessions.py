"""Sessions: the list, most recently active first, and one session with its tokens and cost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from collector import events
from collector.accounting import SessionCost
from collector.query.params import Page, QueryError, decode_cursor, encode_cursor
from collector.query.tree import trace_id
from collector.store.sql import Connection

SESSION_STATUSES = ("active", "idle", "ended")


_SESSION_COLUMNS = (
    "session_id, source_app, machine_id, first_ts, last_ts, ended_ts, events, tool_calls, "
    "errors, prompts, subagents, tokens, cost_usd, cost_source"
)


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
    conn: Connection,
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
    conn: Connection, session_id: str, idle_ms: int, now_ms: int | None = None
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
    cost = SessionCost.load(orjson.loads(models) if models else None)
    out["usage"] = cost.usage()
    out["cost_by_model"] = {m: round(usd, 6) for m, usd in cost.cost_by_model().items()}
    out["user"] = cost.user
    return out
