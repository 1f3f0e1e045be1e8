"""The SQLite event store: WAL, one writer thread with group commit, migrations, retention.

Every write goes through one thread that owns the write connection. Requests hand it batches
and wait for the commit: a request is acknowledged only once its events are committed, and
concurrent requests share one transaction (group commit), which is what makes ingest fast.
Readers use their own read-only connections (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector import payloads
from collector.accounting import SessionCost
from collector.counting import Counted, count
from collector.events import Event, batch_calls, input_digest
from collector.pricing import PriceTable
from collector.vocabulary import SOURCE_OTEL, TOOL_END_EVENTS, HookEvent

log = logging.getLogger("collector.store")

MAX_EVENTS_PER_TRANSACTION = 5000
RETENTION_CHUNK = 5000
CHECKPOINT_SECONDS = 0.5


def _pack_rows(conn: sqlite3.Connection) -> None:
    """Schema 2 (a third of the bytes): packed event ids and payloads (collector/payloads.py), the
    main agent's id and type implied by NULLs, loop-detection hashes and durations on the events.

    The tool_calls table (a tenth of the store, with its indexes) goes: the tree pairs calls from
    the session's own events, statistics read durations from the end events, and only calls with
    one end seen so far wait in open_calls."""
    conn.create_function("aw_pack", 4, payloads.pack, deterministic=True)
    conn.create_function("aw_pack_id", 1, payloads.pack_event_id, deterministic=True)
    conn.create_function("aw_input_hash", 1, _input_hash_of_payload, deterministic=True)
    for statement in _statements(_SCHEMA_2):
        conn.execute(statement)


_SCHEMA_2 = """
ALTER TABLE events ADD COLUMN input_hash INTEGER;
ALTER TABLE events ADD COLUMN duration_ms INTEGER;
CREATE TABLE open_calls (
    tool_use_id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    end_seq INTEGER  -- NULL when the PreToolUse came first, else the seq of the end event
) WITHOUT ROWID;
INSERT INTO open_calls
    SELECT tool_use_id, start_ts, NULL FROM tool_calls WHERE end_ts IS NULL AND start_ts IS NOT NULL;
INSERT OR IGNORE INTO open_calls
    SELECT e.tool_use_id, e.ts, e.seq FROM events e JOIN tool_calls t USING (tool_use_id)
    WHERE t.start_ts IS NULL AND e.hook_event IN ('PostToolUse', 'PostToolUseFailure');
UPDATE events SET
    duration_ms = CASE WHEN hook_event IN ('PostToolUse', 'PostToolUseFailure') THEN
        (SELECT duration_ms FROM tool_calls t WHERE t.tool_use_id = events.tool_use_id) END,
    input_hash = CASE WHEN hook_event = 'PreToolUse' THEN aw_input_hash(payload) END,
    event_id = aw_pack_id(event_id),
    agent_id = nullif(agent_id, session_id),
    agent_type = CASE WHEN parent_agent_id IS NULL AND agent_type = 'main' THEN NULL
        ELSE agent_type END,
    payload = aw_pack(payload, session_id, tool_use_id, source_app);
DROP TABLE tool_calls
"""


def _input_hash_of_payload(payload: str) -> int | None:
    """A stored (schema 1) payload's loop-detection hash; its tool_input is the redacted one."""
    value = orjson.loads(payload)
    if not isinstance(value, dict) or "tool_input" not in value:
        return None
    return stored_input_hash(input_digest(value["tool_input"]))


def stored_input_hash(input_hash: str | None) -> int | None:
    """An Event's input_hash ("tool:hex digest") as the signed 64-bit integer SQLite keeps in
    8 bytes (the tool has a column of its own)."""
    if input_hash is None:
        return None
    return int.from_bytes(bytes.fromhex(input_hash.rsplit(":", 1)[-1]), "big", signed=True)


def _session_costs(conn: sqlite3.Connection) -> None:
    """Schema 3: each session's tokens and cost by model (collector/accounting.py), and Claude
    Code's own totals on the events that brought them. Existing sessions are summed from their
    events' usage, priced as before: estimated."""
    for statement in _statements(_SCHEMA_3):
        conn.execute(statement)
    prices = PriceTable()
    sessions = conn.execute("SELECT session_id FROM sessions WHERE tokens > 0").fetchall()
    for (sid,) in sessions:
        cost = SessionCost()
        for (usage,) in conn.execute(
            "SELECT usage FROM events WHERE session_id = ? AND usage IS NOT NULL", (sid,)
        ):
            cost.add_transcript(orjson.loads(usage), prices)
        conn.execute(
            "UPDATE sessions SET models = ? WHERE session_id = ?",
            (orjson.dumps(cost.dump()).decode(), sid),
        )


