"""The throw-away PostgreSQL cluster (tests/support/postgres.py) and the server behaviour the
PostgreSQL store relies on: committed rows seen across connections, a session advisory lock that
passes on when its holder dies (the relay's leader lock), and binary COPY (batched inserts)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import orjson
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.postgres import SUPERUSER, PostgresCluster
from tests.support.procs import wait_until

LEADER_LOCK = 0x61676E74  # any bigint; the store will pick its own


def try_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_fresh_database_is_empty_and_keeps_what_is_written(pg_dsn: str) -> None:
    assert pg_dsn.startswith("postgresql://")
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE events (id text PRIMARY KEY, ts bigint NOT NULL, body jsonb)")
        conn.execute(
            "INSERT INTO events VALUES (%s, %s, %s), (%s, %s, %s)",
            ("e1", 1, Jsonb({"tool": "Bash"}), "e2", 2, Jsonb({"tool": "Edit"})),
        )
        conn.commit()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT id, ts, body FROM events ORDER BY ts").fetchall()
    assert rows == [("e1", 1, {"tool": "Bash"}), ("e2", 2, {"tool": "Edit"})]


def test_tcp_takes_the_password_and_the_socket_trusts(pg_cluster: PostgresCluster) -> None:
    no_password = f"postgresql://{SUPERUSER}@{pg_cluster.host}:{pg_cluster.port}/postgres"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password, connect_timeout=10).close()
    with psycopg.connect(pg_cluster.socket_dsn()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (SUPERUSER,)


def test_two_connections_see_each_others_committed_rows(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b:
        a.execute("CREATE TABLE t (id int PRIMARY KEY, who text)")
        a.commit()
        a.execute("INSERT INTO t VALUES (1, 'a')")
        assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)  # not committed yet
        b.rollback()
        a.commit()
        assert b.execute("SELECT who FROM t").fetchall() == [("a",)]
        b.execute("INSERT INTO t VALUES (2, 'b')")
        b.commit()
        assert a.execute("SELECT id, who FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b")]


def test_an_advisory_lock_passes_on_when_its_holders_backend_is_terminated(pg_dsn: str) -> None:
    with (
        psycopg.connect(pg_dsn, autocommit=True) as leader,
        psycopg.connect(pg_dsn, autocommit=True) as follower,
    ):
        leader.execute("SELECT pg_advisory_lock(%s)", (LEADER_LOCK,))
        assert not try_lock(follower)
        # With a timeout, pg_terminate_backend waits until the backend is gone (PostgreSQL 14+).
        killed = follower.execute(
            "SELECT pg_terminate_backend(%s, 10000)", (leader.info.backend_pid,)
        ).fetchone()
        assert killed == (True,)
        assert try_lock(follower)
        with pytest.raises(psycopg.OperationalError):
            leader.execute("SELECT 1")


HOLD_LOCK = textwrap.dedent(
    """
    import sys, psycopg
    conn = psycopg.connect(sys.argv[1], autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (int(sys.argv[2]),))
    print(conn.info.backend_pid, flush=True)
    sys.stdin.read()  # hold it until killed
    """
)


def test_an_advisory_lock_passes_on_when_its_holder_is_sigkilled(pg_dsn: str) -> None:
    """The relay leader's case: the process dies without a word, the server sees the socket
    close, and its backend exits with the lock."""
    with (
        subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, pg_dsn, str(LEADER_LOCK)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder,
        psycopg.connect(pg_dsn, autocommit=True) as follower,
    ):
        assert holder.stdout is not None
        assert holder.stdout.readline().strip().isdigit(), "the holder did not take the lock"
        assert not try_lock(follower)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        wait_until(lambda: try_lock(follower), 10, "the lock to pass on")


def test_binary_copy_takes_rows_from_write_row(pg_dsn: str) -> None:
    """The batched-insert path: COPY ... FROM STDIN (FORMAT BINARY) with cursor.copy() and
    write_row. Binary COPY needs set_types (the Python type alone picks the wrong width: an int
    goes as int2 and the server rejects it); JSON already serialized goes in through Jsonb with an
    identity dumps (a plain str would be stored as a JSON string)."""
    rows = [(f"e{i}", 1_700_000_000_000 + i, orjson.dumps({"i": i, "s": "é"})) for i in range(500)]
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE events (id text PRIMARY KEY, ts bigint NOT NULL, body jsonb)")
        with (
            conn.cursor() as cur,
            cur.copy("COPY events (id, ts, body) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["text", "int8", "jsonb"])
            for event_id, ts, body in rows:
                copy.write_row((event_id, ts, Jsonb(body, dumps=lambda b: b)))
        conn.commit()
        assert conn.execute("SELECT count(*), min(ts), max(ts) FROM events").fetchone() == (
            500,
            1_700_000_000_000,
            1_700_000_000_499,
        )
        one = conn.execute("SELECT body, jsonb_typeof(body) FROM events WHERE id = 'e7'")
        assert one.fetchone() == ({"i": 7, "s": "é"}, "object")

        with (
            pytest.raises(psycopg.errors.ProtocolViolation),
            conn.cursor() as cur,
            cur.copy("COPY events (id, ts) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.write_row(("x", 5))  # no set_types: 5 goes as int2 into an int8 column
        conn.rollback()
