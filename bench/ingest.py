"""Ingest throughput and latency of the real collector (uvicorn, SQLite), beside raw SQLite.

- raw: the same rows inserted straight into the events table with sqlite3, 500 per transaction
  (the same schema and pragmas as the store) — the ceiling that ingest is compared against.
  Raw and batch runs alternate three times, each on a fresh file; the figures are the medians.
- batch: HTTP POST /v1/events with batches of 500, acknowledged after commit, 4 client threads.
- single: one event per request, measured with wrk (a C load generator, so the client costs
  little of the 2 cores), p50/p99 from wrk's latency distribution.
"""

from __future__ import annotations

import http.client
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import psutil

from bench.common import Figure, say
from bench.workload import events as make_events
from collector.events import from_envelope
from collector.settings import Settings
from collector.store.rows import event_row
from collector.store.sqlite import INSERT_EVENT, checkpoint_until, configure_writer
from collector.store.sqlite_schema import migrate
from tests.support.procs import start_collector

BATCH = 500
CLIENTS = 4
ROUNDS = 3


def raw_insert_rate(envelopes: list[dict[str, object]], db: Path, synchronous: str) -> float:
    settings = Settings()
    now = int(time.time() * 1000)
    rows = [event_row(from_envelope(env, now, settings), packed=True) for env in envelopes]
    conn = sqlite3.connect(db, isolation_level=None)
    configure_writer(conn, synchronous)  # the store's own pragmas: the same cache, WAL, sync
    stop = threading.Event()  # ... and the same background checkpoints
    checkpointer = threading.Thread(target=checkpoint_until, args=(db, stop))
    migrate(conn, db)  # the collector's own schema and indexes
    checkpointer.start()
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.executemany(INSERT_EVENT, rows[i : i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    stop.set()
    checkpointer.join()
    conn.close()
    return len(rows) / elapsed


def post_all(
    ports: int | Sequence[int],
    path: str,
    bodies: list[bytes],
    content_type: str,
    ok: Callable[[int, bytes], bool],
) -> float:
    """Seconds to POST every body, CLIENTS threads per port (collector) on a keep-alive connection
    each, the bodies dealt round-robin; raises with the first answers that ok() refuses."""
    lock = threading.Lock()
    errors: list[str] = []
    targets = [ports] if isinstance(ports, int) else list(ports)
    clients = CLIENTS * len(targets)

    def client(port: int, mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in mine:
            conn.request("POST", path, body, {"Content-Type": content_type})
            resp = conn.getresponse()
            data = resp.read()
            if not ok(resp.status, data):
                with lock:
                    errors.append(f"{resp.status} {data[:200]!r}")
        conn.close()

    threads = [
        threading.Thread(target=client, args=(targets[i % len(targets)], bodies[i::clients]))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"POST {path} failed: {errors[:3]}")
    return elapsed


def http_batch_rate(ports: int | Sequence[int], envelopes: list[dict[str, object]]) -> float:
    """Events/s of POST /v1/events in batches of BATCH, to one collector or spread over several."""
    bodies = [orjson.dumps(envelopes[i : i + BATCH]) for i in range(0, len(envelopes), BATCH)]

    def ok(status: int, data: bytes) -> bool:
        return status == 200 and orjson.loads(data)["accepted"] == BATCH

    return len(envelopes) / post_all(ports, "/v1/events", bodies, "application/json", ok)


WRK_SCRIPT = """
local counter = 0
local prefix = string.format("%08x", math.random(0, 0x7fffffff))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local id = prefix .. "-" .. counter
  local body = '{"event_id":"bench-' .. id .. '","session_id":"wrk-session-' .. (counter % 50) ..
    '","hook_event":"PostToolUse","tool_name":"Bash","tool_use_id":"toolu_' .. id ..
    '","payload":{"tool_input":{"command":"pytest -q"},"tool_response":{"stdout":"12 passed"}}}'
  return wrk.format(nil, "/v1/events", nil, body)
end
"""


def wrk_single(port: int, seconds: int, tmp: Path) -> tuple[float, float, float]:
    wrk = shutil.which("wrk")
    if not wrk:
        raise RuntimeError("wrk not found: apt-get install wrk")
    script = tmp / "single.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        [
            wrk,
            "-t1",
            "-c8",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    say(out.strip())
    if "Non-2xx" in out:
        raise RuntimeError("single-event requests failed:\n" + out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(name: str) -> float:
        value, unit = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return rps, pct("50"), pct("99")


def run(quick: bool) -> list[Figure]:
    total = 20_000 if quick else 100_000
    seconds = 3 if quick else 15
    envelopes = make_events(total)
    raws: list[float] = []
    batches: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # Raw and HTTP alternate, each on a fresh file: the raw rate alone moves by +-30 % between
        # runs on this shared disk (checkpoint fsyncs), so the ratio is of the medians.
        for i in range(ROUNDS):
            raws.append(
                raw_insert_rate(envelopes, tmp / f"raw-{i}.db", Settings().sqlite_synchronous)
            )
            say(
                f"raw SQLite insert: {raws[-1]:,.0f} rows/s ({total} rows, {BATCH} per transaction)"
            )
            (tmp / str(i)).mkdir()
            proc = start_collector(tmp / str(i))
            try:
                batches.append(http_batch_rate(proc.port, envelopes))
                say(
                    f"HTTP batch ingest: {batches[-1]:,.0f} events/s ({total} events, batches of "
                    f"{BATCH}, {CLIENTS} clients)"
                )
                if i < ROUNDS - 1:
                    continue
                rps, p50, p99 = wrk_single(proc.port, seconds, tmp)
                say(f"single-event requests: {rps:,.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
                rss = psutil.Process(proc.proc.pid).memory_info().rss / 2**20
                say(f"collector RSS after the runs: {rss:.0f} MiB")
            finally:
                proc.stop()
    raw, batch = statistics.median(raws), statistics.median(batches)
    ratio = batch / raw
    say(
        f"medians of {ROUNDS}: raw {raw:,.0f} rows/s, HTTP batch {batch:,.0f} events/s, {ratio:.2f}x"
    )
    return [
        Figure("ingest_raw_sqlite_insert_rate", round(raw), "rows/s", "baseline", True),
        Figure("ingest_batch_rate", round(batch), "events/s", ">= 0.5x raw insert", ratio >= 0.5),
        Figure("ingest_batch_to_raw_ratio", round(ratio, 3), "ratio", ">= 0.5", ratio >= 0.5),
        Figure("ingest_single_rps", round(rps), "requests/s", ">= 2000", rps >= 2000),
        Figure("ingest_single_p50", round(p50, 2), "ms", "report", True),
        Figure("ingest_single_p99", round(p99, 2), "ms", "< 20", p99 < 20),
        Figure("collector_rss", round(rss, 1), "MiB", "< 200", rss < 200),
    ]
