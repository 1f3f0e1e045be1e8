"""The event store's write path, the same on every backend: one writer thread, group commit.

Every write goes through one thread that owns the write connection. Requests hand it batches
and wait for the commit: a request is acknowledged only once its events are committed, and
concurrent requests share one transaction (group commit), which is what makes ingest fast.
Readers use connections of their own. A backend (collector/store/sqlite.py, postgres.py) supplies
the connections and the few statements its engine does its own way; what a commit works out
(collector/store/derive.py) is shared.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from collector.events import Event
from collector.pricing import PriceTable
from collector.store.derive import DURATION, Committed, Facts, ToolPairs, derive, roll_up
from collector.store.sql import Connection

log = logging.getLogger("collector.store")

MAX_EVENTS_PER_TRANSACTION = 5000
RETENTION_CHUNK = 5000


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
    fn: Callable[[Connection], Any]
    future: Future[Any] = field(default_factory=Future)


# listener(committed) runs on the writer thread after each commit. PostgreSQL also calls it with
# [] when another collector committed: something new to read, nothing to count.
CommitListener = Callable[[list[Committed]], None]


class EventStore(ABC):
    """The store's contract for the rest of the collector, and its write path."""

    # The driver's errors that mean "this write failed" (the transaction is rolled back).
    db_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(
        self,
        *,
        queue_max_events: int = 100_000,
        on_write: Callable[[float, int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.prices = prices or PriceTable()
        self.capacity = queue_max_events
        self._on_write = on_write
        self._on_error = on_error
        self._listeners: list[CommitListener] = []
        self._queue: queue.Queue[_Write | _Task | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self.failure: str | None = None  # why writes fail right now, None when healthy
        self.corrupt: str | None = None  # set by the integrity check; writes are then refused
        self._closing = False

    # -- what a backend supplies ------------------------------------------------------------
    @abstractmethod
    def _open(self) -> Connection:
        """Connect, migrate, start the backend's own threads; the writer's connection."""

    @abstractmethod
    def _close(self) -> None:
        """After the writer stopped: close the writer's connection and the backend's threads."""

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit_transaction(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _first_seq(self, n: int) -> int:
        """The seq of the first of n rows about to be inserted (they get consecutive seqs)."""

    @abstractmethod
    def _row(self, e: Event) -> list[Any]:
        """The events row of an Event as the backend inserts it, duration_ms last."""

    @abstractmethod
    def _insert_rows(self, rows: list[list[Any]], first_seq: int) -> bool:
        """Insert; False (and a transaction to roll back) when some were stored before."""

    @abstractmethod
    def _stored_ids(self, events: list[Event]) -> set[Any]:
        """Which of the events' ids are stored (in the form _event_key gives)."""

    @abstractmethod
    def _event_key(self, e: Event) -> Any: ...

    @abstractmethod
    def reader(self) -> AbstractContextManager[Connection]:
        """A read connection (collector.store.sql.Connection) for the calling thread."""

    @abstractmethod
    def size_bytes(self) -> int: ...

    @abstractmethod
    def check_integrity(self, mode: str = "quick") -> str | None:
        """None when ok, else why the store is corrupt (and self.corrupt set)."""

    @abstractmethod
    def _after_prune(self) -> None:
        """After a prune that deleted rows."""

    def relay_leader(self) -> bool:
        """Whether this collector exports (collector/otlp/relay.py). One collector per store
        file: always; PostgreSQL elects one among the collectors that share it."""
        return True

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed), migrate and start the writer. Raises StoreError clearly."""
        self._conn = self._open()
        self._closing = False
        self._writer = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Stop taking writes, commit everything queued, then stop the writer."""
        if self._writer is None:
            return
        self._closing = True
        self._queue.put(None)
        self._writer.join()
        self._writer = None
        closed = StoreError("the store is closed")
        while not self._queue.empty():  # anything queued after the sentinel
            item = self._queue.get_nowait()
            if isinstance(item, _Task):
                item.future.set_exception(closed)
            elif isinstance(item, _Write):
                item.done(closed)
        self._close()

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
        """listener(committed) runs on the writer thread after each commit, with the new events,
        before the writes are acknowledged: it must be cheap (set a flag, schedule work)."""
        self._listeners.append(listener)

    def _notify(self, committed: list[Committed]) -> None:
        for listener in self._listeners:
            try:
                listener(committed)
            except Exception:
                log.exception("commit listener failed")

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

    def run_task(self, fn: Callable[[Connection], Any]) -> Future[Any]:
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
            self._begin()
            result = task.fn(self._conn)
            self._commit_transaction()
            task.future.set_result(result)
        except BaseException as exc:
            self._safe_rollback()
            task.future.set_exception(exc)

    def _safe_rollback(self) -> None:
        try:
            self._rollback()
        except self.db_errors:
            log.exception("rollback failed")

    def _commit(self, writes: list[_Write]) -> None:
        started = time.perf_counter()
        n = sum(len(w.events) for w in writes)
        try:
            results, committed = self._insert(writes)
        except self.db_errors as exc:
            self._safe_rollback()
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
        self._notify(committed)
        for w, res in zip(writes, results, strict=True):
            w.done(res)
        self._release(n)
        if self._on_write:
            self._on_write(time.perf_counter() - started, n)

    def _release(self, n: int) -> None:
        with self._pending_lock:
            self._pending -= n

    def _insert(self, writes: list[_Write]) -> tuple[list[list[bool]], list[Committed]]:
        events = [e for w in writes for e in w.events]
        rows = [self._row(e) for e in events]  # before the transaction: no lock held for it
        flags = [True] * len(events)
        new = events
        self._begin()
        inserted = self._insert_new(new, rows)
        if inserted is None:
            # Some were stored before (a retry after a lost acknowledgement): start again with
            # only the new ones, so seqs and tool-call pairs are worked out on what is inserted.
            self._rollback()
            self._begin()
            seen = self._stored_ids(events)
            flags = []
            for e in events:
                key = self._event_key(e)
                flags.append(key not in seen)  # a repeat within the batch is a duplicate too
                seen.add(key)
            new = [e for e, f in zip(events, flags, strict=True) if f]
            rows = [r for r, f in zip(rows, flags, strict=True) if f]
            for row in rows:
                row[DURATION] = None  # as the pairing found them, before it filled them in
            inserted = self._insert_new(new, rows)
            if inserted is None:
                raise StoreError("events were stored by another writer during this commit")
        facts, first_seq, pairs = inserted
        pairs.save(self._conn)
        roll_up(self._conn, new, facts, first_seq, self.prices)
        self._commit_transaction()
        results: list[list[bool]] = []
        i = 0
        for w in writes:
            results.append(flags[i : i + len(w.events)])
            i += len(w.events)
        return results, [Committed(e, f) for e, f in zip(new, facts, strict=True)]

    def _insert_new(
        self, events: list[Event], rows: list[list[Any]]
    ) -> tuple[list[Facts], int, ToolPairs] | None:
        """Insert events (as rows) with their tool calls paired; None when some were stored."""
        first_seq = self._first_seq(len(events)) if events else 0
        facts, pairs = derive(self._conn, events, rows, first_seq)
        if events and not self._insert_rows(rows, first_seq):
            return None
        return facts, first_seq, pairs

    # -- reads -----------------------------------------------------------------------------
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

    # -- maintenance (on the writer thread) -------------------------------------------------
    def prune(self, cutoff_ms: int) -> int:
        """Delete events (and their unpaired tool calls and sessions) older than cutoff; returns
        events deleted. Runs in chunks, each its own writer task, so ingest interleaves."""
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

        def rest(c: Connection) -> None:
            c.execute("DELETE FROM open_calls WHERE ts < ?", (cutoff_ms,))
            c.execute("DELETE FROM sessions WHERE last_ts < ?", (cutoff_ms,))

        self.run_task(rest).result()
        if deleted:
            self._after_prune()
        return deleted
