"""The PostgreSQL store's schema: the SQLite one's tables and indexes, in PostgreSQL's types.

Event ids and payloads are text here (TOAST compresses large values); aw_event_id() and
aw_payload() exist as identity functions, inlined by the planner, so the queries that unpack
SQLite's packed columns (collector/payloads.py's EVENT_SELECT) run unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from collector.store.base import StoreError

log = logging.getLogger("collector.store")

# Advisory lock keys (one bigint namespace per database): the write lock is held by a commit,
# so seqs become visible in order; migrations run one collector at a time; the relay's leader
# holds its lock for as long as its connection lives.
WRITE_LOCK = 0x4157_0001
MIGRATE_LOCK = 0x4157_0002
RELAY_LOCK = 0x4157_0003
NOTIFY_CHANNEL = "agentwatch_events"

MIGRATIONS = [
    """
    CREATE SEQUENCE events_seq;
    CREATE TABLE events (
        seq BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        ts BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
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
        payload TEXT NOT NULL,
        input_hash BIGINT,
        cost_state TEXT,
        source TEXT NOT NULL DEFAULT 'hook',
        duration_ms BIGINT
    );
    CREATE INDEX events_session_ts ON events(session_id, ts);
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_hook_ts ON events(hook_event, ts);
    CREATE INDEX events_tool_ts ON events(tool_name, ts) WHERE tool_name IS NOT NULL;
    CREATE TABLE open_calls (
        tool_use_id TEXT PRIMARY KEY,
        ts BIGINT NOT NULL,
        end_seq BIGINT
    );
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        source_app TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        first_ts BIGINT NOT NULL,
        last_ts BIGINT NOT NULL,
        ended_ts BIGINT,
        events BIGINT NOT NULL DEFAULT 0,
        tool_calls BIGINT NOT NULL DEFAULT 0,
        errors BIGINT NOT NULL DEFAULT 0,
        prompts BIGINT NOT NULL DEFAULT 0,
        subagents BIGINT NOT NULL DEFAULT 0,
        tokens BIGINT NOT NULL DEFAULT 0,
        cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        models TEXT,
        cost_source TEXT NOT NULL DEFAULT 'estimated'
    );
    CREATE INDEX sessions_last ON sessions(last_ts);
    CREATE INDEX sessions_app_last ON sessions(source_app, last_ts);
    CREATE FUNCTION aw_event_id(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS 'SELECT $1';
    CREATE FUNCTION aw_payload(text, text, text, text) RETURNS text LANGUAGE sql IMMUTABLE
        PARALLEL SAFE AS 'SELECT $1'
    """,
]


def migrate(conn: Any) -> None:
    """Bring the database's schema up to len(MIGRATIONS): one transaction, one collector at a
    time (the others wait on the lock, then find nothing to do). conn is a psycopg connection
    in autocommit mode."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database has schema version {version}, newer than this collector "
                f"({len(MIGRATIONS)}): upgrade the collector"
            )
        for target in range(version, len(MIGRATIONS)):
            log.info("store migrating", extra={"schema_version": target + 1})
            for statement in MIGRATIONS[target].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(len(MIGRATIONS)),),
        )
