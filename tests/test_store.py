"""The SQLite store: commit before acknowledge, duplicates, pairing, retention, integrity."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from collector.events import from_envelope
from collector.settings import Settings
from collector.store import MIGRATIONS, Store, StoreError, StoreSaturated
from tests.conftest import envelope

SETTINGS = Settings()


def ev(**kw: object):  # type: ignore[no-untyped-def]
    return from_envelope(envelope(**kw), int(time.time() * 1000), SETTINGS)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store(tmp_path / "s.db")
    s.open()
    yield s
    s.close()


def test_schema_version_and_wal(store: Store) -> None:
    with store.reader() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_duplicates_within_and_across_batches(store: Store) -> None:
    a, b = ev(), ev()
    assert store.write_sync([a, b, a]) == [True, True, False]
    assert store.write_sync([b, ev()]) == [False, True]
    with store.reader() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3


def test_duplicates_survive_a_restart(tmp_path: Path) -> None:
    first = ev()
    s = Store(tmp_path / "r.db")
    s.open()
    assert s.write_sync([first]) == [True]
    s.close()
    s = Store(tmp_path / "r.db")
    s.open()
    assert s.write_sync([first, ev()]) == [False, True]
    s.close()


def test_tool_pairing_in_either_order(store: Store) -> None:
    now = int(time.time() * 1000)
    pre = ev(hook_event="PreToolUse", tool_use_id="toolu_a", ts=now)
    post = ev(hook_event="PostToolUse", tool_use_id="toolu_a", ts=now + 1500)
    store.write_sync([pre])
    assert pre.duration_ms is None
    store.write_sync([post])
    assert post.duration_ms == 1500
    late_post = ev(hook_event="PostToolUseFailure", tool_use_id="toolu_b", ts=now + 900)
    late_pre = ev(hook_event="PreToolUse", tool_use_id="toolu_b", ts=now)
    store.write_sync([late_post])
    store.write_sync([late_pre])  # out of order: the Pre completes the pair
    assert late_pre.duration_ms == 900
    with store.reader() as conn:
        rows = conn.execute(
            "SELECT tool_use_id, duration_ms, outcome FROM tool_calls ORDER BY tool_use_id"
        ).fetchall()
    assert rows == [("toolu_a", 1500, "success"), ("toolu_b", 900, "error")]


def test_pair_in_one_batch_gives_duration_once(store: Store) -> None:
    now = int(time.time() * 1000)
    pre = ev(hook_event="PreToolUse", tool_use_id="toolu_c", ts=now)
    post = ev(hook_event="PostToolUse", tool_use_id="toolu_c", ts=now + 40)
    store.write_sync([pre, post])
    assert (pre.duration_ms, post.duration_ms) == (None, 40)


def test_sessions_aggregate(store: Store) -> None:
    now = int(time.time() * 1000)
    sid = "sess-agg"
    usage = {"claude-sonnet-4-5": {"input": 1_000_000, "output": 0}}
    store.write_sync(
        [
            ev(session_id=sid, hook_event="UserPromptSubmit", ts=now),
            ev(session_id=sid, hook_event="PostToolUseFailure", ts=now + 10),
            ev(session_id=sid, hook_event="Stop", ts=now + 20, usage=usage),
        ]
    )
    store.write_sync([ev(session_id=sid, hook_event="SessionEnd", ts=now + 5000)])
    with store.reader() as conn:
        row = conn.execute(
            "SELECT first_ts, last_ts, ended_ts, events, errors, prompts, tool_calls, tokens, cost_usd"
            " FROM sessions WHERE session_id = ?",
            (sid,),
        ).fetchone()
    assert row == (now, now + 5000, now + 5000, 4, 1, 1, 1, 1_000_000, 3.0)


def test_retention_prunes_old_rows_only(store: Store) -> None:
    now = int(time.time() * 1000)
    old = [ev(ts=now - 40 * 86400_000) for _ in range(12)]
    fresh = [ev(ts=now - 1000) for _ in range(3)]
    store.write_sync(old + fresh)
    deleted = store.prune(now - 30 * 86400_000)
    assert deleted == 12
    with store.reader() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM tool_calls").fetchone()[0] == 3


def test_saturated_queue_refuses_with_a_clear_error(tmp_path: Path) -> None:
    s = Store(tmp_path / "q.db", queue_max_events=1000)
    s.open()
    try:
        s._pending = 1000  # as if a thousand events were waiting for the writer
        with pytest.raises(StoreSaturated, match="writer queue full"):
            s.write_sync([ev()])
    finally:
        s._pending = 0
        s.close()


def test_corrupt_file_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(db).open()
    assert db.read_bytes() == before


def test_damaged_pages_fail_the_integrity_check(tmp_path: Path) -> None:
    db = tmp_path / "dmg.db"
    s = Store(db)
    s.open()
    s.write_sync([ev() for _ in range(2000)])
    s.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(page * 3, len(data) - page, page * 2):  # scribble over many pages
        data[offset + 100 : offset + 400] = b"\xff" * 300
    db.write_bytes(bytes(data))
    s = Store(db)
    try:
        s.open()
    except StoreError:
        return  # refused at open: also a clear error
    try:
        assert s.check_integrity("quick") is not None
        with pytest.raises(StoreError, match="integrity"):
            s.write_sync([ev()])
    finally:
        s.close()


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(blocker / "sub" / "db.sqlite").open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer than this collector"):
        Store(db).open()


def test_close_drains_queued_writes(tmp_path: Path) -> None:
    import threading

    s = Store(tmp_path / "d.db")
    s.open()
    gate = threading.Event()
    s.run_task(lambda _c: gate.wait(10))  # holds the writer so the writes below queue up
    events = [ev() for _ in range(3000)]
    results: list[list[bool]] = []
    threads = [
        threading.Thread(target=lambda chunk=events[i::3]: results.append(s.write_sync(chunk)))
        for i in range(3)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while s.queue_depth < 3000 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert s.queue_depth == 3000
    closer = threading.Thread(target=s.close)
    closer.start()  # close() is now waiting behind the queued writes
    gate.set()
    closer.join()
    for t in threads:
        t.join()
    assert sum(len(r) for r in results) == 3000 and all(all(r) for r in results)
    with sqlite3.connect(tmp_path / "d.db") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3000
