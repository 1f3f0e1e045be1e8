"""The SQLite store's schema: each step migrates version i to i+1 (PRAGMA user_version)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson

from collector import payloads
from collector.accounting import SessionCost
from collector.events import input_digest
from collector.pricing import PriceTable
from collector.store.base import StoreError
from collector.store.rows import stored_input_hash

log = logging.getLogger("collector.store")


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


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
