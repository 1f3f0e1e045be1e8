"""GET /v1/stream against a live uvicorn: order, filters, heartbeats, resume, stalled clients."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import BACKENDS
from tests.support.procs import Proc, start_collector, wait_until
from tests.test_query_data import NOW_MS, env, tool_call

pytestmark = pytest.mark.e2e


@pytest.fixture(params=BACKENDS)
def live(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proc]:
    """A live collector on each store: on PostgreSQL, NOTIFY is what wakes the streams."""
    env = (
        {"AGENTWATCH_DB": request.getfixturevalue("pg_dsn")} if request.param == "postgres" else {}
    )
    p = start_collector(tmp_path, env)
    try:
        yield p
    finally:
        p.stop()


class SSE:
    """A background SSE reader: parsed messages (and comments) land in a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        msg: dict[str, Any] = {}
        try:
            with self._client.stream("GET", url, headers=headers) as r:
                self.messages.put({"status": r.status_code})
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if not line:
                        if msg:
                            self.messages.put(msg)
                        msg = {}
                    elif line.startswith(":"):
                        self.messages.put({"comment": line[1:].strip()})
                    else:
                        key, _, value = line.partition(":")
                        msg[key] = value.removeprefix(" ")
        except (httpx.HTTPError, RuntimeError):
            pass

    def take(self, n: int, timeout: float = 20) -> list[dict[str, Any]]:
        """The next n data messages (skipping comments and the status line)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            m = self.messages.get(timeout=timeout)
            if "data" in m:
                out.append(m)
        return out

    def wait_comment(self, text: str, timeout: float = 20) -> None:
        while True:
            m = self.messages.get(timeout=timeout)
            if m.get("comment") == text:
                return

    def close(self) -> None:
        """Leave at the next line (the tests ask for heartbeats often), closing the connection."""
        self._stop.set()
        self._thread.join(10)
        self._client.close()


def post(p: Proc, envelopes: list[dict[str, Any]]) -> None:
    r = httpx.post(p.url + "/v1/events", json=envelopes, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(envelopes)


def opened(sse: SSE) -> None:
    assert sse.messages.get(timeout=20) == {"status": 200}
    sse.wait_comment("stream open")


def test_stream_delivers_new_events_in_order_with_filters_and_heartbeats(live: Proc) -> None:
    post(live, tool_call("s-before", "Bash", NOW_MS - 9000, 10))  # before the stream: not sent
    everything = SSE(live.url + "/v1/stream?heartbeat=0.3")
    only_s1 = SSE(live.url + "/v1/stream?session=s1&hook_event=PreToolUse&heartbeat=0.3")
    try:
        opened(everything)
        opened(only_s1)
        batch: list[dict[str, Any]] = []
        for i in range(20):
            batch += tool_call("s1" if i % 2 else "s2", "Read", NOW_MS - 5000 + i * 10, 3)
        post(live, batch[:15])
        post(live, batch[15:])
        got = everything.take(40)
        ids = [int(m["id"]) for m in got]
        assert ids == sorted(ids) and len(set(ids)) == 40
        assert [orjson.loads(m["data"])["event_id"] for m in got] == [e["event_id"] for e in batch]
        filtered = [orjson.loads(m["data"]) for m in only_s1.take(10)]
        assert {(e["session_id"], e["hook_event"]) for e in filtered} == {("s1", "PreToolUse")}
        everything.wait_comment("heartbeat")
    finally:
        everything.close()
        only_s1.close()


def test_resume_with_last_event_id_replays_what_was_missed(live: Proc) -> None:
    first = SSE(live.url + "/v1/stream?heartbeat=0.3")
    opened(first)
    sent = tool_call("s-r", "Bash", NOW_MS - 8000, 5) + tool_call("s-r", "Edit", NOW_MS - 7000, 5)
    post(live, sent[:2])
    seen = first.take(2)
    first.close()
    post(live, sent[2:])  # while disconnected
    again = SSE(live.url + "/v1/stream?heartbeat=0.3", headers={"Last-Event-ID": seen[-1]["id"]})
    try:
        rest = again.take(2)
        got = [orjson.loads(m["data"])["event_id"] for m in seen + rest]
        assert got == [e["event_id"] for e in sent]
        assert int(rest[0]["id"]) > int(seen[-1]["id"])
    finally:
        again.close()
    bad = httpx.get(live.url + "/v1/stream", headers={"Last-Event-ID": "abc"}, timeout=10)
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]


def test_a_stalled_client_does_not_block_ingest_and_its_drops_are_counted(live: Proc) -> None:
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", live.port))
    stalled.sendall(
        b"GET /v1/stream?backlog=10 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    try:
        head = stalled.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        big = "x" * 4000
        total = 0
        for b in range(12):  # ~12 MB of SSE for a client that reads nothing
            batch = [
                env(f"s-big-{b}", "Notification", NOW_MS - 60_000 + i, payload={"message": big})
                for i in range(250)
            ]
            post(live, batch)  # each ack means committed, although the stream is stuck
            total += len(batch)
        r = httpx.get(live.url + "/v1/events", params={"limit": 1, "session": "s-big-11"})
        assert r.json()["items"][0]["session_id"] == "s-big-11"
        assert httpx.get(live.url + "/readyz", timeout=10).status_code == 200

        # Now the client reads again: it is told how much it missed, and the counter agrees.
        stalled.settimeout(30)
        buf = b""
        while b"event: dropped" not in buf:
            chunk = stalled.recv(1 << 20)
            assert chunk, "stream closed before the drop notice"
            buf += chunk
            buf = buf[-(1 << 16) :]
        note = buf.split(b"event: dropped\ndata: ", 1)[1].split(b"\n", 1)[0]
        dropped = orjson.loads(note)["dropped"]
        assert 0 < dropped < total

        def counted() -> bool:
            text = httpx.get(live.url + "/metrics", timeout=10).text
            line = next(x for x in text.splitlines() if x.startswith("agentwatch_stream_dropped"))
            return float(line.split()[-1]) >= dropped

        wait_until(counted, 20, "agentwatch_stream_dropped_total")
    finally:
        stalled.close()


def test_sigterm_ends_open_streams_instead_of_waiting_for_the_grace_timeout(tmp_path: Path) -> None:
    proc = start_collector(tmp_path)
    ended = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", proc.url + "/v1/stream?heartbeat=1", timeout=60) as r:
            for _ in r.iter_bytes():
                pass
        ended.set()

    reader = threading.Thread(target=listen)
    reader.start()
    wait_until(lambda: "agentwatch_stream_clients 1.0" in httpx.get(proc.url + "/metrics").text)
    proc.stop()
    reader.join(60)
    assert ended.is_set()
    assert "graceful shutdown exceeded" not in proc.logs()
    assert "writer queue drained" in proc.logs()
