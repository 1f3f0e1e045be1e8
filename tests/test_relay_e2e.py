"""The OTLP relay end to end: the real collector relays a realistic session to real OTLP
receivers (gRPC and HTTP/protobuf) on real sockets; the exact log records and span tree are
checked, ids survive a crash and restart, and an outage of 10,000 events is drained in full.

The session: two parallel Explore subagents started by two Task calls, a failed Bash call, a
permission prompt, a loop of the same Bash call, a Stop with usage, then SessionEnd.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bench.workload import events as workload
from collector.otlp.ids import span_id, trace_context, trace_id
from tests.conftest import BACKENDS
from tests.support.otlp_receiver import GrpcReceiver, HttpReceiver, Recorder
from tests.support.procs import Proc, start_collector, wait_until

pytestmark = pytest.mark.e2e

LOOP = 6


def session(session_id: str | None = None) -> list[dict[str, Any]]:
    sid = session_id or "sess-" + uuid.uuid4().hex[:12]
    t0 = int(time.time() * 1000) - 120_000
    out: list[dict[str, Any]] = []

    def ev(offset: int, hook: str, agent: str | None = None, **payload: Any) -> None:
        body = {"session_id": sid, "hook_event_name": hook, "cwd": "/home/dev/shop", **payload}
        env: dict[str, Any] = {
            "event_id": f"{sid}-{len(out):03d}",
            "ts": t0 + offset,
            "source_app": "shop",
            "machine_id": "m-relay",
            "session_id": sid,
            "hook_event": hook,
            "tool_name": payload.get("tool_name"),
            "tool_use_id": payload.get("tool_use_id"),
            "payload": body,
        }
        if agent:
            env |= {"agent_id": agent, "parent_agent_id": sid, "agent_type": "Explore"}
            body |= {"agent_id": agent, "agent_type": "Explore"}
        if hook in ("Stop", "SubagentStop"):
            env["usage"] = {"claude-sonnet-4-5": {"input": 1000, "output": 200, "cache_read": 50}}
        out.append(env)

    def tool(
        start: int, end: int, name: str, tid: str, agent: str | None = None, **kw: Any
    ) -> None:
        tool_input = kw.pop("tool_input", {"command": "pytest -q"})
        ev(start, "PreToolUse", agent, tool_name=name, tool_use_id=tid, tool_input=tool_input)
        hook = "PostToolUseFailure" if "error" in kw else "PostToolUse"
        result = kw if "error" in kw else {"tool_response": {"stdout": "ok"}}
        ev(end, hook, agent, tool_name=name, tool_use_id=tid, tool_input=tool_input, **result)

    ev(0, "SessionStart", source="startup", model="claude-sonnet-4-5")
    ev(100, "UserPromptSubmit", prompt="Fix the failing tests in the shop service")
    tool(200, 1200, "Bash", "toolu_bash1", error="exit status 1: 2 failed")
    explore = {"subagent_type": "Explore", "description": "find handlers", "prompt": "look"}
    ev(1300, "PreToolUse", tool_name="Task", tool_use_id="toolu_task1", tool_input=explore)
    ev(1310, "PreToolUse", tool_name="Task", tool_use_id="toolu_task2", tool_input=explore)
    ev(1400, "SubagentStart", "agent-a1")
    ev(1410, "SubagentStart", "agent-a2")
    tool(1500, 1600, "Grep", "toolu_grep1", "agent-a1", tool_input={"pattern": "def handler"})
    tool(1700, 1800, "Read", "toolu_read1", "agent-a2", tool_input={"file_path": "/src/app.py"})
    ev(2000, "SubagentStop", "agent-a1")
    ev(2100, "SubagentStop", "agent-a2")
    for n, offset in ((1, 2200), (2, 2300)):
        ev(
            offset,
            "PostToolUse",
            tool_name="Task",
            tool_use_id=f"toolu_task{n}",
            tool_input=explore,
            tool_response={"result": "found"},
        )
    ev(2400, "PermissionRequest", tool_name="Edit", tool_input={"file_path": "/src/app.py"})
    ev(
        2450,
        "Notification",
        notification_type="permission_prompt",
        message="Claude needs permission",
    )
    tool(2500, 2600, "Edit", "toolu_edit1", tool_input={"file_path": "/src/app.py"})
    for i in range(LOOP):
        tool(3000 + i * 200, 3100 + i * 200, "Bash", f"toolu_loop{i}")
    ev(5000, "Stop", stop_hook_active=False)
    ev(5100, "SessionEnd", reason="prompt_input_exit")
    return out


# -- helpers ---------------------------------------------------------------------------------
def relay_env(endpoint: str, protocol: str = "grpc", **knobs: str) -> dict[str, str]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    env |= {f"AGENTWATCH_RELAY_{k.upper()}": v for k, v in knobs.items()}
    return env


def post(proc: Proc, events: list[dict[str, Any]], batch: int = 500) -> None:
    with httpx.Client(timeout=60) as client:
        for i in range(0, len(events), batch):
            r = client.post(proc.url + "/v1/events", json=events[i : i + batch])
            assert r.status_code == 200, r.text
            assert r.json()["rejected"] == [], r.text


def row_of(env: dict[str, Any]) -> dict[str, Any]:
    """The stored-row fields trace_context reads, as the collector derives them."""
    return {
        "session_id": env["session_id"],
        "agent_id": env.get("agent_id") or env["session_id"],
        "hook_event": env["hook_event"],
        "tool_use_id": env.get("tool_use_id"),
        "event_id": env["event_id"],
    }


def wait_exported(rec: Recorder, events: list[dict[str, Any]], timeout: float = 30) -> None:
    want = {e["event_id"] for e in events}
    wait_until(lambda: want <= rec.event_ids(), timeout, "every event exported as a log record")


def span_table(rec: Recorder, t0: int) -> dict[str, tuple[str, str, int, int, int]]:
    """span id -> (name, parent, start offset, end offset, status code); copies must agree."""
    table: dict[str, tuple[str, str, int, int, int]] = {}
    for s in rec.spans:
        row = (
            s["name"],
            s["parent_span_id"],
            s["start_ms"] - t0,
            s["end_ms"] - t0,
            s["status_code"],
        )
        assert table.setdefault(s["span_id"], row) == row, f"re-exported span differs: {s}"
    return table


ERROR = 2  # Status.STATUS_CODE_ERROR


def expected_tree(events: list[dict[str, Any]]) -> dict[str, tuple[str, str, int, int, int]]:
    sid = events[0]["session_id"]

    def s(kind: str, key: str) -> str:
        return span_id(sid, kind, key).hex()

    root, turn = s("agent", sid), s("turn", events[1]["event_id"])
    task1, task2 = s("tool", "toolu_task1"), s("tool", "toolu_task2")
    a1, a2 = s("agent", "agent-a1"), s("agent", "agent-a2")
    tree = {
        root: ("invoke_agent main", "", 0, 5100, 0),
        turn: ("prompt_turn", root, 100, 5000, 0),
        s("tool", "toolu_bash1"): ("execute_tool Bash", turn, 200, 1200, ERROR),
        task1: ("execute_tool Task", turn, 1300, 2200, 0),
        task2: ("execute_tool Task", turn, 1310, 2300, 0),
        a1: ("invoke_agent Explore", task1, 1400, 2000, 0),
        a2: ("invoke_agent Explore", task2, 1410, 2100, 0),
        s("tool", "toolu_grep1"): ("execute_tool Grep", a1, 1500, 1600, 0),
        s("tool", "toolu_read1"): ("execute_tool Read", a2, 1700, 1800, 0),
        s("tool", "toolu_edit1"): ("execute_tool Edit", turn, 2500, 2600, 0),
    }
    for i in range(LOOP):
        tree[s("tool", f"toolu_loop{i}")] = (
            "execute_tool Bash",
            turn,
            3000 + i * 200,
            3100 + i * 200,
            0,
        )
    return tree


RESOURCE = {"service.name": "agentwatch", "service.namespace": "agentwatch"}


def check_logs(rec: Recorder, events: list[dict[str, Any]]) -> None:
    sid = events[0]["session_id"]
    by_id = {r["attributes"]["agentwatch.event_id"]: r for r in rec.logs}
    assert set(by_id) == {e["event_id"] for e in events}
    for env in events:
        r = by_id[env["event_id"]]
        assert (r["trace_id"], r["span_id"]) == trace_context(row_of(env))
        assert r["time_unix_nano"] == env["ts"] * 1_000_000
        assert r["body"] == r["attributes"]["agentwatch.detail"]
        assert {k: r["resource"][k] for k in RESOURCE} == RESOURCE
        assert r["resource"]["service.version"]
    failed = by_id[events[3]["event_id"]]
    assert failed["severity_text"] == "ERROR" and failed["severity_number"] == 17
    assert failed["body"] == "PostToolUseFailure Bash failed: exit status 1: 2 failed"
    assert failed["attributes"] == {
        "gen_ai.conversation.id": sid,
        "gen_ai.agent.id": sid,
        "gen_ai.agent.name": "main",
        "gen_ai.tool.name": "Bash",
        "gen_ai.tool.call.id": "toolu_bash1",
        "agentwatch.hook_event": "PostToolUseFailure",
        "agentwatch.source_app": "shop",
        "agentwatch.machine_id": "m-relay",
        "agentwatch.outcome": "error",
        "agentwatch.event_id": events[3]["event_id"],
        "agentwatch.error": "exit status 1: 2 failed",
        "agentwatch.detail": "PostToolUseFailure Bash failed: exit status 1: 2 failed",
    }
    assert failed["span_id"] == span_id(sid, "tool", "toolu_bash1").hex()
    start = by_id[events[0]["event_id"]]
    assert start["severity_text"] == "INFO"
    assert start["attributes"]["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert start["body"] == "SessionStart startup claude-sonnet-4-5"
    sub = next(r for r in rec.logs if r["attributes"]["agentwatch.hook_event"] == "SubagentStart")
    assert sub["attributes"]["gen_ai.agent.name"] == "Explore"
    assert sub["attributes"]["gen_ai.agent.id"] == "agent-a1"
    assert sub["span_id"] == span_id(sid, "agent", "agent-a1").hex()
    stop = next(r for r in rec.logs if r["attributes"]["agentwatch.hook_event"] == "Stop")
    assert stop["attributes"]["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert stop["attributes"]["gen_ai.usage.input_tokens"] == 1000
    assert stop["attributes"]["gen_ai.usage.output_tokens"] == 200
    note = next(r for r in rec.logs if r["attributes"]["agentwatch.hook_event"] == "Notification")
    assert note["body"] == "Notification permission_prompt: Claude needs permission"
    perm = next(
        r for r in rec.logs if r["attributes"]["agentwatch.hook_event"] == "PermissionRequest"
    )
    assert perm["body"] == "PermissionRequest Edit: /src/app.py"
    assert perm["span_id"] == span_id(sid, "agent", sid).hex()


def check_spans(rec: Recorder, events: list[dict[str, Any]]) -> None:
    sid, t0 = events[0]["session_id"], events[0]["ts"]
    assert span_table(rec, t0) == expected_tree(events)
    assert {s["trace_id"] for s in rec.spans} == {trace_id(sid).hex()}
    spans = {s["span_id"]: s for s in rec.spans}
    bash = spans[span_id(sid, "tool", "toolu_bash1").hex()]
    assert bash["status_message"] == "exit status 1: 2 failed"
    assert bash["attributes"] == {
        "gen_ai.conversation.id": sid,
        "agentwatch.source_app": "shop",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "Bash",
        "gen_ai.tool.call.id": "toolu_bash1",
        "gen_ai.agent.id": sid,
        "gen_ai.agent.name": "main",
        "agentwatch.outcome": "error",
    }
    a1 = spans[span_id(sid, "agent", "agent-a1").hex()]["attributes"]
    assert a1["gen_ai.operation.name"] == "invoke_agent"
    assert a1["gen_ai.agent.id"] == "agent-a1"
    assert (a1["gen_ai.usage.input_tokens"], a1["gen_ai.usage.output_tokens"]) == (1000, 200)
    root = spans[span_id(sid, "agent", sid).hex()]["attributes"]
    assert root["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert root["agentwatch.session_end_reason"] == "prompt_input_exit"
    assert not any("agentwatch.span.incomplete" in s["attributes"] for s in rec.spans)


def relay_status(proc: Proc) -> dict[str, Any]:
    r = httpx.get(proc.url + "/readyz", timeout=5)
    assert r.status_code == 200, r.text  # a relay in trouble never makes the collector unready
    status: dict[str, Any] = r.json()["relay"]
    return status


# -- tests -----------------------------------------------------------------------------------
@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    rx = GrpcReceiver().start()
    yield rx
    rx.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_session_over_grpc_gives_exact_logs_and_span_tree(
    tmp_path: Path, grpc_receiver: GrpcReceiver, backend: str, request: pytest.FixtureRequest
) -> None:
    events = session()
    env = relay_env(grpc_receiver.endpoint)
    if backend == "postgres":
        env["AGENTWATCH_DB"] = request.getfixturevalue("pg_dsn")
    proc = start_collector(tmp_path, env)
    try:
        post(proc, events, batch=7)  # several commits: the tree is built across pages
        wait_exported(grpc_receiver.rec, events)
        wait_until(lambda: len(grpc_receiver.rec.spans) >= 16, 10, "16 spans")
        wait_until(lambda: relay_status(proc)["backlog_events"] == 0, 10, "backlog 0")
        status = relay_status(proc)
        metrics = httpx.get(proc.url + "/metrics").text
    finally:
        proc.stop()
    assert len(grpc_receiver.rec.logs) == len(events)  # no failure: exactly once
    check_logs(grpc_receiver.rec, events)
    check_spans(grpc_receiver.rec, events)
    assert status["state"] == "ok" and status["cursor"] == len(events)
    assert f'agentwatch_relay_exported_total{{signal="logs"}} {len(events)}.0' in metrics
    assert 'agentwatch_relay_exported_total{signal="traces"} 16.0' in metrics
    assert 'agentwatch_relay_state{state="ok"} 1.0' in metrics


def test_http_protobuf_receiver_errors_then_recovers(tmp_path: Path) -> None:
    rx = HttpReceiver().start()
    rx.rec.fail = True  # every export answers 503 at first
    events = session()
    env = relay_env(rx.endpoint, "http/protobuf", backoff_base_seconds="0.1", timeout_seconds="2")
    proc = start_collector(tmp_path, env)
    try:
        post(proc, events)
        wait_until(
            lambda: relay_status(proc)["state"] in ("delayed", "circuit_open"), 10, "relay delayed"
        )
        assert relay_status(proc)["last_error"].startswith("logs: HTTP 503")
        assert rx.rec.logs == []
        rx.rec.fail = False
        wait_exported(rx.rec, events)
        wait_until(lambda: len(rx.rec.spans) >= 16, 10, "16 spans")
        wait_until(lambda: relay_status(proc)["state"] == "ok", 10, "relay ok again")
    finally:
        proc.stop()
        rx.stop()
    check_logs(rx.rec, events)
    check_spans(rx.rec, events)


def test_ids_stable_across_a_crash_mid_export(tmp_path: Path, grpc_receiver: GrpcReceiver) -> None:
    events = session()
    env = relay_env(grpc_receiver.endpoint, batch_events="4")
    grpc_receiver.rec.delay = 0.3  # exports are in flight when the collector dies
    proc = start_collector(tmp_path, env)
    post(proc, events)
    wait_until(lambda: grpc_receiver.rec.requests >= 3, 20, "a few exports")
    proc.kill()  # SIGKILL: no shutdown, an export in flight
    first = len(grpc_receiver.rec.logs)
    assert 0 < first < len(events), "the crash must land mid-way"
    grpc_receiver.rec.delay = 0
    proc = start_collector(tmp_path, env, port=proc.port)
    try:
        wait_exported(grpc_receiver.rec, events)
        wait_until(lambda: relay_status(proc)["backlog_events"] == 0, 10, "backlog 0")
        wait_until(lambda: len(span_table(grpc_receiver.rec, 0)) >= 16, 10, "16 spans")
    finally:
        proc.stop()
    # At least once: some records may come twice, each time identical in ids.
    check_logs(grpc_receiver.rec, events)
    check_spans(grpc_receiver.rec, events)


def test_span_without_end_is_closed_after_timeout(
    tmp_path: Path, grpc_receiver: GrpcReceiver
) -> None:
    events = session()[:3]  # SessionStart, prompt, PreToolUse Bash, then nothing
    proc = start_collector(tmp_path, relay_env(grpc_receiver.endpoint, span_timeout_seconds="1"))
    try:
        post(proc, events)
        wait_until(lambda: len(grpc_receiver.rec.spans) == 3, 15, "3 timed-out spans")
    finally:
        proc.stop()
    sid, t0 = events[0]["session_id"], events[0]["ts"]
    table = span_table(grpc_receiver.rec, t0)
    root, turn = span_id(sid, "agent", sid).hex(), span_id(sid, "turn", events[1]["event_id"]).hex()
    # Closed at the session's last event, marked incomplete.
    assert table == {
        root: ("invoke_agent main", "", 0, 200, 0),
        turn: ("prompt_turn", root, 100, 200, 0),
        span_id(sid, "tool", "toolu_bash1").hex(): ("execute_tool Bash", turn, 200, 200, 0),
    }
    assert all(
        s["attributes"]["agentwatch.span.incomplete"] is True for s in grpc_receiver.rec.spans
    )


STATE = re.compile(r'^agentwatch_relay_state\{state="(\w+)"\} 1\.0$', re.M)


def test_outage_of_10000_events_is_drained_with_flat_memory(tmp_path: Path) -> None:
    rx = GrpcReceiver()  # its port is reserved, nothing listens yet: the endpoint is down
    env = relay_env(
        rx.endpoint,
        breaker_failures="3",
        breaker_cooldown_seconds="1",
        backoff_base_seconds="0.3",
        backoff_max_seconds="1",
        timeout_seconds="2",
    )
    proc = start_collector(tmp_path, env)
    states: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                m = STATE.search(client.get(proc.url + "/metrics").text)
                if m and (not states or states[-1] != m.group(1)):
                    states.append(m.group(1))
                time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        events = workload(10_000, per_session=200)
        rss = psutil.Process(proc.proc.pid)
        post(proc, events[:5000])
        wait_until(lambda: "circuit_open" in states, 20, "circuit open")
        before = rss.memory_info().rss
        post(proc, events[5000:])
        time.sleep(2.5)  # a few more probes against the dead endpoint
        after = rss.memory_info().rss
        status = relay_status(proc)
        assert status["state"] == "circuit_open"
        assert status["backlog_events"] == 10_000
        rx.start()
        wait_exported(rx.rec, events, timeout=60)
        wait_until(lambda: relay_status(proc)["backlog_events"] == 0, 10, "backlog 0")
        wait_until(lambda: states[-1] == "ok", 5, "state ok in /metrics")
        metrics = httpx.get(proc.url + "/metrics").text
    finally:
        stop.set()
        poller.join()
        proc.stop()
        rx.stop()
    assert states == ["ok", "delayed", "circuit_open", "ok"]
    # The backlog stays in SQLite: 5,000 more undelivered events do not grow the process
    # (they would be tens of MB as protobuf and Python objects).
    assert after - before < 20 * 2**20, f"RSS grew {(after - before) / 2**20:.1f} MiB"
    exported = re.search(r'agentwatch_relay_exported_total\{signal="logs"\} ([\d.e+]+)', metrics)
    assert exported and float(exported.group(1)) >= 10_000
    failures = re.search(r'agentwatch_relay_failures_total\{signal="logs"\} ([\d.e+]+)', metrics)
    assert failures and float(failures.group(1)) >= 3
    assert "agentwatch_relay_lag_seconds 0.0" in metrics
