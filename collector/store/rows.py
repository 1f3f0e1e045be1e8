"""An Event as an events-table row, in the column order both backends insert."""

from __future__ import annotations

from typing import Any

import orjson

from collector import payloads
from collector.events import Event

# The columns a backend inserts, in event_row()'s order: duration_ms last (the tool-call pairing
# fills it in, collector/store/derive.py).
COLUMNS = (
    "event_id, ts, received_at, source_app, machine_id, session_id, agent_id, parent_agent_id, "
    "agent_type, hook_event, tool_name, tool_use_id, outcome, usage, payload, input_hash, "
    "cost_state, source, duration_ms"
)


def event_row(e: Event, *, packed: bool) -> list[Any]:
    """The row of an Event: the event id and payload packed (SQLite, collector/payloads.py) or as
    text (PostgreSQL, whose TOAST compresses what is large); the main agent's id and type NULL."""
    usage = orjson.dumps(e.usage).decode() if e.usage else None
    payload: bytes | str = e.payload
    event_id: bytes | str = e.event_id
    if packed:
        event_id = payloads.pack_event_id(e.event_id)
        payload = payloads.pack(e.payload, e.session_id, e.tool_use_id, e.source_app)
    return [
        event_id,
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
        payload,
        stored_input_hash(e.input_hash),
        orjson.dumps(e.cost_state).decode() if e.cost_state else None,
        e.source,
        None,
    ]


def stored_input_hash(input_hash: str | None) -> int | None:
    """An Event's input_hash ("tool:hex digest") as a signed 64-bit integer (8 bytes in either
    engine; the tool has a column of its own)."""
    if input_hash is None:
        return None
    return int.from_bytes(bytes.fromhex(input_hash.rsplit(":", 1)[-1]), "big", signed=True)
