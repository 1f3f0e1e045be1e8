"""The PostgreSQL backend: one database shared by any number of collectors (AGENTWATCH_DB).

Each collector keeps its own writer thread and group commit. Across collectors, a commit holds
a transaction-level advisory lock from its first read to its COMMIT: commits are serialised, so
seqs become visible in order (the relay's cursor never skips a row committed late), and the
derivations (tool-call pairs, session rollups) see every earlier commit, whichever collector
made it. A re-send that reaches another collector meets the UNIQUE event_id like any other.
Rows go in with COPY. Every commit NOTIFYs, so each collector's /v1/stream and relay wake up for
events another collector ingested.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from collector.events import Event
from collector.store.base import EventStore, StoreError, log
from collector.store.derive import select_in
from collector.store.postgres_schema import (
    NOTIFY_CHANNEL,
    RELAY_LOCK,
    WRITE_LOCK,
    migrate,
)
from collector.store.rows import COLUMNS, event_row
from collector.store.sql import Connection, PgConnection

COPY_EVENTS = f"COPY events (seq, {COLUMNS}) FROM STDIN"
READERS = 8  # pooled read connections per collector
LISTEN_TIMEOUT = 0.25  # how often the listener checks that it should stop (bounds close())


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class PostgresStore(EventStore):
    db_errors = (psycopg.Error, PoolTimeout, OSError)

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = url
        self._stop_listening = threading.Event()
        self._relay_conn: psycopg.Connection[Any] | None = None
        self._relay_leading = False
        self._relay_lock = threading.Lock()
        self._inserted = False  # this transaction inserted events

    def _open(self) -> Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store at {safe_url(self.url)}: {exc}") from exc
        try:
            migrate(conn)
            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=READERS,
                kwargs={"autocommit": True},
                name="agentwatch-readers",
                open=True,
            )
        except (psycopg.Error, StoreError) as exc:
            conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the store at {safe_url(self.url)}: {exc}") from exc
        self._pg = conn
        self._stop_listening.clear()
        self._listener = threading.Thread(target=self._listen, name="store-listener", daemon=True)
        self._listener.start()
        return PgConnection(conn)

    def _close(self) -> None:
        self._stop_listening.set()
        self._listener.join()
        with self._relay_lock:
            if self._relay_conn is not None:
                self._relay_conn.close()  # the relay lock goes with its connection
                self._relay_conn = None
        self._pool.close()
        self._pg.close()

    # -- the write path ----------------------------------------------------------------------
    # Statements without parameters go as one round trip (the simple query protocol).
    def _begin(self) -> None:
        self._pg.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        self._inserted = False

    def _commit_transaction(self) -> None:
        self._pg.execute(f"NOTIFY {NOTIFY_CHANNEL}; COMMIT" if self._inserted else "COMMIT")

    def _rollback(self) -> None:
        if self._pg.closed:
            self._pg = psycopg.connect(self.url, autocommit=True)  # the server went away
            self._conn = PgConnection(self._pg)
        elif self._pg.info.transaction_status != TransactionStatus.IDLE:
            self._pg.execute("ROLLBACK")

    def _first_seq(self, n: int) -> int:
        # Under the write lock only this transaction draws from the sequence: n in a row.
        (last,) = self._pg.execute(
            "SELECT setval('events_seq', nextval('events_seq') + %s - 1)", (n,)
        ).fetchone() or (0,)
        return int(last) - n + 1

    def _row(self, e: Event) -> list[Any]:
        return event_row(e, packed=False)

    def _insert_rows(self, rows: list[list[Any]], first_seq: int) -> bool:
        try:
            with self._pg.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
                for i, row in enumerate(rows):
                    copy.write_row((first_seq + i, *row))
        except pg_errors.UniqueViolation:
            return False
        self._inserted = True  # NOTIFY at COMMIT: the other collectors' streams and relay wake
        return True

    def _event_key(self, e: Event) -> Any:
        return e.event_id

    def _stored_ids(self, events: list[Event]) -> set[Any]:
        sql = "SELECT event_id FROM events WHERE event_id IN ({})"
        return {r[0] for r in select_in(self._conn, sql, {e.event_id for e in events})}

    # -- reads -----------------------------------------------------------------------------
    @contextmanager
    def reader(self) -> Iterator[Connection]:
        with self._pool.connection() as conn:
            yield PgConnection(conn)

    def size_bytes(self) -> int:
        with self.reader() as conn:
            (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(size)

    def check_integrity(self, mode: str = "quick") -> str | None:
        return None  # PostgreSQL checks its pages itself (and data_checksums where enabled)

    def _after_prune(self) -> None:
        pass  # autovacuum reuses the space

    # -- several collectors ------------------------------------------------------------------
    def _listen(self) -> None:
        """Wake the commit listeners (stream, relay) when any collector commits."""
        while not self._stop_listening.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stop_listening.is_set():
                        if any(True for _ in conn.notifies(timeout=LISTEN_TIMEOUT)):
                            self._notify([])
            except psycopg.Error as exc:
                log.warning("store listener reconnecting: %s", exc)
                self._stop_listening.wait(LISTEN_TIMEOUT)

    def relay_leader(self) -> bool:
        """Whether this collector is the one that exports: it holds the relay lock, a session
        advisory lock that PostgreSQL releases when the holder's connection ends (a killed
        collector included), so another takes over at its next try."""
        with self._relay_lock:
            try:
                if self._relay_conn is None or self._relay_conn.closed:
                    self._relay_leading = False
                    self._relay_conn = psycopg.connect(self.url, autocommit=True)
                if self._relay_leading:
                    self._relay_conn.execute("SELECT 1")  # still connected: still the holder
                else:
                    row = self._relay_conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK,)
                    ).fetchone()
                    self._relay_leading = bool(row and row[0])
            except psycopg.Error as exc:
                log.warning("relay lock lost: %s", exc)
                if self._relay_conn is not None:
                    self._relay_conn.close()
                self._relay_conn = None
                self._relay_leading = False
            return self._relay_leading
