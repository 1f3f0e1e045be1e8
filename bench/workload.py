"""Realistic hook envelopes for the benchmarks: tool pairs, prompts, subagents, usage."""

from __future__ import annotations

import random
import uuid
from typing import Any

TOOLS = ["Bash", "Read", "Edit", "Grep", "Glob", "Write", "WebFetch", "Task"]
_OUTPUT = "\n".join(f"src/module_{i}.py:{i * 7}: def handler_{i}(request): ..." for i in range(20))


def envelope(
    session: str, hook: str, ts: int, app: str, payload: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """One hook-script envelope of a session, its payload as Claude Code would give it."""
    body = {"session_id": session, "hook_event_name": hook, "cwd": f"/home/dev/{app}"}
    return {
        "event_id": str(uuid.uuid4()),
        "ts": ts,
        "source_app": app,
        "machine_id": "bench-machine",
        "session_id": session,
        "hook_event": hook,
        "payload": {**body, **payload},
        **extra,
    }


def session_events(
    session: str, n: int, start_ms: int, app: str = "bench-app"
) -> list[dict[str, Any]]:
    """n envelopes of one session: a prompt, then tool call pairs, a subagent, a Stop with usage."""
    rnd = random.Random(session)
    out: list[dict[str, Any]] = []
    ts = start_ms

    def env(hook: str, payload: dict[str, Any], **extra: Any) -> None:
        nonlocal ts
        ts += rnd.randint(50, 4000)
        transcript = {"transcript_path": f"/home/dev/.claude/projects/{app}/{session}.jsonl"}
        out.append(envelope(session, hook, ts, app, {**transcript, **payload}, **extra))

    env("SessionStart", {"source": "startup", "model": "claude-sonnet-4-5"})
    while len(out) < n - 2:
        if rnd.random() < 0.08 or len(out) == n - 3:  # a pair would not fit: a prompt does
            env("UserPromptSubmit", {"prompt": "Refactor the request handlers and run the tests"})
            continue
        tool = rnd.choice(TOOLS)
        tid = "toolu_" + uuid.uuid4().hex[:24]
        tool_input = {
            "command": f"pytest -q tests/test_{rnd.randint(1, 40)}.py",
            "description": "run tests",
        }
        env(
            "PreToolUse",
            {"tool_name": tool, "tool_input": tool_input, "tool_use_id": tid},
            tool_name=tool,
            tool_use_id=tid,
        )
        failed = rnd.random() < 0.05
        hook = "PostToolUseFailure" if failed else "PostToolUse"
        result = (
            {"error": "exit status 1"}
            if failed
            else {"tool_response": {"stdout": _OUTPUT[: rnd.randint(200, 1200)]}}
        )
        env(
            hook,
            {"tool_name": tool, "tool_input": tool_input, "tool_use_id": tid, **result},
            tool_name=tool,
            tool_use_id=tid,
        )
    usage = {
        "claude-sonnet-4-5": {
            "input": 1200,
            "output": 800,
            "cache_read": 50_000,
            "cache_creation": 2000,
        }
    }
    env("Stop", {"stop_hook_active": False}, usage=usage)
    env("SessionEnd", {"reason": "prompt_input_exit"})
    return out


def events(total: int, per_session: int = 200, start_ms: int | None = None) -> list[dict[str, Any]]:
    import time

    start = start_ms or int(time.time() * 1000) - 3_600_000
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < total:
        out += session_events(f"bench-{uuid.uuid4().hex[:12]}-{i}", per_session, start)
        i += 1
    return out[:total]
