"""The collector as a real uvicorn process: restarts, SIGTERM drain, SIGKILL durability,
promtool on a real scrape, start-up errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from bench.workload import session_events
from tests.support.db import connect
from tests.support.procs import REPO, free_port, require_binary, start_collector

pytestmark = pytest.mark.e2e


def stored_ids(db: Path) -> list[str]:
    with connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT aw_event_id(event_id) FROM events")]


def post(url: str, events: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        url + "/v1/events",
        content=orjson.dumps(events),
        headers={"content-type": "application/json"},
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def test_events_and_duplicates_persist_across_restarts(tmp_path: Path) -> None:
    events = session_events("s-restart", 40, now_ms() - 60_000)
    proc = start_collector(tmp_path)
    assert post(proc.url, events).json()["accepted"] == 40
    proc.stop()
    proc = start_collector(tmp_path, port=proc.port)
    try:
        again = post(proc.url, events[:10] + session_events("s-new", 5, now_ms()))
        assert again.json() == {"accepted": 5, "duplicate": 10, "rejected": []}
        single = post(proc.url, events[0:1][0])  # type: ignore[arg-type]
        assert single.status_code == 409
    finally:
        proc.stop()
    ids = stored_ids(tmp_path / "agentwatch.db")
    assert len(ids) == 45 == len(set(ids))


def _hammer(url: str, acked: list[str], stop: threading.Event, n: int) -> None:
    """Post batches until stopped; remember the ids of every 2xx-acknowledged batch."""
    with httpx.Client(timeout=10) as client:
        i = 0
        while not stop.is_set():
            batch = session_events(f"s-{n}-{i}", 50, now_ms() - 10_000)
            i += 1
            try:
                r = client.post(
                    url + "/v1/events",
                    content=orjson.dumps(batch),
                    headers={"content-type": "application/json"},
                )
            except httpx.HTTPError:
                continue  # no answer: the event may or may not be stored; not acknowledged
            if r.status_code == 200:
                acked.extend(str(e["event_id"]) for e in batch)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_every_acknowledged_event_survives_the_process_dying(tmp_path: Path, sig: int) -> None:
    proc = start_collector(tmp_path)
    acked: list[str] = []
    stop = threading.Event()
    writers = [threading.Thread(target=_hammer, args=(proc.url, acked, stop, n)) for n in range(4)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 30
    while len(acked) < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.proc.send_signal(sig)
    code = proc.proc.wait(30)
    stop.set()
    for w in writers:
        w.join()
    assert len(acked) >= 2000
    if sig == signal.SIGTERM:
        # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.
        assert code in (0, -signal.SIGTERM)
        assert "writer queue drained" in proc.logs()
    restarted = start_collector(tmp_path, port=proc.port)  # integrity check and reopen
    restarted.stop()
    ids = stored_ids(tmp_path / "agentwatch.db")
    assert len(ids) == len(set(ids)), "an event was stored twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost"


def test_promtool_check_metrics_on_a_realistic_scrape(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    proc = start_collector(tmp_path)
    try:
        events = session_events("s-prom", 120, now_ms() - 600_000)
        events.append(
            {
                "event_id": "perm-1-abcdef",
                "session_id": "s-prom",
                "hook_event": "Notification",
                "payload": {"notification_type": "permission_prompt", "message": "Allow Bash?"},
            }
        )
        assert post(proc.url, events).status_code == 200
        httpx.post(
            proc.url + "/v1/events", content=b"{bad", headers={"content-type": "application/json"}
        )
        scrape = httpx.get(proc.url + "/metrics").text
    finally:
        proc.stop()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "agentwatch_events_total",
        "agentwatch_tool_calls_total",
        "agentwatch_tool_duration_seconds_bucket",
        "agentwatch_tokens_total",
        "agentwatch_cost_usd_total",
        "agentwatch_session_duration_seconds_bucket",
        "agentwatch_store_write_seconds_bucket",
        'agentwatch_events_rejected_total{reason="malformed_json"} 1.0',
    ):
        assert name in scrape


def _run(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "collector"],
        env=full,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTWATCH_CAPTURE": "everything"}, "AGENTWATCH_CAPTURE must be one of"),
        ({"AGENTWATCH_LOG_LEVEL": "LOUD"}, "AGENTWATCH_LOG_LEVEL must be one of"),
        (
            {"AGENTWATCH_RELAY_BATCH_EVENTS": "many"},
            "AGENTWATCH_RELAY_BATCH_EVENTS='many' is not a valid int",
        ),
        ({"AGENTWATCH_RELAY_BACKOFF_MAX_SECONDS": "0"}, "AGENTWATCH_RELAY_BACKOFF_MAX_SECONDS"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "udp",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL must be one of",
        ),
    ],
)
def test_invalid_setting_exits_with_a_clear_message(env: dict[str, str], message: str) -> None:
    result = _run({"AGENTWATCH_PORT": str(free_port()), **env})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()  # one line, no traceback
    assert len(lines) == 1 and lines[0].startswith("agentwatch-collector: "), result.stderr
    assert message in lines[0]


def test_corrupt_database_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"garbage" * 1000)
    result = _run({"AGENTWATCH_DB": str(db), "AGENTWATCH_PORT": str(free_port())})
    assert result.returncode != 0
    assert "cannot open the store" in result.stdout
    assert db.read_bytes() == b"garbage" * 1000
