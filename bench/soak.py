"""Sustained load through the real hook path: a fixed rate of `python3 -S agentwatch_hook.py`
runs (a few in parallel) into a live collector for 60 s (quick: 6 s).

Reports loss (events handed to the hook but not stored: must be 0), the p50/p99 latency from
the hook's start to the event being stored (received_at minus the hook's start, both wall
clock on this machine), and the collector's RSS at start and end (growth must stay in the noise).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import psutil

from bench.common import Figure, percentile, say

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "hooks" / "agentwatch_hook.py"
PYTHON = os.path.realpath(sys.executable)
RATE = 30.0  # hook runs per second
PARALLEL = 4
RSS_GROWTH_LIMIT_MB = 20.0


def _hook(env: dict[str, str], i: int, session: str, started: dict[str, int]) -> None:
    tool_use_id = f"toolu_soak_{i:07d}"
    event = {
        "session_id": session,
        "transcript_path": "/nonexistent.jsonl",
        "cwd": "/home/dev/soak",
        "hook_event_name": "PostToolUse" if i % 2 else "PreToolUse",
        "tool_name": "Bash",
        "tool_use_id": tool_use_id,
        "tool_input": {"command": f"pytest -q tests/test_{i % 50}.py"},
        "tool_response": {"stdout": "." * 200 + " passed", "exit_code": 0},
    }
    started[tool_use_id] = time.time_ns() // 1_000_000
    subprocess.run(
        [PYTHON, "-S", str(HOOK)], input=orjson.dumps(event), env=env, check=True, timeout=30
    )


def run(quick: bool) -> list[Figure]:
    from tests.support.procs import start_collector

    seconds = 6 if quick else 60
    total = int(seconds * RATE)
    with tempfile.TemporaryDirectory(prefix="aw-bench-soak-") as tmpdir:
        tmp = Path(tmpdir)
        proc = start_collector(tmp)
        try:
            rss = psutil.Process(proc.proc.pid)
            rss_start = rss.memory_info().rss / 2**20
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("AGENTWATCH_")},
                "AGENTWATCH_URL": proc.url,
                "AGENTWATCH_SPOOL_DIR": str(tmp / "spool"),
                "AGENTWATCH_SOURCE_APP": "soak",
            }
            started: dict[str, int] = {}
            sessions = [f"soak-{uuid.uuid4().hex[:8]}" for _ in range(10)]
            say(f"soak: {total} hook runs at {RATE:g}/s, {PARALLEL} in parallel")
            began = time.monotonic()

            def paced(i: int) -> None:
                delay = began + i / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                _hook(env, i, sessions[i % len(sessions)], started)

            with ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(paced, range(total)))
            elapsed = time.monotonic() - began
            # Give the detached flushers a moment, then the hook's own flush for the stragglers.
            deadline = time.monotonic() + 10
            db = Path(proc.env["AGENTWATCH_DB"])
            while time.monotonic() < deadline and _count(db) < total:
                time.sleep(0.1)
            subprocess.run([PYTHON, "-S", str(HOOK), "--flush"], env=env, check=True, timeout=60)
            with sqlite3.connect(db) as conn:
                rows = dict(
                    conn.execute(
                        "SELECT tool_use_id, received_at FROM events "
                        "WHERE tool_use_id LIKE 'toolu_soak_%'"
                    ).fetchall()
                )
            rss_end = rss.memory_info().rss / 2**20
        finally:
            proc.stop()
    lost = total - len(rows)
    latencies = [float(rows[k] - started[k]) for k in rows if k in started]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    growth = rss_end - rss_start
    say(
        f"soak: {total} runs in {elapsed:.1f} s ({total / elapsed:.1f}/s), lost {lost}, "
        f"hook start -> stored p50 {p50:.0f} ms p99 {p99:.0f} ms, "
        f"collector RSS {rss_start:.1f} -> {rss_end:.1f} MiB"
    )
    return [
        Figure("soak_events_lost", float(lost), "events", "== 0", lost == 0),
        Figure("soak_hook_to_store_p50_ms", p50, "ms", "report", True),
        Figure("soak_hook_to_store_p99_ms", p99, "ms", "report", True),
        Figure(
            "soak_rate_achieved",
            total / elapsed,
            "runs/s",
            f">= {RATE * 0.9:g}",
            total / elapsed >= RATE * 0.9,
        ),
        Figure("soak_collector_rss_start_mib", rss_start, "MiB", "report", True),
        Figure(
            "soak_collector_rss_growth_mib",
            growth,
            "MiB",
            f"<= {RSS_GROWTH_LIMIT_MB:g}",
            growth <= RSS_GROWTH_LIMIT_MB,
        ),
    ]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM events WHERE tool_use_id LIKE 'toolu_soak_%'"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return 0
