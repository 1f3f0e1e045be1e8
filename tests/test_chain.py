"""The whole chain under load and faults: the real hook script -> a live collector -> its OTLP
relay -> a real OTLP/gRPC receiver.

Thousands of hook runs (a few in parallel) while, in turn: the collector is SIGKILLed and
restarted on the same port and database (twice), the receiver is down for a while, the store's
file system fills up, the receiver is slow. Afterwards every event handed to the hook is stored
exactly once and was exported at least once. The counts are printed.

The faults wait for conditions, never for time: the hook's own flusher may be backing off for
seconds after a collector restart, so the load alone need not reach the collector (or the
receiver) while a fault lasts. Each outage therefore sends probe events through the real hook,
delivered at once with `--flush`, and lasts until the collector's own counter shows that the
fault was hit (a failed export, a failed store write).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.db import connect
from tests.support.otlp_receiver import GrpcReceiver
from tests.support.procs import REPO, Proc, free_port, start_collector, wait_until

HOOK = REPO / "hooks" / "agentwatch_hook.py"
EVENTS = int(os.environ.get("AGENTWATCH_CHAIN_EVENTS", "2000"))
PARALLEL = 4
SECONDS = float(os.environ.get("AGENTWATCH_CHAIN_SECONDS", "30"))  # paced: faults need load


@contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs (root only): the store's disk can then really fill up."""
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {done.stderr.decode()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Take every free byte of path's file system."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:  # ENOSPC: go on with smaller writes
                pass
    finally:
        os.close(fd)
    return filler


class Chain:
    def __init__(self, tmp: Path, data: Path) -> None:
        self.tmp = tmp
        self.receiver = GrpcReceiver().start()
        self.port = free_port()
        self.db = data / "agentwatch.db"
        self.env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint,
            "AGENTWATCH_RELAY_BACKOFF_BASE_SECONDS": "0.2",
            "AGENTWATCH_RELAY_BACKOFF_MAX_SECONDS": "1",
            "AGENTWATCH_RELAY_BREAKER_COOLDOWN_SECONDS": "1",
            "AGENTWATCH_RELAY_TIMEOUT_SECONDS": "5",
            "AGENTWATCH_INTEGRITY_CHECK": "off",
        }
        self.collector: Proc = self.start()
        self.hook_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))},
            "AGENTWATCH_URL": f"http://127.0.0.1:{self.port}",
            "AGENTWATCH_SPOOL_DIR": str(tmp / "spool"),
            "AGENTWATCH_SOURCE_APP": "chain",
        }
        self.done = 0
        self.probes = 0  # hook runs beyond the paced load, numbered from EVENTS
        self.lock = threading.Lock()
        self.began = time.monotonic()
        self.log: list[str] = []

    def start(self) -> Proc:
        return start_collector(self.tmp, self.env, port=self.port, db=self.db)

    def note(self, what: str) -> None:
        self.log.append(f"after {self.done} hook runs: {what}")
        print(self.log[-1], flush=True)

    def hook(self, i: int, session: str, paced: bool = True) -> None:
        delay = self.began + i * SECONDS / EVENTS - time.monotonic()
        if paced and delay > 0:
            time.sleep(delay)
        event = {
            "session_id": session,
            "transcript_path": "/nonexistent.jsonl",
            "cwd": "/home/dev/chain",
            "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_use_id": f"toolu_chain_{i:06d}",
            "tool_input": {"command": f"echo {i}"},
        }
        subprocess.run(
            [sys.executable, "-S", str(HOOK)],
            input=orjson.dumps(event),
            env=self.hook_env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        with self.lock:
            self.done += 1

    def probe(self, session: str) -> None:
        """One more event through the real hook, delivered to the collector now (--flush)."""
        with self.lock:
            i = EVENTS + self.probes
            self.probes += 1
        self.hook(i, session, paced=False)
        self.flush()

    def metric(self, name: str) -> float:
        """A sample of the collector's /metrics, summed over its labels."""
        text = httpx.get(self.collector.url + "/metrics", timeout=10).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )

    def flush(self) -> None:
        subprocess.run(
            [sys.executable, "-S", str(HOOK), "--flush"],
            env=self.hook_env,
            capture_output=True,
            timeout=120,
            check=True,
        )

    def stored(self) -> dict[str, tuple[int, str]]:
        """tool_use_id -> (rows, event_id) for the chain's events."""
        with connect(self.db) as conn:
            rows = conn.execute(
                "SELECT tool_use_id, count(*), min(aw_event_id(event_id)) FROM events "
                "WHERE tool_use_id LIKE 'toolu_chain_%' GROUP BY tool_use_id"
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}


