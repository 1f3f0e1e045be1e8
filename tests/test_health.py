"""Readiness and /metrics while the store's writer is stuck: the probe runs off the event loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from collector.store import SQLiteStore
from tests.conftest import Harness

WAIT = 30  # seconds; only reached when the behaviour under test is broken


class StuckWriter:
    """Blocks the store's writer thread until release(); the probe's tiny write queues behind."""

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blocked = threading.Event()
        self.released = threading.Event()
        self.released_in_time: list[bool] = []
        self.probing = threading.Event()
        self.probes = 0
        real_probe = store.probe

        def block(_conn: Any) -> None:
            self.blocked.set()
            self.released_in_time.append(self.released.wait(WAIT))

        def probe(timeout: float = 2.0) -> None:
            self.probes += 1
            self.probing.set()
            real_probe(timeout=2 * WAIT)  # the real write; its own 2 s would race the test

        monkeypatch.setattr(store, "probe", probe)
        store.run_task(block)
        assert self.blocked.wait(WAIT)
        store.failure = "write failed: disk I/O error"  # as after a failed commit

    def release(self) -> None:
        self.released.set()


def get_in_thread(h: Harness, path: str) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(h.client.get(path)))
    thread.start()
    return thread, answers


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
def test_other_requests_are_answered_while_the_probe_waits_for_the_writer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    writer = StuckWriter(harness.client.app.state.ctx.store, monkeypatch)
    thread, answers = get_in_thread(harness, path)
    assert writer.probing.wait(WAIT)
    # With the probe on the event loop, this request would wait for the writer, which waits
    # for it: the writer gives up after WAIT and released_in_time says so.
    assert harness.client.get("/healthz").status_code == 200
    writer.release()
    thread.join(2 * WAIT)
    assert writer.released_in_time == [True]
    assert answers[0].status_code == 200  # the probe's write went through: the store recovered
    if path == "/metrics":
        assert "agentwatch_ready 1.0" in answers[0].text
    assert harness.client.get("/readyz").json()["reasons"] == []


def test_one_probe_at_a_time_and_readiness_meanwhile_says_why(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = StuckWriter(harness.client.app.state.ctx.store, monkeypatch)
    thread, answers = get_in_thread(harness, "/readyz")
    assert writer.probing.wait(WAIT)
    meanwhile = harness.client.get("/readyz")
    assert meanwhile.status_code == 503
    assert meanwhile.json()["reasons"] == ["write failed: disk I/O error"]
    assert "agentwatch_ready 0.0" in harness.client.get("/metrics").text
    writer.release()
    thread.join(2 * WAIT)
    assert writer.probes == 1
    assert answers[0].status_code == 200
