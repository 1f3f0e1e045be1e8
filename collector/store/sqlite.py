"""The embedded SQLite backend: one file, WAL, checkpoints off the commit path, packed rows.

Readers use their own read-only connections (WAL lets them run beside the writer).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from collector import payloads
from collector.events import Event
from collector.store.base import EventStore, StoreError, log
from collector.store.derive import select_in
from collector.store.rows import COLUMNS, event_row
from collector.store.sql import Connection
from collector.store.sqlite_schema import migrate

CHECKPOINT_SECONDS = 0.5
INSERT_EVENT = f"INSERT OR IGNORE INTO events ({COLUMNS}) VALUES ({', '.join('?' * 19)})"


class SQLiteStore(EventStore):
    db_errors = (sqlite3.Error, OSError)

    def __init__(self, path: Path, *, synchronous: str = "NORMAL", **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._stop_checkpoints = threading.Event()

    def _open(self) -> Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            configure_writer(conn, self.synchronous)
            migrate(conn, self.path)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._sqlite = conn
        self._stop_checkpoints.clear()
        self._checkpointer = threading.Thread(
            target=checkpoint_until,
            args=(self.path, self._stop_checkpoints),
            name="store-checkpointer",
            daemon=True,
        )
        self._checkpointer.start()
        return conn

    def _close(self) -> None:
        # Its connection closed first, the writer's close below is the last one (when no reader
        # is open): SQLite then checkpoints the whole WAL and removes it, not left beside the file.
        self._stop_checkpoints.set()
        self._checkpointer.join()
        self._sqlite.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._sqlite.close()

    def _begin(self) -> None:
        self._sqlite.execute("BEGIN IMMEDIATE")

    def _commit_transaction(self) -> None:
        self._sqlite.execute("COMMIT")

    def _rollback(self) -> None:
        if self._sqlite.in_transaction:
            self._sqlite.execute("ROLLBACK")

    def _first_seq(self, n: int) -> int:
        row = self._sqlite.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()
        return (row[0] if row else 0) + 1  # one writer: the rows get consecutive seqs

    def _row(self, e: Event) -> list[Any]:
        return event_row(e, packed=True)

    def _insert_rows(self, rows: list[list[Any]], first_seq: int) -> bool:
        before = self._sqlite.total_changes
        self._sqlite.executemany(INSERT_EVENT, rows)
        return self._sqlite.total_changes - before == len(rows)

    def _event_key(self, e: Event) -> Any:
        return payloads.pack_event_id(e.event_id)

    def _stored_ids(self, events: list[Event]) -> set[Any]:
        sql = "SELECT event_id FROM events WHERE event_id IN ({})"
        keys = {self._event_key(e) for e in events}
        return {r[0] for r in select_in(self._sqlite, sql, keys)}

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

    def _after_prune(self) -> None:
        # Hand freed pages back to the file system (auto_vacuum=INCREMENTAL).
        self.run_task(lambda c: c.execute("PRAGMA incremental_vacuum").fetchall()).result()


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
