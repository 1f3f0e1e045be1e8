"""Query API: sessions, timelines, agent trees, events, tool statistics and export.

Routes are sync `def`s: FastAPI runs them in its threadpool, so SQLite reads never block the
event loop, and each pool thread keeps its own read-only connection (Store.reader()).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.responses import Response, StreamingResponse

from collector.context import AppContext, ctx, require_token
from collector.query import events as query_events
from collector.query import params as query_params
from collector.query import sessions as query_sessions
from collector.query import tools as query_tools
from collector.query import tree as query_tree
from collector.responses import json_response

router = APIRouter(prefix="/v1", tags=["query"], dependencies=[Depends(require_token)])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid filter, time or cursor; the body says which and why"},
    401: {"description": "Missing or invalid bearer token (when AGENTWATCH_TOKEN is set)"},
    503: {"description": "Store unavailable"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {**ERRORS, 404: {"description": "Unknown session"}}

T = TypeVar("T")

# Shared parameters (Annotated aliases keep each route's signature short).
Range = Annotated[
    str | None, Query(alias="range", description="Preset: 5m, 1h, 6h, 24h, 7d or 30d")
]
From = Annotated[
    str | None, Query(alias="from", description="Start, epoch ms or ISO 8601 (inclusive)")
]
To = Annotated[str | None, Query(description="End, epoch ms or ISO 8601 (exclusive)")]
Cursor = Annotated[
    str | None, Query(description="next_cursor of the previous page", max_length=512)
]
Limit = Annotated[
    int, Query(ge=1, le=query_params.MAX_LIMIT, description="Rows per page (at most 10,000)")
]
App = Annotated[str | None, Query(description="Only this source_app")]
Errors = Annotated[bool, Query(description="Only errors (outcome=error)")]


def _run(request: Request, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """fn(conn, ...) on this thread's read connection; a QueryError becomes a 400."""
    try:
        with ctx(request).store.reader() as conn:
            return fn(conn, *args, **kw)
    except query_params.QueryError as exc:
        raise HTTPException(400, str(exc)) from None


def _range(range_: str | None, from_: str | None, to: str | None) -> tuple[int | None, int | None]:
    try:
        return query_params.time_range(range_, from_, to)
    except query_params.QueryError as exc:
        raise HTTPException(400, str(exc)) from None


def _idle_ms(c: AppContext) -> int:
    return c.settings.session_idle_seconds * 1000


