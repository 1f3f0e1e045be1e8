"""Packed event ids and payloads read back exactly as they were ingested."""

from __future__ import annotations

import sqlite3
import uuid
import zlib

import orjson
import pytest

from collector import payloads


@pytest.mark.parametrize(
    "payload",
    [
        "{}",
        orjson.dumps({"session_id": "s-1", "prompt": 'héllo ✓ \u0000 \\"quoted"'}).decode(),
        orjson.dumps({"tool_response": {"stdout": "x" * 65_000}}).decode(),
        orjson.dumps({"tool_input": {"content": uuid.uuid4().hex * 2000}}).decode(),  # > window
    ],
)
def test_payloads_round_trip(payload: str) -> None:
    packed = payloads.pack(payload, "s-1", "toolu_1", "shop")
    assert packed[0] == 1  # the vocabulary it was packed with
    assert payloads.unpack(packed, "s-1", "toolu_1", "shop") == payload
    assert payloads.unpack(payload, "s-1", "toolu_1", "shop") == payload  # schema 1 text


def test_the_row_context_is_part_of_the_dictionary() -> None:
    sid = str(uuid.uuid4())
    body = orjson.dumps({"session_id": sid, "cwd": "/home/dev/shop", "tool_use_id": "toolu_9"})
    with_context = payloads.pack(body.decode(), sid, "toolu_9", "shop")
    without = payloads.pack(body.decode(), "other", None, "x")
    assert len(with_context) < len(without) - 30
    try:  # another row's context cannot read it back
        wrong: str | None = payloads.unpack(with_context, "other", None, "x")
    except (zlib.error, UnicodeDecodeError):
        wrong = None
    assert wrong != body.decode()


@pytest.mark.parametrize(
    "event_id", [str(uuid.uuid4()), "evt-not-a-uuid", str(uuid.uuid4()).upper(), "a" * 128]
)
def test_event_ids_round_trip(event_id: str) -> None:
    packed = payloads.pack_event_id(event_id)
    canonical = event_id == str(uuid.UUID(event_id)) if len(event_id) == 36 else False
    assert isinstance(packed, bytes) == canonical
    assert payloads.unpack_event_id(packed) == event_id


def test_sql_functions() -> None:
    conn = sqlite3.connect(":memory:")
    payloads.register(conn)
    eid = str(uuid.uuid4())
    body = '{"session_id":"s-2","x":1}'
    row = conn.execute(
        "SELECT aw_event_id(?), aw_payload(?, 's-2', NULL, 'shop')",
        (payloads.pack_event_id(eid), payloads.pack(body, "s-2", None, "shop")),
    ).fetchone()
    assert row == (eid, body)
