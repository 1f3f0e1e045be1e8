"""The real hook script, run as Claude Code runs it, against live, dead, hanging and failing collectors."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.db import PAYLOAD_TEXT, connect
from tests.support.procs import REPO, free_port, start_collector, wait_until

HOOK = REPO / "hooks" / "agentwatch_hook.py"
FIXTURES = REPO / "tests" / "fixtures" / "hooks"
# AGENTWATCH_REPLAY_TS_MS = BASE_TS + run number tags each run; recent, or retention prunes it.
BASE_TS = time.time_ns() // 1_000_000 - 3_600_000


def fixtures(tmp: Path) -> list[dict[str, Any]]:
    """Every hook fixture, with transcript paths pointing at copies of the fixture transcripts."""
    transcripts = tmp / "transcripts"
    transcripts.mkdir(exist_ok=True)
    for src in (FIXTURES / "transcripts").iterdir():
        (transcripts / src.name).write_bytes(src.read_bytes())
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        payload = json.loads(path.read_text())
        payload["transcript_path"] = str(transcripts / "main.jsonl")
        if "agent_transcript_path" in payload:
            agent = Path(payload["agent_transcript_path"]).name
            payload["agent_transcript_path"] = str(transcripts / agent)
        out.append(payload)
    return out


def hook_env(spool: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTWATCH_")}
    env.update(AGENTWATCH_URL=url, AGENTWATCH_SPOOL_DIR=str(spool), **extra)
    return env


def run_hook(
    stdin: bytes, env: Mapping[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """The hook exactly as Claude Code runs it: `python3 -S hook` with the JSON on stdin."""
    return subprocess.run(
        [sys.executable, "-S", str(HOOK), *args],
        input=stdin,
        env=dict(env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def run_all(payloads: list[dict[str, Any]], env: dict[str, str], first: int = 0) -> None:
    for i, payload in enumerate(payloads, start=first):
        proc = run_hook(
            json.dumps(payload).encode(), {**env, "AGENTWATCH_REPLAY_TS_MS": str(BASE_TS + i)}
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == b""


def spooled(spool: Path) -> list[dict[str, Any]]:
    files = sorted((spool / "events").glob("*.json"))
    return [json.loads(f.read_text()) for f in files]


def stored(db: Path) -> list[tuple[Any, ...]]:
    """(event_id, ts, hook_event, agent_id, parent_agent_id, usage, payload) read-only."""
    if not db.exists():
        return []
    conn = connect(db)
    try:
        return conn.execute(
            "SELECT aw_event_id(event_id), ts, hook_event, coalesce(agent_id, session_id),"
            f" parent_agent_id, usage, {PAYLOAD_TEXT} FROM events ORDER BY ts"
        ).fetchall()
    finally:
        conn.close()


def assert_stored_once(db: Path, count: int, first: int = 0) -> list[tuple[Any, ...]]:
    rows = stored(db)
    tags = [row[1] - BASE_TS for row in rows]
    assert sorted(tags) == list(range(first, first + count)), "lost or duplicated events"
    return rows


@contextmanager
def http_server(status: int) -> Iterator[str]:
    """A tiny HTTP server that answers every request with `status`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"detail":"test server"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def hanging_server() -> Iterator[str]:
    """Accepts connections (the kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.mark.e2e
def test_every_event_type_reaches_a_live_collector(tmp_path: Path) -> None:
    payloads = fixtures(tmp_path)
    collector = start_collector(tmp_path)
    try:
        env = hook_env(tmp_path / "spool", collector.url)
        run_all(payloads, env)
        # No --flush: the detached flusher delivers on its own.
        db = tmp_path / "agentwatch.db"
        wait_until(lambda: len(stored(db)) >= len(payloads), 30, "events in the store")
        rows = assert_stored_once(db, len(payloads))
    finally:
        collector.stop()
    by_event = [(r[2], r[3], r[4]) for r in rows]
    session = payloads[0]["session_id"]
    assert [e for e, _, _ in by_event] == [p["hook_event_name"] for p in payloads]
    assert ("SubagentStart", "a3f9c2e1b7d4", session) in by_event
    assert ("PostToolUseFailure", session, None) in by_event
    # The main transcript is read at every event that can close a turn (here first at
    # UserPromptSubmit), the subagent's at its stop; every message counts once.
    usage = [json.loads(r[5]) for r in rows if r[5]]
    assert sum(u.get("claude-sonnet-4-5-20250929", {}).get("output", 0) for u in usage) == 100
    sub = [json.loads(r[5]) for r in rows if r[2] == "SubagentStop"]
    assert sub[0]["claude-haiku-4-5-20251001"]["cache_read"] == 900
    assert not list((tmp_path / "spool" / "events").glob("*.json"))


@pytest.mark.e2e
@pytest.mark.parametrize("failure", ["dead port", "hanging", "http 500"])
def test_events_wait_in_the_spool_until_the_collector_is_back(tmp_path: Path, failure: str) -> None:
    payloads = fixtures(tmp_path)
    spool = tmp_path / "spool"
    with _failing_collector(failure) as url:
        run_all(payloads, hook_env(spool, url))
        assert len(spooled(spool)) == len(payloads)
        assert (spool / "state" / "backoff.json").exists() or failure == "hanging"
    collector = start_collector(tmp_path)
    try:
        proc = run_hook(b"", hook_env(spool, collector.url), "--flush")
        assert (proc.returncode, proc.stdout) == (0, b"")
        assert_stored_once(tmp_path / "agentwatch.db", len(payloads))
    finally:
        collector.stop()
    assert spooled(spool) == []
    assert not (spool / "state" / "backoff.json").exists()


@contextmanager
def _failing_collector(failure: str) -> Iterator[str]:
    if failure == "dead port":
        yield f"http://127.0.0.1:{free_port()}"
    elif failure == "hanging":
        with hanging_server() as url:
            yield url
    else:
        with http_server(500) as url:
            yield url


@pytest.mark.e2e
def test_token_and_hmac_signature_are_sent(tmp_path: Path) -> None:
    secrets = {"AGENTWATCH_TOKEN": "t0ken-for-tests", "AGENTWATCH_HMAC_SECRET": "hmac-for-tests"}
    spool = tmp_path / "spool"
    payload = fixtures(tmp_path)[0]
    collector = start_collector(tmp_path, env=secrets)
    try:
        wrong = hook_env(spool, collector.url, AGENTWATCH_TOKEN="wrong", AGENTWATCH_HMAC_SECRET="x")
        run_all([payload], wrong)
        run_hook(b"", wrong, "--flush")
        # 401 is kept for a retry (the user can fix the token), never dropped.
        assert len(spooled(spool)) == 1
        run_hook(b"", hook_env(spool, collector.url, **secrets), "--flush")
        assert_stored_once(tmp_path / "agentwatch.db", 1)
    finally:
        collector.stop()


def test_a_permanently_rejected_event_is_dropped_and_logged(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with http_server(422) as url:
        env = hook_env(spool, url)
        run_all(fixtures(tmp_path)[:3], env)
        run_hook(b"", env, "--flush")
    assert spooled(spool) == []
    assert "dropping" in (spool / "hook.log").read_text()


def dead_env(tmp: Path, **extra: str) -> dict[str, str]:
    return hook_env(tmp / "spool", f"http://127.0.0.1:{free_port()}", **extra)


@pytest.mark.parametrize(
    "stdin", [b"", b"not json", b"[1, 2]", b'{"session_id": ', b"\xff\xfe\x00garbage"]
)
def test_bad_input_exits_0_silently_and_spools_nothing(tmp_path: Path, stdin: bytes) -> None:
    proc = run_hook(stdin, dead_env(tmp_path))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert spooled(tmp_path / "spool") == []
    assert "ignoring hook input" in (tmp_path / "spool" / "hook.log").read_text()


def test_unwritable_spool_still_exits_0(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = hook_env(blocker / "spool", "http://127.0.0.1:9")
    proc = run_hook(json.dumps(fixtures(tmp_path)[0]).encode(), env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_envelope_fields_for_main_agent_and_subagent(tmp_path: Path) -> None:
    payloads = {p["hook_event_name"] + str(p.get("agent_id", "")): p for p in fixtures(tmp_path)}
    env = dead_env(tmp_path, AGENTWATCH_SOURCE_APP="shop")
    run_all([payloads["PreToolUse"], payloads["PreToolUsea3f9c2e1b7d4"]], env)
    main, sub = spooled(tmp_path / "spool")
    session = main["session_id"]
    assert main["agent_id"] == session and main["parent_agent_id"] is None
    assert (sub["agent_id"], sub["parent_agent_id"], sub["agent_type"]) == (
        "a3f9c2e1b7d4",
        session,
        "Explore",
    )
    assert main["source_app"] == "shop" and main["ts"] == BASE_TS
    assert main["tool_name"] == "Bash" and main["tool_use_id"] == "toolu_01E5"
    assert main["machine_id"] == sub["machine_id"] != socket.gethostname()
    assert len({main["event_id"], sub["event_id"]}) == 2
    assert main["usage"] is None


def test_source_app_defaults_to_the_basename_of_cwd(tmp_path: Path) -> None:
    run_all(fixtures(tmp_path)[:1], dead_env(tmp_path))
    assert spooled(tmp_path / "spool")[0]["source_app"] == "shop-api"


def test_secrets_never_reach_the_spool(tmp_path: Path) -> None:
    payloads = [p for p in fixtures(tmp_path) if "secret" in json.dumps(p) or "s3cr3t" in str(p)]
    payloads += [p for p in fixtures(tmp_path) if "sk-ant-" in json.dumps(p)]
    run_all(payloads, dead_env(tmp_path))
    text = "".join(f.read_text() for f in (tmp_path / "spool" / "events").iterdir())
    assert "s3cr3t-pw" not in text and "sk-ant-api03" not in text
    assert "[REDACTED" in text
    assert "db.internal:5432" in text  # the rest of the URL is kept


def test_spool_is_bounded_and_reports_what_it_dropped(tmp_path: Path) -> None:
    env = dead_env(tmp_path, AGENTWATCH_SPOOL_MAX_EVENTS="3")
    run_all(fixtures(tmp_path)[:5], env)
    events = spooled(tmp_path / "spool")
    assert [e["ts"] - BASE_TS for e in events] == [2, 3, 4]  # oldest dropped first
    assert events[-1]["spool_dropped"] == 1
    assert "spool_dropped" not in events[0]


def _ignores(pid: int, sig: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_sigterm_while_the_hook_runs_does_not_lose_the_event(tmp_path: Path) -> None:
    """Claude Code sends SIGTERM to hooks still running when it exits: the hook finishes its
    spool write first. (The SIGTERM arrives while the hook waits for its stdin.)"""
    spool = tmp_path / "spool"
    env = hook_env(spool, "http://127.0.0.1:9")  # nothing listens: the event stays spooled
    proc = subprocess.Popen(
        [sys.executable, "-S", str(HOOK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    wait_until(lambda: _ignores(proc.pid, 15), 10, "the hook to ignore SIGTERM")
    proc.terminate()
    payload = fixtures(tmp_path)[-1]  # SessionEnd
    out, err = proc.communicate(json.dumps(payload).encode(), timeout=30)
    assert (proc.returncode, out, err) == (0, b"", b"")
    assert [e["hook_event"] for e in spooled(spool)] == ["SessionEnd"]


def test_session_start_names_claude_codes_own_user(tmp_path: Path) -> None:
    """The hook reads Claude Code's userID (its telemetry's user.id) once, at SessionStart, so a
    session's tokens and cost belong to that user whichever source counts them."""
    user = "ab12" * 16
    config = tmp_path / "claude-config"
    config.mkdir()
    (config / ".claude.json").write_text(json.dumps({"numStartups": 3, "userID": user}))
    spool = tmp_path / "spool"
    env = hook_env(spool, "http://127.0.0.1:9", CLAUDE_CONFIG_DIR=str(config))
    start, prompt = fixtures(tmp_path)[:2]
    run_all([start, prompt], env)
    assert [e.get("user") for e in spooled(spool)] == [user, user]  # its start, each prompt
    (config / ".claude.json").write_text('{"userID": "not hex; rm -rf"}')  # not an id: none
    run_all([start], env)
    assert "user" not in spooled(spool)[-1]
