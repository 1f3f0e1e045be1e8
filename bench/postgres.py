"""The PostgreSQL store (AGENTWATCH_DB=postgresql://), each figure beside a baseline of the same run.

All on one throw-away cluster from tests/support/postgres.py (Debian's server binaries, fsync and
synchronous_commit off: the data is thrown away, so the figures are of CPU and the engine's work,
not of the disk's flushes; the same holds for both sides of every ratio).

- ingest: two real collectors (uvicorn) on one fresh database, CLIENTS threads POSTing batches of
  BATCH hook envelopes to each (bench/ingest.py's loop and bench/workload.py's events), against a
  raw COPY of the same rows (collector.store.rows.event_row, explicit seqs, BATCH per transaction)
  into a fresh database of the same schema (collector.store.postgres_schema.migrate). Raw and HTTP
  alternate ROUNDS times, each on a fresh database; the ratio is of the medians. Afterwards the
  collectors' database must hold every event exactly once.
- query: bench/query.py's store and queries (1,000,000 events, 30,000 when quick) on PostgreSQL,
  through the collector's own write path and real HTTP requests.
- size: the same sessions written through both engines' stores; bytes per session of SQLite's
  files and of PostgreSQL's tables (pg_total_relation_size: heap, TOAST and indexes).

Without a PostgreSQL server this says so and reports a single unmet figure, postgres_server_available.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from bench.common import Figure, say
from bench.ingest import BATCH, CLIENTS, http_batch_rate
from bench.query import EVENTS_PER_SESSION, Backend, build_store, measure, sqlite_backend
from bench.workload import events as make_events
from collector.events import from_envelope
from collector.settings import Settings
from collector.store.postgres import COPY_EVENTS, PostgresStore
from collector.store.postgres_schema import migrate
from collector.store.rows import event_row
from tests.support.postgres import PostgresCluster, missing_reason, start_postgres
from tests.support.procs import start_collector

COLLECTORS = 2
ROUNDS = 3
# QUICK=1 keeps `make bench` under a minute: SQLite's quick run already times the queries at
# 100,000 events, so PostgreSQL's quick run is a smaller sample of the same figures.
QUICK_EVENTS = 10_000
QUICK_QUERY_EVENTS = 30_000
TABLES_SIZE = (
    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_stat_user_tables"
)


def tables_size(dsn: str) -> int:
    """Bytes on disk of the database's tables: heap, TOAST, indexes, free space and visibility maps
    (not the system catalogs that pg_database_size adds)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(TABLES_SIZE).fetchone()
    return int(row[0]) if row else 0


def raw_copy_rate(dsn: str, envelopes: list[dict[str, object]]) -> float:
    """Rows/s of COPY into the events table of a freshly migrated database, BATCH rows per
    transaction with explicit seqs, as PostgresStore._insert_rows writes them."""
    settings = Settings()
    now = int(time.time() * 1000)
    rows = [event_row(from_envelope(env, now, settings), packed=False) for env in envelopes]
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        started = time.perf_counter()
        for first in range(0, len(rows), BATCH):
            with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
                for seq, row in enumerate(rows[first : first + BATCH], start=first + 1):
                    copy.write_row((seq, *row))
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def collectors_rate(dsn: str, envelopes: list[dict[str, object]], tmp: Path) -> float:
    """Events/s of POST /v1/events spread over COLLECTORS collectors on one database; checks that
    the database then holds every event once."""
    with ThreadPoolExecutor(COLLECTORS) as pool:  # side by side: start-up is most of quick mode
        starting = [
            pool.submit(start_collector, tmp / f"collector-{k}", {"AGENTWATCH_DB": dsn})
            for k in range(COLLECTORS)
        ]
    procs = [f.result() for f in starting if f.exception() is None]
    try:
        failed = [exc for f in starting if (exc := f.exception()) is not None]
        if failed:
            raise failed[0]
        rate = http_batch_rate([p.port for p in procs], envelopes)
    finally:
        for p in procs:
            p.stop()
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    if row is None or row[0] != len(envelopes) or row[1] != len(envelopes):
        raise RuntimeError(f"expected {len(envelopes)} events stored once each, found {row}")
    return rate


