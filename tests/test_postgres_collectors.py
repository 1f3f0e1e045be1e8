"""Two real collectors on one PostgreSQL database: one truth for everyone.

Hook traffic goes to both at once, each batch to one of them and a share of batches re-sent to
the other (a retry that lands elsewhere behind a load balancer). Mid-way, while the relay
leader is exporting to a real OTLP receiver, it is SIGKILLed: what it had not acknowledged goes
to the survivor, as a hook's spool would send it again. Nothing may be lost, nothing stored
twice, every event exported at least once, and what the store worked out (sessions' counters,
tool-call durations) must equal what one SQLite store works out from the same events.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.workload import events as workload
from collector.events import from_envelope
from collector.settings import Settings
from collector.store import SQLiteStore
from tests.support.otlp_receiver import GrpcReceiver
from tests.support.postgres import PostgresCluster, database_name, start_postgres
from tests.support.procs import Proc, start_collector, wait_until
from tests.test_stream import SSE, opened

EVENTS = 6000
BATCH = 100
RESEND_SHARE = 0.3
SESSION_COLUMNS = "session_id, first_ts, last_ts, ended_ts, events, tool_calls, errors, prompts"


def relay_state(proc: Proc) -> str:
    r = httpx.get(proc.url + "/readyz", timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["relay"]["state"])


def post(proc: Proc, batch: list[dict[str, Any]]) -> bool:
    """True once the collector acknowledged the batch (committed); False if it is gone."""
    try:
        r = httpx.post(proc.url + "/v1/events", json=batch, timeout=30)
    except httpx.TransportError:
        return False
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [], r.text
    return True


def derived(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in rows)


def oracle(tmp: Path, events: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Sessions and tool durations as one SQLite store works them out, in one order."""
    store = SQLiteStore(tmp / "oracle.db")
    store.open()
    settings = Settings()
    try:
        for i in range(0, len(events), BATCH):
            now = events[i]["ts"]
            store.write_sync([from_envelope(e, now, settings) for e in events[i : i + BATCH]])
        with store.reader() as conn:
            sessions = conn.execute(f"SELECT {SESSION_COLUMNS} FROM sessions").fetchall()
            durations = conn.execute(
                "SELECT aw_event_id(event_id), duration_ms FROM events WHERE duration_ms IS NOT NULL"
            ).fetchall()
    finally:
        store.close()
    return derived(sessions), derived(durations)


