"""The hook under load: 2,000 runs, 8 at a time, while the collector is stopped and restarted
twice (0 lost, 0 doubled); and hundreds of runs against a collector that hangs, none of which
waits for its flusher.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from tests.support.hanging import HangingServer
from tests.support.procs import Proc, start_collector, wait_until
from tests.support.spool import lock_free
from tests.test_hook import (
    BASE_TS,
    FIXTURES,
    HOOK,
    assert_stored_once,
    fixtures,
    hook_env,
    run_hook,
)

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


# -- a hook waits for nothing but its own spool write -------------------------------------------
#
# Claude Code waits until the hook has exited and nothing holds its stdout/stderr open. The
# detached flusher must therefore hold none of the hook's descriptors: not 0-2, and not a copy at
# a higher number (a launcher's `exec 3>&1`, a sibling hook's pipe leaked by a racy spawner).
# Were it to keep one, the hook would last as long as a delivery to a hanging collector.


def launch(payload: bytes, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """The hook with stdout and stderr on one pipe, as Claude Code runs it, plus a copy of the
    pipe's write end above fd 2, as a leaky launcher would pass it. Returns the read end."""
    r, w = os.pipe()
    copy = os.dup(w)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", str(HOOK)],
            stdin=subprocess.PIPE,
            stdout=w,
            stderr=w,
            pass_fds=(copy,),
            env=env,
        )
    finally:
        os.close(w)
        os.close(copy)
    assert proc.stdin is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    return proc, r


def pipe_closed(r: int) -> bool:
    """True if no process holds the pipe's write end any more (reads EOF without waiting)."""
    os.set_blocking(r, False)
    try:
        while os.read(r, 65536):  # the hook prints nothing; drain whatever it did
            pass
    except BlockingIOError:
        return False
    return True


def wait_closed(r: int, timeout: float = 60.0) -> None:
    os.set_blocking(r, True)
    while select.select([r], [], [], timeout)[0] and os.read(r, 65536):
        pass


@pytest.mark.e2e
def test_the_hooks_pipes_close_while_its_flusher_is_blocked_on_a_hanging_collector(
    tmp_path: Path,
) -> None:
    payload = (FIXTURES / "03_pre_tool_use_bash.json").read_bytes()
    for attempt in range(3):
        spool = tmp_path / f"spool-{attempt}"
        with HangingServer() as server:
            proc, r = launch(payload, hook_env(spool, server.url))
            try:
                assert proc.wait(60) == 0
                # The flusher has sent its POST and waits for the answer that never comes ...
                request = server.wait_for_request(60)
                closed = pipe_closed(r)
                # Every lock a hook may block on (spool.lock: the bound, the dropped count) is
                # free: only flush.lock, which hooks never wait for, is held across the network.
                spool_lock_free = lock_free(spool / "spool.lock")
                # ... and it still waits now, so it was alive (holding what it holds) above.
                blocked = server.is_open(request)
            finally:
                os.close(r)
        wait_until(partial(lock_free, spool / "flush.lock"), 30, "the flusher to exit")
        if blocked:
            break
    else:  # a stall longer than the flusher's read timeout between two lines, three times
        pytest.fail("the flusher gave up before its state could be looked at")
    assert closed, "a flusher blocked on the network holds the hook's stdout/stderr open"
    assert spool_lock_free, "a flusher blocked on the network holds spool.lock, hooks wait for it"


STRESS_RUNS = 200
STRESS_SPOOLS = 20  # the first hook of each spool starts a flusher that blocks


@pytest.mark.e2e
def test_no_hook_waits_for_a_flusher_under_load_against_a_hanging_collector(
    tmp_path: Path,
) -> None:
    payloads = [json.dumps(p).encode() for p in fixtures(tmp_path)]
    spools = [tmp_path / f"spool-{i}" for i in range(STRESS_SPOOLS)]
    held: list[str] = []
    walls: list[float] = []
    lock = threading.Lock()
    with HangingServer() as server:

        def one(i: int) -> None:
            env = hook_env(spools[i % STRESS_SPOOLS], server.url)
            started = time.perf_counter()
            proc, r = launch(payloads[i % len(payloads)], env)
            try:
                assert proc.wait(60) == 0
                closed = pipe_closed(r)
                wait_closed(r)  # what Claude Code waits for: exit and the pipes closed
                wall = time.perf_counter() - started
            finally:
                os.close(r)
            with lock:
                walls.append(wall)
                if not closed:
                    held.append(f"run {i}: pipe still open after the hook exited ({wall:.2f} s)")

        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(one, range(STRESS_RUNS)))
        blocked = sum(1 for c in server.connections() if server.is_open(c))
    for spool in spools:
        wait_until(partial(lock_free, spool / "flush.lock"), 30, "the flushers to exit")
    walls.sort()
    print(
        f"{STRESS_RUNS} hooks against a hanging collector, {blocked} flushers blocked at the end: "
        f"wall p50 {walls[len(walls) // 2] * 1000:.0f} ms, max {walls[-1] * 1000:.0f} ms"
    )
    assert held == [], f"{len(held)} of {STRESS_RUNS} hooks waited for a flusher: {held[:5]}"
