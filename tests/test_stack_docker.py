"""The whole compose stack, brought up with testcontainers where a Docker engine answers.

A session goes through the real hook into the containerised collector; the test then finds it
in Prometheus (metrics), Loki (relayed logs), Tempo (the session's trace) and the dashboards in
Grafana's API. Without a Docker engine (the development and CI machines) the module is skipped
with the reason, CI included: it is the one documented exception, and every part it touches is
also checked without Docker by the other stack tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import wait_until
from tests.support.stack import REPO

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

PORTS = (4000, 4001, 4317, 4318, 13133, 9090, 9093, 3100, 3200, 3000)
COLLECTOR = "http://127.0.0.1:4000"
PROMETHEUS = "http://127.0.0.1:9090"
LOKI = "http://127.0.0.1:3100"
TEMPO = "http://127.0.0.1:3200"
GRAFANA = "http://127.0.0.1:3000"
SOURCE_APP = "stack-docker-test"


def docker_unavailable() -> str | None:
    """Why the stack cannot run here, or None when a Docker engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    if info.returncode != 0:
        return "no Docker engine answers (`docker info` failed)"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if compose.returncode != 0:
        return "the Docker Compose v2 plugin is missing (`docker compose version` failed)"
    busy = [p for p in PORTS if _port_busy(p)]
    if busy:
        return f"127.0.0.1 ports {busy} are in use (is the stack already up? `make down`)"
    return None


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def compose_stack(tmp: Path, files: list[str]) -> Iterator[str]:
    """The stack from these compose files under a compose project of its own (`down --volumes`
    at the end never touches the user's stack), set up as `make up` does it; yields the Grafana
    admin password."""
    from testcontainers.compose import DockerCompose

    password = uuid.uuid4().hex
    env_file = tmp / ".env"
    env_file.write_text(f"GF_ADMIN_PASSWORD={password}\n")
    # What `make up` runs first: generated passwords, Alertmanager's rendered config.
    init = [sys.executable, str(REPO / "scripts" / "init_env.py"), "--env", str(env_file)]
    subprocess.run(init, check=True, capture_output=True, timeout=60)
    previous = os.environ.get("COMPOSE_PROJECT_NAME")
    os.environ["COMPOSE_PROJECT_NAME"] = f"agentwatch-test-{uuid.uuid4().hex[:8]}"
    compose = DockerCompose(
        REPO, compose_file_name=files, env_file=str(env_file), build=True, wait=True
    )
    try:
        compose.start()
        yield password
    finally:
        compose.stop()
        if previous is None:
            os.environ.pop("COMPOSE_PROJECT_NAME", None)
        else:
            os.environ["COMPOSE_PROJECT_NAME"] = previous


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stack; yields the Grafana admin password."""
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    with compose_stack(tmp_path_factory.mktemp("stack"), ["docker-compose.monitoring.yml"]) as pw:
        yield pw


def send_session(tmp: Path) -> str:
    """One Claude Code session sent through hooks/agentwatch_hook.py, flushed synchronously."""
    sid = str(uuid.uuid4())
    transcript = tmp / "transcript.jsonl"
    transcript.write_text("")
    env = {
        "PATH": os.environ["PATH"],
        "AGENTWATCH_URL": COLLECTOR,
        "AGENTWATCH_SPOOL_DIR": str(tmp / "spool"),
        "AGENTWATCH_SOURCE_APP": SOURCE_APP,
    }
    common = {"session_id": sid, "transcript_path": str(transcript), "cwd": str(tmp)}
    tool = {"tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_use_id": "toolu_stack1"}
    events: list[dict[str, Any]] = [
        {"hook_event_name": "SessionStart", "source": "startup", "model": "claude-sonnet-4-5"},
        {"hook_event_name": "UserPromptSubmit", "prompt": "list the files"},
        {"hook_event_name": "PreToolUse", **tool},
        {"hook_event_name": "PostToolUse", **tool, "tool_response": {"stdout": "a b"}},
        {"hook_event_name": "Stop", "stop_hook_active": False},
        {"hook_event_name": "SessionEnd", "reason": "other"},
    ]
    hook = ["python3", "-S", str(REPO / "hooks" / "agentwatch_hook.py")]
    for event in events:
        subprocess.run(hook, input=json.dumps({**common, **event}), text=True, env=env, timeout=30)
    flush = subprocess.run([*hook, "--flush"], env=env, capture_output=True, timeout=60)
    assert flush.returncode == 0
    return sid


@pytest.fixture(scope="module")
def session_id(stack: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return send_session(tmp_path_factory.mktemp("hook"))


def test_the_session_reaches_prometheus(session_id: str) -> None:
    query = f'sum(agentwatch_events_total{{job="agentwatch-collector",source_app="{SOURCE_APP}"}})'

    def six_events() -> bool:
        r = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=5).json()
        result = r["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) >= 6

    wait_until(six_events, 90, "the session's events in Prometheus")


def loki_streams(session_id: str) -> list[dict[str, Any]]:
    now_ns = time.time_ns()
    response = httpx.get(
        f"{LOKI}/loki/api/v1/query_range",
        params={
            "query": f'{{service_name="agentwatch"}} | gen_ai_conversation_id="{session_id}"',
            "start": str(now_ns - 3600 * 10**9),
            "end": str(now_ns + 60 * 10**9),
            "limit": "100",
        },
        timeout=10,
    )
    response.raise_for_status()
    streams: list[dict[str, Any]] = response.json()["data"]["result"]
    return streams


def test_the_session_reaches_loki_and_its_trace_reaches_tempo(session_id: str) -> None:
    wait_until(lambda: bool(loki_streams(session_id)), 120, "the session's logs in Loki")
    streams = loki_streams(session_id)
    trace_ids = {s["stream"]["trace_id"] for s in streams if s["stream"].get("trace_id")}
    assert trace_ids, f"no trace_id on the session's log records: {streams[0]['stream']}"

    def trace_found() -> bool:
        return all(
            httpx.get(f"{TEMPO}/api/traces/{t}", timeout=10).status_code == 200 for t in trace_ids
        )

    wait_until(trace_found, 120, "the session's trace in Tempo")


def test_grafana_serves_the_dashboards_and_reaches_its_datasources(stack: str) -> None:
    auth = ("admin", stack)
    found = httpx.get(
        f"{GRAFANA}/api/search", params={"type": "dash-db", "folderUIDs": "agentwatch"}, auth=auth
    ).json()
    expected = {p.stem for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    assert expected and {d["uid"] for d in found} >= expected
    for uid in ("prometheus", "loki", "tempo"):
        health = httpx.get(f"{GRAFANA}/api/datasources/uid/{uid}/health", auth=auth, timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "OK", (uid, health.text)