def test_two_collectors_share_one_truth_through_a_leader_crash(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    dsn = pg_cluster.create_database(database_name("two_collectors"))
    rx = GrpcReceiver().start()
    rx.rec.delay = 0.05  # exports take a while: the kill lands while one is in flight
    env = {
        "AGENTWATCH_DB": dsn,
        "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "AGENTWATCH_RELAY_TRACES": "false",
        "AGENTWATCH_RELAY_BATCH_EVENTS": "200",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    procs = [start_collector(tmp_path / "a", env), start_collector(tmp_path / "b", env)]
    try:
        wait_until(
            lambda: sorted(relay_state(p) for p in procs) == ["ok", "standby"], 30, "one leader"
        )
        leader = next(p for p in procs if relay_state(p) == "ok")
        survivor = next(p for p in procs if p is not leader)
        events = workload(EVENTS, per_session=150)
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        rnd = random.Random(7)
        errors: list[BaseException] = []

        def send(mine: list[list[dict[str, Any]]], home: Proc, other: Proc) -> None:
            try:
                for batch in mine:
                    if not post(home, batch):  # its collector died: the retry goes elsewhere
                        assert post(survivor, batch)
                        home = survivor
                    elif rnd.random() < RESEND_SHARE and not post(other, batch):
                        other = survivor  # a retry that reached the other one, now gone
            except BaseException as exc:
                errors.append(exc)

        senders = [
            threading.Thread(target=send, args=(batches[0::2], procs[0], procs[1])),
            threading.Thread(target=send, args=(batches[1::2], procs[1], procs[0])),
        ]
        for t in senders:
            t.start()
        wait_until(lambda: rx.rec.requests >= 3, 60, "the leader exporting")
        leader.kill()  # SIGKILL: no shutdown, an export in flight, its relay lock with it
        exported_before = len(rx.rec.event_ids())
        assert 0 < exported_before < len(events), "the kill must land mid-export"
        for t in senders:
            t.join(120)
        assert not errors, errors
        wait_until(lambda: relay_state(survivor) == "ok", 30, "the survivor leads")
        want = {e["event_id"] for e in events}
        wait_until(lambda: want <= rx.rec.event_ids(), 120, "every event exported")
    finally:
        for p in procs:
            p.stop()
        rx.stop()

    with psycopg.connect(dsn) as conn:
        (stored, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        ).fetchone() or (0, 0)
        sessions = conn.execute(f"SELECT {SESSION_COLUMNS} FROM sessions").fetchall()
        durations = conn.execute(
            "SELECT event_id, duration_ms FROM events WHERE duration_ms IS NOT NULL"
        ).fetchall()
    assert (stored, distinct) == (len(events), len(events)), "each event stored exactly once"
    assert (derived(sessions), derived(durations)) == oracle(tmp_path, events)


def test_a_stream_on_one_collector_sees_what_another_ingested(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    """NOTIFY at every commit wakes the other collectors' streams: well before the heartbeat,
    which is the only other time a quiet stream reads the store again."""
    dsn = pg_cluster.create_database(database_name("stream_across"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_collector(tmp_path / "a", {"AGENTWATCH_DB": dsn})
    b = start_collector(tmp_path / "b", {"AGENTWATCH_DB": dsn})
    stream = SSE(b.url + "/v1/stream?heartbeat=120")
    try:
        opened(stream)
        sent = workload(30, per_session=30)
        assert post(a, sent)
        got = stream.take(len(sent), timeout=15)  # a heartbeat-long wait would time out
        assert [orjson.loads(m["data"])["event_id"] for m in got] == [e["event_id"] for e in sent]
    finally:
        stream.close()
        a.stop()
        b.stop()


def test_a_database_that_goes_away_is_a_clear_503_and_the_collector_recovers(
    tmp_path: Path,
) -> None:
    """The server stops under a running collector: ingest answers 503 (the hook keeps its spool
    and sends again), /readyz says why; once it is back, the same collector takes writes again
    without a restart and nothing is stored twice."""
    cluster = start_postgres()  # its own: this test stops the server
    try:
        dsn = cluster.create_database("goes_away")
        proc = start_collector(tmp_path, {"AGENTWATCH_DB": dsn})
        try:
            sent = workload(40, per_session=40)
            assert post(proc, sent[:20])
            metrics = httpx.get(proc.url + "/metrics", timeout=10).text
            assert "agentwatch_host_cpu_utilization_ratio" in metrics
            # The store is not on this machine's disk: no disk gauge that would pretend it is.
            assert "agentwatch_host_disk_utilization_ratio{" not in metrics
            assert cluster.pg_ctl("stop", "-m", "fast", "-w").returncode == 0
            r = httpx.post(proc.url + "/v1/events", json=sent[20:], timeout=30)
            assert r.status_code == 503, r.text
            assert "write failed" in r.json()["error"]
            wait_until(lambda: httpx.get(proc.url + "/readyz").status_code == 503, 20, "unready")
            start = cluster.pg_ctl("start", "-w", "-l", str(cluster.log))
            assert start.returncode == 0, start.stderr
            wait_until(lambda: httpx.get(proc.url + "/readyz").status_code == 200, 30, "ready")
            assert post(proc, sent)  # the spool sends all of it again: the first 20 are repeats
        finally:
            proc.stop()
        with psycopg.connect(dsn) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM events").fetchone() or (0,)
        assert stored == len(sent)
    finally:
        cluster.stop()
