"""Reading a store file from tests: packed columns read back through the collector's functions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from collector.payloads import AGENT_TYPE, PAYLOAD_TEXT, register

__all__ = ["AGENT_TYPE", "PAYLOAD_TEXT", "connect"]


def connect(db: Path, *, read_only: bool = True) -> sqlite3.Connection:
    """A connection with aw_event_id() and aw_payload() (SELECT aw_event_id(event_id), ...)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro" if read_only else db, uri=read_only)
    register(conn)
    return conn
