"""The store: commit before acknowledge, duplicates, pairing, retention, integrity.

The tests that take `store` or `open_store` run on both backends (SQLite and a throw-away
PostgreSQL); the rest are about the SQLite file itself (WAL, migrations, damaged pages).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.events import Event, from_envelope, input_digest
from collector.settings import Settings
from collector.store import (
    Committed,
    EventStore,
    Facts,
    SQLiteStore,
    StoreError,
    StoreSaturated,
)
from collector.store import sqlite as store_module
from collector.store.postgres import PostgresStore
from collector.store.rows import stored_input_hash
from collector.store.sqlite_schema import MIGRATIONS
from tests.conftest import BACKENDS, envelope
from tests.support.db import AGENT_TYPE, PAYLOAD_TEXT
from tests.support.postgres import PostgresCluster, database_name
from tests.support.procs import REPO, free_port

SETTINGS = Settings()


def ev(**kw: object):  # type: ignore[no-untyped-def]
    return from_envelope(envelope(**kw), int(time.time() * 1000), SETTINGS)


OpenStore = Callable[..., EventStore]


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """open_store(name="s", **kw): an opened store of this test's backend; the same name is the
    same database (a restart). Closed at the end of the test if still open."""
    opened: list[EventStore] = []
    urls: dict[str, str] = {}

    def open_(name: str = "s", **kw: Any) -> EventStore:
        s: EventStore
        if request.param == "postgres":
            if name not in urls:
                cluster = request.getfixturevalue("pg_cluster")
                urls[name] = cluster.create_database(
                    database_name(f"{name}_{uuid.uuid4().hex[:6]}")
                )
            s = PostgresStore(urls[name], **kw)
        else:
            s = SQLiteStore(tmp_path / f"{name}.db", **kw)
        s.open()
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: OpenStore) -> EventStore:
    return open_store()


def test_schema_version_and_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.open()
    with store.reader() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_duplicates_within_and_across_batches(store: EventStore) -> None:
    a, b = ev(), ev()
    assert store.write_sync([a, b, a]) == [True, True, False]
    assert store.write_sync([b, ev()]) == [False, True]
    with store.reader() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3


def test_duplicates_survive_a_restart(open_store: OpenStore) -> None:
    first = ev()
    s = open_store("r")
    assert s.write_sync([first]) == [True]
    s.close()
    s = open_store("r")
    assert s.write_sync([first, ev()]) == [False, True]


def facts_of(store: EventStore) -> dict[str, Facts]:
    """What each event the store commits from now on adds (event id -> Facts)."""
    seen: dict[str, Facts] = {}

    def note(committed: list[Committed]) -> None:
        seen.update((c.event.event_id, c.facts) for c in committed)

    store.add_listener(note)
    return seen


def ends_and_waiting(store: EventStore) -> tuple[list[tuple[str, int, str]], int]:
    """(tool_use_id, duration_ms, outcome) of the stored end events; calls still half seen."""
    with store.reader() as conn:
        rows = conn.execute(
            "SELECT tool_use_id, duration_ms, outcome FROM events "
            "WHERE hook_event != 'PreToolUse' ORDER BY tool_use_id"
        ).fetchall()
        return rows, conn.execute("SELECT count(*) FROM open_calls").fetchone()[0]


def test_tool_pairing_in_either_order(store: EventStore) -> None:
    now = int(time.time() * 1000)
    pre = ev(hook_event="PreToolUse", tool_use_id="toolu_a", ts=now)
    post = ev(hook_event="PostToolUse", tool_use_id="toolu_a", ts=now + 1500)
    facts = facts_of(store)
    store.write_sync([pre])
    assert facts[pre.event_id].duration_ms is None
    store.write_sync([post])
    assert facts[post.event_id].duration_ms == 1500
    late_post = ev(hook_event="PostToolUseFailure", tool_use_id="toolu_b", ts=now + 900)
    late_pre = ev(hook_event="PreToolUse", tool_use_id="toolu_b", ts=now)
    store.write_sync([late_post])
    store.write_sync([late_pre])  # out of order: the Pre completes the pair
    assert facts[late_pre.event_id].duration_ms == 900
    # Both pairs complete: durations on the end events, nothing left waiting.
    assert ends_and_waiting(store) == ([("toolu_a", 1500, "success"), ("toolu_b", 900, "error")], 0)


def test_pairing_within_a_batch_in_either_order_and_with_duplicates(store: EventStore) -> None:
    now = int(time.time() * 1000)
    pre = ev(hook_event="PreToolUse", tool_use_id="toolu_d", ts=now)
    post = ev(hook_event="PostToolUse", tool_use_id="toolu_d", ts=now + 70)
    facts = facts_of(store)
    store.write_sync([post, pre])  # the end first, in one transaction
    assert (facts[post.event_id].duration_ms, facts[pre.event_id].duration_ms) == (None, 70)
    # A retry repeats the stored pair next to a new one: only the new pair is paired again.
    pre2 = ev(hook_event="PreToolUse", tool_use_id="toolu_e", ts=now)
    post2 = ev(hook_event="PostToolUse", tool_use_id="toolu_e", ts=now + 5)
    assert store.write_sync([pre, pre2, post, post2]) == [False, True, False, True]
    assert facts[post2.event_id].duration_ms == 5
    assert ends_and_waiting(store) == ([("toolu_d", 70, "success"), ("toolu_e", 5, "success")], 0)


def test_pair_in_one_batch_gives_duration_once(store: EventStore) -> None:
    now = int(time.time() * 1000)
    pre = ev(hook_event="PreToolUse", tool_use_id="toolu_c", ts=now)
    post = ev(hook_event="PostToolUse", tool_use_id="toolu_c", ts=now + 40)
    facts = facts_of(store)
    store.write_sync([pre, post])
    assert (facts[pre.event_id].duration_ms, facts[post.event_id].duration_ms) == (None, 40)


def test_sessions_aggregate(store: EventStore) -> None:
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


def test_retention_prunes_old_rows_only(store: EventStore) -> None:
    now = int(time.time() * 1000)
    old = [ev(ts=now - 40 * 86400_000) for _ in range(12)]
    fresh = [ev(ts=now - 1000) for _ in range(3)]
    store.write_sync(old + fresh)
    deleted = store.prune(now - 30 * 86400_000)
    assert deleted == 12
    with store.reader() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
        # Each was a PreToolUse still waiting for its end: the old ones wait no longer.
        assert conn.execute("SELECT count(*) FROM open_calls").fetchone()[0] == 3


def test_saturated_queue_refuses_with_a_clear_error(open_store: OpenStore) -> None:
    s = open_store("q", queue_max_events=1000)
    try:
        s._pending = 1000  # as if a thousand events were waiting for the writer
        with pytest.raises(StoreSaturated, match="writer queue full"):
            s.write_sync([ev()])
    finally:
        s._pending = 0


def test_corrupt_file_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="cannot open the store"):
        SQLiteStore(db).open()
    assert db.read_bytes() == before


def test_damaged_pages_fail_the_integrity_check(tmp_path: Path) -> None:
    db = tmp_path / "dmg.db"
    s = SQLiteStore(db)
    s.open()
    s.write_sync([ev() for _ in range(2000)])
    s.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(page * 3, len(data) - page, page * 2):  # scribble over many pages
        data[offset + 100 : offset + 400] = b"\xff" * 300
    db.write_bytes(bytes(data))
    s = SQLiteStore(db)
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
        SQLiteStore(blocker / "sub" / "db.sqlite").open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer than this collector"):
        SQLiteStore(db).open()


def test_close_drains_queued_writes(open_store: OpenStore) -> None:
    s = open_store("d")
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
    with open_store("d").reader() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3000


def test_a_schema_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    """Text ids and payloads, the main agent spelled out and tool_calls become schema 2's
    packed columns, with every value read back as it was and open pairs still pairing."""
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db, isolation_level=None)
    assert isinstance(MIGRATIONS[0], str)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    sid, now = "sess-v1", int(time.time() * 1000)
    uuid_id = str(uuid.uuid4())
    old = [  # (event_id, ts, hook, tool_use_id, agent_id, agent_type, outcome, payload)
        (uuid_id, now, "PreToolUse", "toolu_1", sid, "main", "", {"tool_input": {"cmd": "ls"}}),
        ("evt-old-0002", now + 30, "PostToolUse", "toolu_1", sid, "main", "success", {"x": 1}),
        ("evt-old-0003", now + 40, "PreToolUse", "toolu_2", "agent-1", "Explore", "", {}),
        ("evt-old-0004", now + 50, "PostToolUse", "toolu_3", sid, "main", "success", {}),
    ]
    for event_id, ts, hook, tid, agent, agent_type, outcome, payload in old:
        body = orjson.dumps({"session_id": sid, "hook_event_name": hook, **payload}).decode()
        conn.execute(
            "INSERT INTO events (event_id, ts, received_at, source_app, machine_id, session_id, "
            "agent_id, parent_agent_id, agent_type, hook_event, tool_name, tool_use_id, outcome, "
            "payload) VALUES (?, ?, ?, 'shop', 'm1', ?, ?, ?, ?, ?, 'Bash', ?, ?, ?)",
            (event_id, ts, ts, sid, agent, None if agent == sid else sid, agent_type, hook, tid,
             outcome, body),
        )  # fmt: skip
    conn.executemany(
        "INSERT INTO tool_calls VALUES (?, ?, ?, 'Bash', ?, ?, ?, ?)",
        [
            ("toolu_1", sid, sid, now, now + 30, 30, "success"),
            ("toolu_2", sid, "agent-1", now + 40, None, None, None),
            ("toolu_3", sid, sid, None, now + 50, None, "success"),
        ],
    )
    conn.close()

    store = SQLiteStore(db)
    store.open()
    try:
        with store.reader() as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            # VACUUMed: the dropped tool_calls pages are given back, not left on the free list.
            assert c.execute("PRAGMA freelist_count").fetchone()[0] == 0
            rows = c.execute(
                "SELECT aw_event_id(event_id), coalesce(agent_id, session_id), "
                f"{AGENT_TYPE}, {PAYLOAD_TEXT}, duration_ms, input_hash FROM events ORDER BY seq"
            ).fetchall()
            waiting = c.execute("SELECT tool_use_id, end_seq FROM open_calls").fetchall()
            raw_id = c.execute("SELECT event_id FROM events ORDER BY seq LIMIT 1").fetchone()[0]
        assert raw_id == uuid.UUID(uuid_id).bytes  # packed
        for (event_id, _, hook, _, agent, agent_type, _, payload), row in zip(
            old, rows, strict=True
        ):
            body = {"session_id": sid, "hook_event_name": hook, **payload}
            assert row[:3] == (event_id, agent, agent_type)
            assert orjson.loads(row[3]) == body
        assert [r[4] for r in rows] == [None, 30, None, None]
        assert rows[0][5] == stored_input_hash(input_digest({"cmd": "ls"}))
        assert sorted(waiting) == [("toolu_2", None), ("toolu_3", 4)]
        # The end that came before its start still pairs when the start arrives.
        late = ev(session_id=sid, hook_event="PreToolUse", tool_use_id="toolu_3", ts=now + 20)
        facts = facts_of(store)
        store.write_sync([late])
        assert facts[late.event_id].duration_ms == 30
        with store.reader() as c:
            assert c.execute("SELECT duration_ms FROM events WHERE seq = 4").fetchone() == (30,)
    finally:
        store.close()


@given(
    plan=st.lists(
        st.tuples(st.integers(0, 5), st.booleans(), st.integers(0, 3)), min_size=1, max_size=30
    ),
    seed=st.integers(0, 2**16),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_pairing_matches_an_oracle_whatever_the_order_batches_and_retries(
    open_store: OpenStore, plan: list[tuple[int, bool, int]], seed: int
) -> None:
    """Calls' ends arrive in any order, split across transactions, some sent twice: every end
    row carries max(end - start, 0) once both ends are stored, and only half-seen calls wait."""
    import random

    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    sent: dict[tuple[int, bool], Event] = {}
    for call, is_end, offset in plan:  # one event per (call, end); repeats are retries
        if (call, is_end) not in sent:
            hook = "PostToolUse" if is_end else "PreToolUse"
            ts = now + call * 10 + (offset if is_end else 0)
            sent[(call, is_end)] = ev(hook_event=hook, tool_use_id=f"toolu_{call}", ts=ts)
    events = [sent[(c, e)] for c, e, _ in plan]
    store = open_store(uuid.uuid4().hex)  # a database of its own for each example
    try:
        i = 0
        while i < len(events):  # random batch boundaries, duplicates included
            n = rnd.randint(1, 4)
            store.write_sync([dataclasses.replace(e) for e in events[i : i + n]])
            i += n
        ends, waiting = ends_and_waiting(store)
    finally:
        store.close()
    expected = []
    for (call, is_end), e in sorted(sent.items()):
        if is_end:
            start = sent.get((call, False))
            expected.append((e.tool_use_id, max(e.ts - start.ts, 0) if start else None, "success"))
    assert ends == sorted(expected)
    calls = {c for c, _ in sent}
    assert waiting == sum(1 for c in calls if ((c, True) in sent) != ((c, False) in sent))


def test_offline_export_reads_a_store_file_as_the_api_does(tmp_path: Path) -> None:
    """python -m collector.export: the packed file back as NDJSON, filtered, read-only."""
    db = tmp_path / "x.db"
    store = SQLiteStore(db)
    store.open()
    now = int(time.time() * 1000)
    mine = [ev(session_id="s-export", ts=now - 3 + i) for i in range(3)]
    store.write_sync([*mine, ev(session_id="s-other")])
    store.close()
    before = db.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "collector.export", str(db), "--session", "s-export"],
        capture_output=True,
        check=True,
        cwd=REPO,
    )
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [e["event_id"] for e in lines] == [e.event_id for e in mine]  # oldest first
    assert [e["payload"] for e in lines] == [orjson.loads(e.payload) for e in mine]
    assert {(e["agent_id"], e["agent_type"]) for e in lines} == {("s-export", "main")}
    assert db.read_bytes() == before
    bad = subprocess.run(
        [sys.executable, "-m", "collector.export", str(db), "--from", "yesterday"],
        capture_output=True,
        check=False,
        cwd=REPO,
    )
    assert bad.returncode == 2 and b"ISO 8601" in bad.stderr


def test_a_closed_store_leaves_no_wal_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() waits for the checkpoint thread, so the writer's connection is the last to close
    and SQLite folds the WAL into the file (the store-size figure counts what is on disk)."""
    real = store_module.checkpoint_until

    def late_close(path: Path, stop: threading.Event) -> None:
        """The checkpoint thread, a moment late closing a connection that has read the WAL."""
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        try:
            real(path, stop)
            time.sleep(0.3)
        finally:
            conn.close()

    monkeypatch.setattr(store_module, "checkpoint_until", late_close)
    db = tmp_path / "w.db"
    store = SQLiteStore(db)
    store.open()
    store.write_sync([ev() for _ in range(2000)])
    store.close()
    assert not Path(f"{db}-wal").exists()


def test_postgres_newer_schema_and_unreachable_server_are_clear_errors(
    pg_cluster: PostgresCluster,
) -> None:
    dsn = pg_cluster.create_database(database_name("newer"))
    store = PostgresStore(dsn)
    store.open()  # creates the schema
    store.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this collector"):
        PostgresStore(dsn).open()
    dead = f"postgresql://agentwatch:s3cret-pw@127.0.0.1:{free_port()}/agentwatch"
    with pytest.raises(StoreError, match="cannot open the store") as err:
        PostgresStore(dead).open()
    assert "s3cret-pw" not in str(err.value)  # the URL is named without its password