def ingest(cluster: PostgresCluster, quick: bool, tmp: Path) -> list[Figure]:
    total = QUICK_EVENTS if quick else 100_000
    envelopes = make_events(total)
    raws: list[float] = []
    https: list[float] = []
    for i in range(ROUNDS):
        raws.append(raw_copy_rate(cluster.create_database(f"raw_{i}"), envelopes))
        say(f"raw COPY: {raws[-1]:,.0f} rows/s ({total} rows, {BATCH} per transaction)")
        dsn = cluster.create_database(f"ingest_{i}")
        https.append(collectors_rate(dsn, envelopes, tmp / f"ingest-{i}"))
        say(
            f"HTTP batch ingest, {COLLECTORS} collectors on one database: {https[-1]:,.0f} "
            f"events/s ({total} events, batches of {BATCH}, {CLIENTS} clients per collector)"
        )
    raw, http = statistics.median(raws), statistics.median(https)
    ratio = http / raw
    say(f"medians of {ROUNDS}: raw COPY {raw:,.0f} rows/s, HTTP {http:,.0f} events/s, {ratio:.2f}x")
    return [
        Figure("postgres ingest raw copy rate", round(raw), "rows/s", "baseline", True),
        Figure(
            "postgres ingest two collectors rate",
            round(http),
            "events/s",
            ">= 0.5x raw COPY",
            ratio >= 0.5,
        ),
        Figure(
            "postgres ingest two collectors to raw ratio", ratio, "ratio", ">= 0.5", ratio >= 0.5
        ),
    ]


def size(cluster: PostgresCluster, quick: bool, tmp: Path) -> list[Figure]:
    """Bytes per session of the same sessions in SQLite and in PostgreSQL."""
    total = QUICK_EVENTS if quick else 100_000
    sqlite = sqlite_backend(tmp / "size.db")
    dsn = cluster.create_database("size")
    stores = [sqlite.store(), PostgresStore(dsn, queue_max_events=1_000_000)]
    for store in stores:
        store.open()
    try:
        sessions, _ = build_store(stores, total)
    finally:
        for store in stores:
            store.close()
    lite, pg = sqlite.size() / len(sessions), tables_size(dsn) / len(sessions)
    say(
        f"store size per session of {EVENTS_PER_SESSION} events ({len(sessions)} sessions): "
        f"PostgreSQL {pg:,.0f} bytes, SQLite {lite:,.0f} bytes ({pg / lite:.2f}x)"
    )
    return [
        Figure("postgres store size per session sqlite baseline", round(lite), "bytes", "", True),
        Figure("postgres store size per session", round(pg), "bytes", "", True),
        Figure("postgres store size to sqlite ratio", pg / lite, "ratio", "", True),
    ]


def query(cluster: PostgresCluster, quick: bool, tmp: Path) -> list[Figure]:
    dsn = cluster.create_database("query")
    backend = Backend(
        "postgres",
        lambda: PostgresStore(dsn, queue_max_events=1_000_000),
        lambda: tables_size(dsn),
        {"AGENTWATCH_DB": dsn},
        settle=lambda: vacuum_analyze(dsn),
    )
    return measure(backend, quick, tmp, quick_total=QUICK_QUERY_EVENTS)


def vacuum_analyze(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def run(quick: bool) -> list[Figure]:
    reason = missing_reason()
    if reason is not None:
        say(f"!! PostgreSQL benchmarks skipped: {reason}")
        return [Figure("postgres server available", 0, "", "installed", False)]
    cluster = start_postgres()
    say(f"throw-away PostgreSQL cluster on 127.0.0.1:{cluster.port} ({cluster.bin_dir})")
    try:
        with tempfile.TemporaryDirectory(prefix="aw-bench-pg-") as d:
            tmp = Path(d)
            return (
                ingest(cluster, quick, tmp) + size(cluster, quick, tmp) + query(cluster, quick, tmp)
            )
    finally:
        cluster.stop()
