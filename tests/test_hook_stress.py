"""2,000 hook runs, 8 at a time, while the collector is stopped and restarted twice: 0 lost, 0 doubled."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.procs import Proc, start_collector, wait_until
from tests.test_hook import BASE_TS, assert_stored_once, fixtures, hook_env, run_hook

RUNS = 2_000
PARALLEL = 8


@pytest.mark.e2e
def test_no_event_lost_or_duplicated_across_collector_restarts(tmp_path: Path) -> None:
    payloads = [json.dumps(p).encode() for p in fixtures(tmp_path)]
    db = tmp_path / "agentwatch.db"
    collector: Proc = start_collector(tmp_path, db=db)
    port = collector.port
    env = hook_env(tmp_path / "spool", collector.url)
    done = 0
    lock = threading.Lock()
    failures: list[str] = []

    def one(i: int) -> None:
        nonlocal done
        proc = run_hook(
            payloads[i % len(payloads)], {**env, "AGENTWATCH_REPLAY_TS_MS": str(BASE_TS + i)}
        )
        if proc.returncode != 0 or proc.stdout:
            failures.append(f"run {i}: rc={proc.returncode} stdout={proc.stdout[:200]!r}")
        with lock:
            done += 1

    def reached(n: int) -> bool:
        with lock:
            return done >= n

    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            futures = [pool.submit(one, i) for i in range(RUNS)]
            # Stop (graceful, then a hard kill) and restart on the same port and database.
            for stop_at, start_at, hard in ((400, 800, False), (1200, 1600, True)):
                wait_until(lambda n=stop_at: reached(n), 120, f"{stop_at} hook runs")
                collector.kill() if hard else collector.stop()
                wait_until(lambda n=start_at: reached(n), 120, f"{start_at} hook runs")
                collector = start_collector(tmp_path, port=port, db=db)
            for future in futures:
                future.result()
        assert failures == []
        proc = run_hook(b"", env, "--flush", timeout=120)
        assert (proc.returncode, proc.stdout) == (0, b"")
        assert_stored_once(db, RUNS)
    finally:
        collector.stop()