def faults(chain: Chain, data: Path) -> list[tuple[float, Callable[[], None]]]:
    """(share of the hook runs done, fault) in the order they happen."""
    state: dict[str, Path] = {}

    def kill_and_restart() -> None:
        chain.collector.kill()
        chain.note("collector SIGKILLed")
        time.sleep(0.5)
        chain.collector = chain.start()
        chain.note("collector restarted on the same port and database")

    def receiver_down() -> None:
        failed = chain.metric("agentwatch_relay_failures_total")
        chain.receiver.stop()
        chain.note("receiver down")
        # The relay exports only what reaches the store: send an event and wait for the relay
        # to fail on it (it keeps retrying that batch while the receiver is down).
        chain.probe("chain-receiver-down")
        wait_until(
            lambda: chain.metric("agentwatch_relay_failures_total") > failed,
            120,
            "the relay to fail an export while the receiver is down",
        )
        chain.note("an export failed")

    def receiver_up() -> None:
        chain.receiver.start()
        chain.note("receiver up")

    def disk_full() -> None:
        failed = chain.metric("agentwatch_store_errors_total")
        state["filler"] = fill(data)
        chain.note(f"store's file system full ({shutil.disk_usage(data).free} bytes free)")

        # The hook's flusher may be backing off after the outages, and SQLite may still find
        # room in its WAL for a while: send events until a store write has failed.
        def write_failed() -> bool:
            chain.probe("chain-disk-full")
            return chain.metric("agentwatch_store_errors_total") > failed

        wait_until(write_failed, 120, "a store write to fail on the full disk")
        chain.note("a store write failed")

    def disk_freed() -> None:
        state["filler"].unlink()
        chain.note("store's file system freed")

    def slow_receiver() -> None:
        chain.receiver.rec.delay = 0.3
        chain.note("receiver slow (0.3 s per export)")

    def fast_receiver() -> None:
        chain.receiver.rec.delay = 0.0
        chain.note("receiver fast again")

    return [
        (0.15, kill_and_restart),
        (0.25, receiver_down),
        (0.35, kill_and_restart),
        (0.45, receiver_up),
        (0.55, disk_full),
        (0.65, disk_freed),
        (0.75, slow_receiver),
        (0.90, fast_receiver),
    ]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_every_event_is_stored_once_and_exported_under_faults(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "data", "64m") as data:
        chain = Chain(tmp_path, data)
        try:
            plan = faults(chain, data)
            sessions = ["chain-" + uuid.uuid4().hex[:8] for _ in range(8)]
            stop = threading.Event()

            def injector() -> None:
                for share, fault in plan:
                    # Once the load is over, the remaining faults (and recoveries) run at once.
                    while chain.done < share * EVENTS and not stop.is_set():
                        time.sleep(0.05)
                    fault()

            inject = threading.Thread(target=injector, daemon=True)
            chain.began = time.monotonic()
            inject.start()
            with ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(lambda i: chain.hook(i, sessions[i % 8]), range(EVENTS)))
            stop.set()
            inject.join()
            assert chain.log[-1].endswith("receiver fast again"), chain.log  # every fault ran
            chain.flush()  # the hook's own replay of whatever is still spooled
            stored = chain.stored()
            want = {f"toolu_chain_{i:06d}" for i in range(EVENTS + chain.probes)}
            ids = {event_id for _, event_id in stored.values()}
            wait_until(lambda: ids <= chain.receiver.rec.event_ids(), 120, "every event exported")
            exported = chain.receiver.rec.event_ids()
            twice = sum(1 for n, _ in stored.values() if n > 1)
            runs = EVENTS + chain.probes
            print(
                f"hook runs {runs}, stored {len(stored)} (more than once: {twice}), "
                f"exported {len(ids & exported)} (receiver got {len(chain.receiver.rec.logs)} "
                f"log records in {chain.receiver.rec.requests} requests)"
            )
            assert set(stored) == want
            assert twice == 0
            assert ids <= exported
            logs = chain.collector.logs()
            assert "store write failed" in logs, "the full disk never refused a write"
            assert "gRPC export failed" in logs, "the receiver outage never failed an export"
            assert list((tmp_path / "spool" / "events").glob("*.json")) == []
            ready = httpx.get(chain.collector.url + "/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
        finally:
            chain.collector.stop()
            chain.receiver.stop()
