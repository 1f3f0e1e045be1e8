"""GET /v1/stream: Server-Sent Events of live events, filterable like /v1/events.

The store is the buffer. A commit listener only wakes the streams (one call_soon_threadsafe per
client, on the writer thread, never blocking); each stream then reads its new rows from SQLite
by seq, so the SSE `id:` is the event's seq and a client resumes with Last-Event-ID by replaying
seq > id. A client more than `backlog` matching events behind (a stalled reader) skips the
oldest of them: they are counted in agentwatch_stream_dropped_total and announced with an
`event: dropped` message, so a slow client costs the collector neither memory nor ingest speed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from prometheus_client import Counter
from starlette.responses import StreamingResponse

from collector.context import AppContext, require_token
from collector.query import events as query_events
from collector.routes.query import ERRORS, Filter
from collector.store.sql import Connection

PAGE = 500


class StreamHub:
    """The set of open streams, woken after every commit."""

    def __init__(self, c: AppContext) -> None:
        self.store = c.store
        self.shutdown = c.stopping
        self.dropped = Counter(
            "agentwatch_stream_dropped_total",
            "Events skipped for /v1/stream clients that fell too far behind.",
            registry=c.metrics.registry,
        )
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        c.metrics.add_function_gauge(
            "agentwatch_stream_clients",
            "Open /v1/stream connections.",
            [],
            lambda: [([], float(len(self._waiters)))],
        )
        c.store.add_listener(self.on_commit)

    def on_commit(self, _events: object) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, wake in waiters:
            with suppress(RuntimeError):  # that loop is closed: the stream is gone
                loop.call_soon_threadsafe(wake.set)

    def register(self, wake: asyncio.Event) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        entry = (asyncio.get_running_loop(), wake)
        with self._lock:
            self._waiters.add(entry)
        return entry

    def unregister(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(entry)

    # -- reads (run in worker threads) ----------------------------------------------------------
    def _read(self, fn: Any, *args: Any) -> Any:
        with self.store.reader() as conn:
            return fn(conn, *args)

    @staticmethod
    def head(conn: Connection) -> int:
        row = conn.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    @staticmethod
    def catch_up(
        conn: Connection, flt: query_events.EventFilter, after: int, backlog: int
    ) -> tuple[int, int, list[tuple[Any, ...]]]:
        """(dropped, new position, rows): skip what lies beyond the backlog, then a page."""
        clauses, args = flt.where()
        where = " AND ".join(["seq > ?", *clauses])
        dropped = 0
        ahead = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {where} LIMIT ?) AS ahead",
            (after, *args, backlog + 1),
        ).fetchone()[0]
        if ahead > backlog:
            # Keep the newest `backlog` matching events; everything before them is dropped.
            cut = conn.execute(
                f"SELECT seq FROM events WHERE {where} ORDER BY seq DESC LIMIT 1 OFFSET ?",
                (after, *args, backlog),
            ).fetchone()[0]
            dropped = conn.execute(
                f"SELECT count(*) FROM events WHERE {where} AND seq <= ?", (after, *args, cut)
            ).fetchone()[0]
            after = cut
        rows = conn.execute(
            f"{query_events._SELECT_EVENTS} WHERE {where} ORDER BY seq LIMIT ?",
            (after, *args, PAGE),
        ).fetchall()
        return dropped, after, rows


def _message(row: tuple[Any, ...]) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (row[0], orjson.dumps(query_events.event_json(row)))


def build_router(c: AppContext) -> APIRouter:
    """The stream route, bound to one app's store and metrics (its hub listens to the store)."""
    hub = StreamHub(c)
    router = APIRouter(prefix="/v1", tags=["query"], dependencies=[Depends(require_token)])

    @router.get(
        "/stream",
        responses={
            **ERRORS,
            200: {"description": "An SSE stream", "content": {"text/event-stream": {}}},
        },
        summary="Server-Sent Events of live events (id = seq; resume with Last-Event-ID)",
    )
    async def stream(
        request: Request,
        flt: Filter,
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", description="Resume after this id")
        ] = None,
        after: Annotated[
            int | None,
            Query(ge=0, description="Resume after this id (for clients without headers)"),
        ] = None,
        heartbeat: Annotated[
            float, Query(ge=0.2, le=300, description="Seconds between heartbeat comments")
        ] = 15.0,
        backlog: Annotated[
            int, Query(ge=10, le=100_000, description="Matching events a client may lag behind")
        ] = 10_000,
    ) -> StreamingResponse:
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise HTTPException(400, "Last-Event-ID must be an event id (a seq number)")
            after = int(last_event_id)
        start: int = after if after is not None else await asyncio.to_thread(hub._read, hub.head)
        return StreamingResponse(
            _events(hub, flt, start, heartbeat, backlog),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


async def _events(
    hub: StreamHub, flt: query_events.EventFilter, after: int, heartbeat: float, backlog: int
) -> AsyncIterator[bytes]:
    wake = asyncio.Event()
    entry = hub.register(wake)
    try:
        yield b"retry: 2000\n: stream open\n\n"
        while not hub.shutdown.is_set():
            wake.clear()  # before reading: a commit during the read wakes the next wait
            while True:
                dropped, after, rows = await asyncio.to_thread(
                    hub._read, hub.catch_up, flt, after, backlog
                )
                if dropped:
                    hub.dropped.inc(dropped)
                    note = {"dropped": dropped, "resume_after": after}
                    yield b"event: dropped\ndata: %s\n\n" % orjson.dumps(note)
                if rows:
                    after = rows[-1][0]
                    yield b"".join(_message(r) for r in rows)
                if len(rows) < PAGE:
                    break
            try:
                await asyncio.wait_for(wake.wait(), heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"
    finally:
        hub.unregister(entry)
