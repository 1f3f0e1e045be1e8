"""The event store: embedded SQLite by default, PostgreSQL for teams (AGENTWATCH_DB=postgresql://).

base.py is the write path both share (one writer thread, group commit, ack after commit),
derive.py what a commit works out (tool-call pairs, session rollups, cost), sql.py the connection
interface the queries read through; sqlite.py and postgres.py are the engines.
"""

from __future__ import annotations

from typing import Any

from collector.settings import Settings
from collector.store.base import CommitListener, EventStore, StoreError, StoreSaturated
from collector.store.derive import Committed, Facts
from collector.store.sqlite import SQLiteStore

__all__ = [
    "CommitListener",
    "Committed",
    "EventStore",
    "Facts",
    "SQLiteStore",
    "StoreError",
    "StoreSaturated",
    "store_for",
]


def store_for(settings: Settings, **kw: Any) -> EventStore:
    """The store AGENTWATCH_DB names: a PostgreSQL URL, else a SQLite file."""
    if settings.postgres_url:
        # Imported here: psycopg and its pool are ~80 ms of start-up a SQLite collector skips.
        from collector.store.postgres import PostgresStore

        return PostgresStore(settings.postgres_url, **kw)
    return SQLiteStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous, **kw)