@router.get("/sessions", responses=ERRORS, summary="Sessions, most recently active first")
def sessions(
    request: Request,
    source_app: App = None,
    range_: Range = None,
    from_: From = None,
    to: To = None,
    status: Annotated[
        Literal["active", "idle", "ended"] | None,
        Query(
            description="active: no SessionEnd and an event within the idle timeout; "
            "idle: no SessionEnd, quiet longer; ended: SessionEnd received"
        ),
    ] = None,
    errors: Annotated[bool, Query(description="Only sessions with at least one error")] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    start, end = _range(range_, from_, to)
    page = _run(
        request,
        query_sessions.list_sessions,
        source_app=source_app,
        start=start,
        end=end,
        status=status,
        errors=errors,
        limit=limit,
        cursor=cursor,
        idle_ms=_idle_ms(ctx(request)),
    )
    return json_response(page.json())


@router.get("/sessions/{session_id}", responses=NOT_FOUND, summary="One session's summary")
def session(request: Request, session_id: str) -> Response:
    found = _run(request, query_sessions.get_session, session_id, _idle_ms(ctx(request)))
    if found is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return json_response(found)


@router.get(
    "/sessions/{session_id}/events",
    responses=NOT_FOUND,
    summary="A session's timeline, oldest first",
)
def session_events(
    request: Request, session_id: str, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    page = _run(
        request,
        query_events.list_events,
        query_events.EventFilter(session_id=session_id),
        limit,
        cursor,
        ascending=True,
        kind="timeline",
    )
    if (
        not page.items
        and cursor is None
        and _run(request, query_sessions.get_session, session_id, 0) is None
    ):
        raise HTTPException(404, f"no session {session_id!r}")
    return json_response(page.json())


@router.get(
    "/sessions/{session_id}/tree",
    responses=NOT_FOUND,
    summary="The agent hierarchy: main agent, subagents and the tool calls of each",
)
def session_tree(request: Request, session_id: str) -> Response:
    tree = _run(request, query_tree.session_tree, session_id)
    if tree is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return json_response(tree)


def event_filter(
    range_: Range = None,
    from_: From = None,
    to: To = None,
    source_app: App = None,
    session: Annotated[str | None, Query(description="Only this session_id")] = None,
    agent: Annotated[str | None, Query(description="Only this agent_id")] = None,
    hook_event: Annotated[str | None, Query(description="e.g. PreToolUse")] = None,
    tool: Annotated[str | None, Query(description="Only this tool_name")] = None,
    outcome: Annotated[
        Literal["success", "error", "blocked"] | None, Query(description="Tool call outcome")
    ] = None,
    errors: Errors = False,
    text: Annotated[
        str | None,
        Query(
            alias="q",
            min_length=1,
            max_length=200,
            description="Free text in the redacted payload (case-insensitive for ASCII). "
            "A page looks at no more than 10,000 events: it may come back short or empty "
            "with a next_cursor; follow it until it is null",
        ),
    ] = None,
) -> query_events.EventFilter:
    start, end = _range(range_, from_, to)
    try:
        return query_events.EventFilter(
            start=start,
            end=end,
            source_app=source_app,
            session_id=session,
            agent_id=agent,
            hook_event=hook_event,
            tool_name=tool,
            outcome=query_events.with_errors(outcome, errors),
            q=text,
        )
    except query_params.QueryError as exc:
        raise HTTPException(400, str(exc)) from None


Filter = Annotated[query_events.EventFilter, Depends(event_filter)]


@router.get("/events", responses=ERRORS, summary="Events matching the filters, newest first")
def events(request: Request, flt: Filter, limit: Limit = 100, cursor: Cursor = None) -> Response:
    return json_response(_run(request, query_events.list_events, flt, limit, cursor).json())


@router.get(
    "/tools/stats",
    responses=ERRORS,
    summary="Per tool: calls, error rate, mean/p50/p95/p99 duration; and tool-call loops",
    description="Percentiles are exact, by linear interpolation between closest ranks "
    "(statistics.quantiles(method='inclusive')), over calls that finished in the range and "
    "whose start and end were both seen. Loops: the same tool with identical input repeated "
    "more than `loop_threshold` times in a row by one agent of a session.",
)
def tools_stats(
    request: Request,
    range_: Range = None,
    from_: From = None,
    to: To = None,
    source_app: App = None,
    loop_threshold: Annotated[
        int | None, Query(ge=1, le=1000, description="Default AGENTWATCH_LOOP_THRESHOLD")
    ] = None,
) -> Response:
    if range_ is None and from_ is None and to is None:
        range_ = "24h"
    start, end = _range(range_, from_, to)
    threshold = loop_threshold or ctx(request).settings.loop_threshold
    tools = _run(request, query_tools.tool_stats, start, end, source_app)
    loops = _run(request, query_tools.tool_loops, start, end, threshold)
    return json_response(
        {"from": start, "to": end, "tools": tools, "loop_threshold": threshold, "loops": loops}
    )


CSV_COLUMNS = query_events.EVENT_COLUMNS


def _ndjson(rows: Iterator[tuple[Any, ...]]) -> Iterator[bytes]:
    for row in rows:
        yield orjson.dumps(query_events.event_json(row)) + b"\n"


def _csv(rows: Iterator[tuple[Any, ...]]) -> Iterator[str]:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for row in rows:
        out.writerow(row)
        if buf.tell() > 65_536:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


@router.get(
    "/export",
    responses={
        **ERRORS,
        200: {
            "description": "The events, oldest first, streamed",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        },
    },
    summary="Export a filtered event set as NDJSON or CSV, streamed",
)
def export(
    request: Request,
    flt: Filter,
    format: Annotated[Literal["ndjson", "csv"], Query(description="Output format")] = "ndjson",
    limit: Annotated[int | None, Query(ge=1, description="At most this many events")] = None,
) -> Response:
    rows = query_events.iter_events(ctx(request).store.reader, flt, limit=limit)
    if format == "csv":
        return StreamingResponse(
            _csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="events.csv"'},
        )
    return StreamingResponse(
        _ndjson(rows),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="events.ndjson"'},
    )