def _event_source(conn: sqlite3.Connection) -> None:
    """Schema 4: where each event came from (hook, or otel: Claude Code's own events)."""
    conn.execute("ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'hook'")


_SCHEMA_3 = """
ALTER TABLE events ADD COLUMN cost_state TEXT;
ALTER TABLE sessions ADD COLUMN models TEXT;
ALTER TABLE sessions ADD COLUMN cost_source TEXT NOT NULL DEFAULT 'estimated'
"""


# Each entry migrates the schema from version i to i+1 (PRAGMA user_version).
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        ts INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        source_app TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        agent_id TEXT,
        parent_agent_id TEXT,
        agent_type TEXT,
        hook_event TEXT NOT NULL,
        tool_name TEXT,
        tool_use_id TEXT,
        outcome TEXT NOT NULL DEFAULT '',
        usage TEXT,
        payload TEXT NOT NULL
    );
    CREATE INDEX events_session_ts ON events(session_id, ts);
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_hook_ts ON events(hook_event, ts);
    CREATE INDEX events_tool_ts ON events(tool_name, ts) WHERE tool_name IS NOT NULL;
    CREATE TABLE tool_calls (
        tool_use_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        agent_id TEXT,
        tool_name TEXT,
        start_ts INTEGER,
        end_ts INTEGER,
        duration_ms INTEGER,
        outcome TEXT
    );
    CREATE INDEX tool_calls_session ON tool_calls(session_id);
    CREATE INDEX tool_calls_end ON tool_calls(end_ts);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        source_app TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        ended_ts INTEGER,
        events INTEGER NOT NULL DEFAULT 0,
        tool_calls INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        prompts INTEGER NOT NULL DEFAULT 0,
        subagents INTEGER NOT NULL DEFAULT 0,
        tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_last ON sessions(last_ts);
    CREATE INDEX sessions_app_last ON sessions(source_app, last_ts);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    _pack_rows,
    _session_costs,
    _event_source,
]

_INSERT_EVENT = """
INSERT OR IGNORE INTO events (event_id, ts, received_at, source_app, machine_id, session_id,
    agent_id, parent_agent_id, agent_type, hook_event, tool_name, tool_use_id, outcome, usage, payload,
    input_hash, cost_state, source, duration_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_DURATION = 18  # duration_ms's place in an event_row()
_SESSION_UPSERT = """
INSERT INTO sessions (session_id, source_app, machine_id, first_ts, last_ts, ended_ts, events,
    tool_calls, errors, prompts, subagents)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    source_app = CASE WHEN source_app = 'unknown' THEN excluded.source_app ELSE source_app END,
    machine_id = CASE WHEN machine_id = 'unknown' THEN excluded.machine_id ELSE machine_id END,
    ended_ts = coalesce(excluded.ended_ts, ended_ts), events = events + excluded.events,
    tool_calls = tool_calls + excluded.tool_calls, errors = errors + excluded.errors,
    prompts = prompts + excluded.prompts, subagents = subagents + excluded.subagents
