"""Events: filters, pages of them and their JSON (the timeline, /v1/events, exports, the stream).

Event pages sort on (ts, seq): seq is the rowid, which every SQLite index ends with, so the
(ts), (session_id, ts), (hook_event, ts) and (tool_name, ts) indexes deliver that order unsorted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from collector.otlp import ids as otlp_ids
from collector.payloads import EVENT_SELECT, PAYLOAD_TEXT
from collector.query.params import Page, QueryError, decode_cursor, encode_cursor
from collector.store.sql import Connection
from collector.vocabulary import (
    ERROR,
    OUTCOMES,
)

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
    "source",
    "cost_state",
)


_SELECT_EVENTS = f"SELECT {EVENT_SELECT} FROM events"  # EVENT_COLUMNS, unpacked


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
            # Over the redacted JSON text, unpacked; case-insensitive for ASCII in both engines
            # (SQLite's LIKE already is, PostgreSQL's is not).
            escaped = self.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(f"lower({PAYLOAD_TEXT}) LIKE ? ESCAPE '\\'")
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
    out["cost_state"] = orjson.Fragment(row[17]) if row[17] else None
    return out


def list_events(
    conn: Connection,
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
