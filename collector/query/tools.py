"""Tool statistics: calls, errors, blocked calls and duration percentiles per tool; loops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from collector.events import batch_calls
from collector.payloads import PAYLOAD_TEXT
from collector.query.events import EventFilter
from collector.store.sql import Connection
from collector.vocabulary import (
    BLOCKED,
    ERROR,
    TOOL_END_EVENTS,
    HookEvent,
)


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
    conn: Connection, start: int | None, end: int | None, source_app: str | None = None
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
    conn: Connection, start: int | None, end: int | None, source_app: str | None
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
    conn: Connection, start: int | None, end: int | None, threshold: int
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