RETURNING first_ts
"""


class _StoredSeen:
    """counting.Seen over this store: the rows committed before (seq < first_new) and the events
    of this commit counted so far. Only SubagentStart/Stop and PostToolBatch ask (a few a turn)."""

    _ENDS = tuple(sorted(TOOL_END_EVENTS))
    _SUBAGENT = (HookEvent.SUBAGENT_START, HookEvent.SUBAGENT_STOP)

    def __init__(self, cur: sqlite3.Cursor, first_new: int) -> None:
        self.cur = cur
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
        row = self.cur.execute(
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


class StoreError(RuntimeError):
    """The store cannot take writes (disk full, unwritable, corrupt): nothing was committed."""


class StoreSaturated(StoreError):
    """The writer queue is full; the client should retry later."""


@dataclass
class _Write:
    events: list[Event]
    done: Callable[[list[bool] | BaseException], None]


@dataclass
class _Task:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any] = field(default_factory=Future)


CommitListener = Callable[[list[Event]], None]


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


class Store:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        queue_max_events: int = 100_000,
        on_write: Callable[[float, int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.path = path
        self.prices = prices or PriceTable()
        self.synchronous = synchronous
        self.capacity = queue_max_events
        self._on_write = on_write
        self._on_error = on_error
        self._listeners: list[CommitListener] = []
        self._queue: queue.Queue[_Write | _Task | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self.failure: str | None = None  # why writes fail right now, None when healthy
        self.corrupt: str | None = None  # set by the integrity check; writes are then refused
        self._closing = False
        self._stop_checkpoints = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed), migrate and start the writer. Raises StoreError clearly."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            configure_writer(conn, self.synchronous)
            migrate(conn, self.path)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._conn = conn
        self._writer = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._writer.start()
        self._stop_checkpoints.clear()
        self._checkpointer = threading.Thread(
            target=checkpoint_until,
            args=(self.path, self._stop_checkpoints),
            name="store-checkpointer",
            daemon=True,
        )
        self._checkpointer.start()

    def check_integrity(self, mode: str = "quick") -> str | None:
        """Run PRAGMA quick_check/integrity_check on a separate connection; None when ok."""
        pragma = "integrity_check" if mode == "full" else "quick_check"
        try:
            with self.reader() as conn:
                rows = conn.execute(f"PRAGMA {pragma}(10)").fetchall()
        except sqlite3.DatabaseError as exc:
            rows = [(str(exc),)]
        problems = [str(r[0]) for r in rows if r[0] != "ok"]
        if problems:
            self.corrupt = f"integrity check failed: {'; '.join(problems)[:500]}"
            log.error("store integrity check failed", extra={"problems": problems[:10]})
            return self.corrupt
        return None

    def close(self) -> None:
        """Stop taking writes, commit everything queued, then stop the writer."""
        if self._writer is None:
            return
        self._closing = True
        self._stop_checkpoints.set()
        self._queue.put(None)
        self._writer.join()
        self._writer = None
        # Its connection closed first, the writer's close below is the last one (when no reader
        # is open): SQLite then checkpoints the whole WAL and removes it, not left beside the file.
        self._checkpointer.join()
        closed = StoreError("the store is closed")
        while not self._queue.empty():  # anything queued after the sentinel
            item = self._queue.get_nowait()
            if isinstance(item, _Task):
                item.future.set_exception(closed)
            elif isinstance(item, _Write):
                item.done(closed)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()

    @property
    def running(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def probe(self, timeout: float = 2.0) -> None:
        """After a failed write, try a tiny one: readiness recovers without waiting for traffic."""
        try:
            self.set_meta("probe", str(time.time())).result(timeout)
            self.failure = None
        except Exception as exc:
            self.failure = f"write failed: {exc}"

    # -- writes ----------------------------------------------------------------------------
    def add_listener(self, listener: CommitListener) -> None:
        """listener(events) runs on the writer thread after each commit, with the new events,
        before the writes are acknowledged: it must be cheap (set a flag, schedule work)."""
        self._listeners.append(listener)

    @property
    def queue_depth(self) -> int:
        return self._pending

    def _reserve(self, n: int) -> None:
        if self.corrupt:
            raise StoreError(self.corrupt)
        if self._writer is None or self._closing:
            raise StoreError("the store is closed")
        with self._pending_lock:
            if self._pending + n > self.capacity and self._pending > 0:
                raise StoreSaturated(
                    f"writer queue full ({self._pending} events pending, capacity {self.capacity})"
                )
            self._pending += n

    async def write(self, events: list[Event]) -> list[bool]:
        """Commit the events; True for each that was new, False for a duplicate event_id."""
        if not events:
            return []
        self._reserve(len(events))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bool]] = loop.create_future()

        def done(result: list[bool] | BaseException) -> None:
            def resolve() -> None:
                if fut.done():
                    return
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

            loop.call_soon_threadsafe(resolve)

        self._queue.put(_Write(events, done))
        return await fut

    def write_sync(self, events: list[Event]) -> list[bool]:
        """write() for threads that have no event loop (tests, tools)."""
        self._reserve(len(events))
        out: Future[list[bool]] = Future()

        def done(result: list[bool] | BaseException) -> None:
            if isinstance(result, BaseException):
                out.set_exception(result)
            else:
                out.set_result(result)

        self._queue.put(_Write(events, done))
        return out.result()

    def run_task(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        """Run fn(conn) on the writer thread, inside a transaction (for maintenance and cursors)."""
        task = _Task(fn)
        if self._writer is None or self._closing:
            task.future.set_exception(StoreError("the store is closed"))
        else:
            self._queue.put(task)
        return task.future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Task):
                self._run_task(item)
                continue
            writes = [item]
            count = len(item.events)
            stop = False
            while count < MAX_EVENTS_PER_TRANSACTION:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, _Task):
                    self._commit(writes)
                    writes, count = [], 0
                    self._run_task(nxt)
                    continue
                writes.append(nxt)
                count += len(nxt.events)
            if writes:
                self._commit(writes)
            if stop:
                # Drain whatever is still queued (SIGTERM: nothing accepted is dropped).
                rest: list[_Write] = []
                while not self._queue.empty():
                    extra = self._queue.get_nowait()
                    if isinstance(extra, _Write):
                        rest.append(extra)
                    elif isinstance(extra, _Task):
                        self._run_task(extra)
                if rest:
                    self._commit(rest)
                return

    def _run_task(self, task: _Task) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            result = task.fn(self._conn)
            self._conn.execute("COMMIT")
            task.future.set_result(result)
        except BaseException as exc:
            self._rollback()
            task.future.set_exception(exc)

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed")

    def _commit(self, writes: list[_Write]) -> None:
        started = time.perf_counter()
        n = sum(len(w.events) for w in writes)
        try:
            results, new = self._insert(writes)
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            self.failure = f"write failed: {exc}"
            log.error("store write failed", extra={"events": n, "error": str(exc)})
            if self._on_error:
                self._on_error(exc)
            err = StoreError(self.failure)
            for w in writes:
                w.done(err)
            self._release(n)
            return
        self.failure = None
        # Listeners first: one that hands the events to the event loop then runs before the
        # writers' continuations, so whatever a request does next already sees its events.
        for listener in self._listeners:
            try:
                listener(new)
            except Exception:
                log.exception("commit listener failed")
        for w, res in zip(writes, results, strict=True):
            w.done(res)
        self._release(n)
        if self._on_write:
            self._on_write(time.perf_counter() - started, n)

    def _release(self, n: int) -> None:
        with self._pending_lock:
            self._pending -= n

    def _insert(self, writes: list[_Write]) -> tuple[list[list[bool]], list[Event]]:
        conn = self._conn
        events = [e for w in writes for e in w.events]
        flags = [True] * len(events)
        new = events
        conn.execute("BEGIN IMMEDIATE")
        if not self._insert_new(conn, events):
            # Some were stored before (a retry after a lost acknowledgement): start again with
            # only the new ones, so seqs and tool-call pairs are worked out on what is inserted.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            flags = self._new_flags(conn, events)
            new = [e for e, f in zip(events, flags, strict=True) if f]
            self._insert_new(conn, new)
        self._upsert_sessions(conn.cursor(), new)
        self._account(conn, new)
        conn.execute("COMMIT")
        results: list[list[bool]] = []
        i = 0
        for w in writes:
            results.append(flags[i : i + len(w.events)])
            i += len(w.events)
        return results, new

    @staticmethod
    def _insert_new(conn: sqlite3.Connection, events: list[Event]) -> bool:
        """Insert events with their tool calls paired; False (and a transaction to roll back)
        when some were already stored."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        first_seq = (row[0] if row else 0) + 1  # one writer: the rows get consecutive seqs
        rows = [event_row(e) for e in events]
        pairs = _ToolPairs(conn, events, rows, first_seq)
        before = conn.total_changes
        conn.executemany(_INSERT_EVENT, rows)
        if conn.total_changes - before != len(events):
            return False
        pairs.save(conn)
        return True

    @staticmethod
    def _new_flags(conn: sqlite3.Connection, events: list[Event]) -> list[bool]:
        """Which events are not stored yet (a repeat within the batch is a duplicate too)."""
        keys = [payloads.pack_event_id(e.event_id) for e in events]
        sql = "SELECT event_id FROM events WHERE event_id IN ({})"
        seen: set[bytes | str] = {r[0] for r in _select_in(conn, sql, set(keys))}
        flags = []
        for key in keys:
            flags.append(key not in seen)
            seen.add(key)
        return flags

    @staticmethod
    def _upsert_sessions(cur: sqlite3.Cursor, new: list[Event]) -> None:
        deltas: dict[str, _SessionDelta] = {}
        (last_seq,) = cur.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()
        seen = _StoredSeen(cur, last_seq - len(new) + 1)  # the new rows have the last seqs
        for e in new:
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
            c = e.counted = count(e, seen)
            seen.note(e, c)
            d.tool_calls += len(c.tool_calls)
            d.prompts += c.prompt
            d.subagents += c.subagent
            d.errors += c.error
        for sid, d in deltas.items():
            row = cur.execute(
                _SESSION_UPSERT,
                (
                    sid,
                    d.source_app,
                    d.machine_id,
                    d.first_ts,
                    d.last_ts,
                    d.ended_ts,
                    d.events,
                    d.tool_calls,
                    d.errors,
                    d.prompts,
                    d.subagents,
                ),
            ).fetchone()
            if d.ended_ts is not None:
                for e in new:
                    if e.session_id == sid and e.hook_event == HookEvent.SESSION_END:
                        e.session_started_ts = row[0]

    def _account(self, conn: sqlite3.Connection, new: list[Event]) -> None:
        """Tokens and cost: each session's figures move on, and each event learns what it adds
        to the counters (collector/accounting.py)."""
        costly = [e for e in new if e.usage or e.cost_state or e.user]
        if not costly:
            return
        sql = "SELECT session_id, models FROM sessions WHERE session_id IN ({})"
        sessions = {
            sid: SessionCost.load(orjson.loads(models) if models else None)
            for sid, models in _select_in(conn, sql, {e.session_id for e in costly})
        }
        for e in costly:
            cost = sessions[e.session_id]
            if e.user and (e.source == SOURCE_OTEL or cost.user is None):
                cost.user = e.user  # Claude Code's own events name it as the operator chose
            if e.source == SOURCE_OTEL:
                e.increments = cost.add_native(e.usage or {}, e.cost_usd, e.user)
            else:
                e.increments = cost.add_transcript(e.usage or {}, self.prices)
            if e.cost_state:
                e.increments += cost.settle(e.cost_state)
            e.user = e.user or cost.user  # the session's user labels what it adds
        conn.executemany(
            "UPDATE sessions SET models = ?, cost_source = ?, tokens = ?, cost_usd = ? "
            "WHERE session_id = ?",
            [
                (orjson.dumps(c.dump()).decode(), c.cost_source, c.tokens, c.cost_usd, sid)
                for sid, c in sessions.items()
            ],
        )

    # -- reads -----------------------------------------------------------------------------
    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection private to the calling thread."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA query_only = 1")
            payloads.register(conn)
            self._local.conn = conn
        yield conn

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    # -- maintenance (on the writer thread) -------------------------------------------------
    def prune(self, cutoff_ms: int) -> int:
        """Delete events (and their unpaired tool calls and sessions) older than cutoff; returns events deleted.

        Runs in chunks, each its own writer task, so ingest interleaves with a large prune.
        """
        deleted = 0
        while True:
            n = self.run_task(
                lambda c: (
                    c.execute(
                        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ? LIMIT ?)",
                        (cutoff_ms, RETENTION_CHUNK),
                    ).rowcount
                )
            ).result()
            deleted += int(n)
            if n < RETENTION_CHUNK:
                break

        def rest(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM open_calls WHERE ts < ?", (cutoff_ms,))
            c.execute("DELETE FROM sessions WHERE last_ts < ?", (cutoff_ms,))

        self.run_task(rest).result()
        if deleted:
            # Hand freed pages back to the file system (auto_vacuum=INCREMENTAL).
            self.run_task(lambda c: c.execute("PRAGMA incremental_vacuum").fetchall()).result()
        return deleted

    def session_app(self, session_id: str) -> str | None:
        """The project a stored session belongs to (its first event's source_app)."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT source_app FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def get_meta(self, key: str) -> str | None:
        with self.reader() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> Future[Any]:
        return self.run_task(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file's schema up to len(MIGRATIONS), one transaction per step."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} has schema version {version}, newer than this collector "
            f"({len(MIGRATIONS)}): upgrade the collector"
        )
    for target in range(version, len(MIGRATIONS)):
        # Schema 2 rewrites every row, then VACUUMs: ~30 s a million events, once.
        log.info("store migrating", extra={"schema_version": target + 1})
        conn.execute("BEGIN IMMEDIATE")
        migration = MIGRATIONS[target]
        if callable(migration):
            migration(conn)
        else:
            for statement in _statements(migration):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target + 1}")
        conn.execute("COMMIT")
        log.info("store migrated", extra={"schema_version": target + 1})
    if 0 < version < 2 <= len(MIGRATIONS):
        conn.execute("VACUUM")  # schema 2 shrank every row in place: give the two thirds back


def checkpoint_until(path: Path, stop: threading.Event) -> None:
    """Copy the WAL into the database from a thread of its own (PASSIVE: it never blocks the
    writer) until `stop` is set. With SQLite's automatic checkpoints the commit that crosses the
    threshold does this work, fsync included, while every request behind it waits: a latency tail.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    try:
        while not stop.wait(CHECKPOINT_SECONDS):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("checkpoint failed: %s", exc)
    finally:
        conn.close()


def configure_writer(conn: sqlite3.Connection, synchronous: str) -> None:
    """The write connection's pragmas (also used by the benchmark's raw-insert baseline)."""
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA cache_size = -32768")
    conn.execute("PRAGMA journal_size_limit = 67108864")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoint_until() does it off the commit path


def event_row(e: Event) -> list[Any]:
    """The events-table row of an Event, in _INSERT_EVENT's column order (duration_ms is filled
    in by the tool-call pairing)."""
    usage = orjson.dumps(e.usage).decode() if e.usage else None
    return [
        payloads.pack_event_id(e.event_id),
        e.ts,
        e.received_at,
        e.source_app,
        e.machine_id,
        e.session_id,
        None if e.agent_id == e.session_id else e.agent_id,
        e.parent_agent_id,
        None if e.agent_type == "main" and e.parent_agent_id is None else e.agent_type,
        e.hook_event,
        e.tool_name,
        e.tool_use_id,
        e.outcome,
        usage,
        payloads.pack(e.payload, e.session_id, e.tool_use_id, e.source_app),
        stored_input_hash(e.input_hash),
        orjson.dumps(e.cost_state).decode() if e.cost_state else None,
        e.source,
        None,
    ]


def _select_in(conn: sqlite3.Connection, sql: str, values: Iterable[Any]) -> Iterator[Any]:
    """Rows of sql ("... IN ({})") for all the values, 500 bound parameters a statement."""
    values = list(values)
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        yield from conn.execute(sql.format(",".join("?" * len(chunk))), chunk)


class _ToolPairs:
    """PreToolUse and PostToolUse(Failure) meet on tool_use_id, in whichever order they come.

    The end event's row carries the call's duration; the event that completes a pair carries it
    too (for the metrics). A call with one end seen waits in open_calls. Worked out before the
    insert (rows still editable); save() writes open_calls and earlier end rows afterwards.
    """

    def __init__(
        self, conn: sqlite3.Connection, events: list[Event], rows: list[list[Any]], first_seq: int
    ) -> None:
        calls = [
            (i, e)
            for i, e in enumerate(events)
            if e.tool_use_id
            and (e.hook_event == HookEvent.PRE_TOOL_USE or e.hook_event in TOOL_END_EVENTS)
        ]
        self.before: dict[str, tuple[int, int | None]] = {}  # tool_use_id -> (ts, end_seq)
        sql = "SELECT tool_use_id, ts, end_seq FROM open_calls WHERE tool_use_id IN ({})"
        for tid, ts, end_seq in _select_in(conn, sql, {e.tool_use_id for _, e in calls}):
            self.before[tid] = (ts, end_seq)
        self.after: dict[str, tuple[int, int | None] | None] = dict(self.before)
        self.stored_ends: list[tuple[int, int]] = []  # (duration, seq) of end rows stored before
        for e in events:
            e.duration_ms = None
        for i, e in calls:
            tid = e.tool_use_id
            assert tid is not None
            other = self.after.get(tid)
            if e.hook_event == HookEvent.PRE_TOOL_USE:
                end_seq = None if other is None else other[1]
                if other is None or end_seq is None:
                    self.after[tid] = (e.ts, None)
                    continue
                e.duration_ms = max(other[0] - e.ts, 0)
                if end_seq >= first_seq:
                    rows[end_seq - first_seq][_DURATION] = e.duration_ms
                else:
                    self.stored_ends.append((e.duration_ms, end_seq))
            else:
                if other is None or other[1] is not None:
                    self.after[tid] = (e.ts, first_seq + i)
                    continue
                e.duration_ms = rows[i][_DURATION] = max(e.ts - other[0], 0)
            self.after[tid] = None

    def save(self, conn: sqlite3.Connection) -> None:
        if self.stored_ends:
            conn.executemany("UPDATE events SET duration_ms = ? WHERE seq = ?", self.stored_ends)
        gone = [(t,) for t, v in self.after.items() if v is None and t in self.before]
        if gone:
            conn.executemany("DELETE FROM open_calls WHERE tool_use_id = ?", gone)
        waiting = [
            (t, *v) for t, v in self.after.items() if v is not None and v != self.before.get(t)
        ]
        if waiting:
            conn.executemany("INSERT OR REPLACE INTO open_calls VALUES (?, ?, ?)", waiting)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
