"""Token usage read from transcripts: per model and type, streamed messages once, offsets kept."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import REPO
from tests.test_hook import dead_env, fixtures, run_all, spooled

TRANSCRIPTS = REPO / "tests" / "fixtures" / "hooks" / "transcripts"
SONNET, HAIKU = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"


@pytest.fixture
def read_usage() -> Iterator[Any]:
    """The hook's own transcript reader (hooks/ is not a package: import it as the hook does)."""
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        from awhook.transcript import read_usage

        yield read_usage
    finally:
        sys.path.remove(str(REPO / "hooks"))


def assistant(mid: str, rid: str, model: str, inp: int, out: int, cr: int = 0, cc: int = 0) -> str:
    usage = {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": cr,
        "cache_creation_input_tokens": cc,
    }
    line = {"type": "assistant", "requestId": rid, "message": {"id": mid, "role": "assistant"}}
    line["message"].update(model=model, usage=usage, content=[{"type": "text", "text": "x"}])
    return json.dumps(line) + "\n"


def test_usage_is_summed_per_model_and_type(tmp_path: Path, read_usage: Any) -> None:
    path = tmp_path / "main.jsonl"
    path.write_bytes((TRANSCRIPTS / "main.jsonl").read_bytes())
    assert read_usage(str(path), str(tmp_path / "state")) == {
        SONNET: {"input": 30, "output": 100, "cache_read": 2200, "cache_creation": 200},
        HAIKU: {"input": 300, "output": 12, "cache_read": 0, "cache_creation": 0},
    }


def test_streamed_copies_of_a_message_count_once(tmp_path: Path, read_usage: Any) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(assistant("m1", "r1", SONNET, 5, 1) + assistant("m1", "r1", SONNET, 5, 9) * 3)
    assert read_usage(str(path), str(tmp_path))[SONNET] == {
        "input": 5,
        "output": 9,
        "cache_read": 0,
        "cache_creation": 0,
    }
    # A copy written after the first Stop is still the same message.
    with path.open("a") as f:
        f.write(assistant("m1", "r1", SONNET, 5, 9))
    assert read_usage(str(path), str(tmp_path)) is None


def test_offsets_are_respected_across_stops(tmp_path: Path, read_usage: Any) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(assistant("m1", "r1", SONNET, 10, 1))
    assert read_usage(str(path), str(tmp_path))[SONNET]["input"] == 10
    assert read_usage(str(path), str(tmp_path)) is None  # nothing new
    with path.open("a") as f:
        f.write(assistant("m2", "r2", SONNET, 7, 2))
        f.write(assistant("m3", "r3", HAIKU, 3, 3)[:-20])  # still being written
    assert read_usage(str(path), str(tmp_path)) == {
        SONNET: {"input": 7, "output": 2, "cache_read": 0, "cache_creation": 0}
    }
    with path.open("a") as f:
        f.write(assistant("m3", "r3", HAIKU, 3, 3)[-20:])  # the line completes
    assert read_usage(str(path), str(tmp_path)) == {
        HAIKU: {"input": 3, "output": 3, "cache_read": 0, "cache_creation": 0}
    }


def test_a_truncated_transcript_is_read_again_from_the_start(
    tmp_path: Path, read_usage: Any
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(assistant("m1", "r1", SONNET, 10, 1) * 2 + assistant("m2", "r2", SONNET, 1, 1))
    read_usage(str(path), str(tmp_path))
    path.write_text(assistant("m9", "r9", HAIKU, 4, 4))
    assert read_usage(str(path), str(tmp_path))[HAIKU]["input"] == 4


def test_missing_or_unreadable_transcript_gives_no_usage(tmp_path: Path, read_usage: Any) -> None:
    assert read_usage(str(tmp_path / "nope.jsonl"), str(tmp_path)) is None
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b'{"usage": not json\n\xff\xfe\n[1,2]\n')
    assert read_usage(str(garbage), str(tmp_path)) is None


def test_stop_and_subagent_stop_envelopes_carry_usage(tmp_path: Path) -> None:
    events = {p["hook_event_name"]: p for p in fixtures(tmp_path)}
    env = dead_env(tmp_path)
    run_all([events["SubagentStop"], events["Stop"], events["Stop"]], env)
    sub, stop, stop_again = spooled(tmp_path / "spool")
    assert sub["usage"] == {
        HAIKU: {"input": 120, "output": 55, "cache_read": 900, "cache_creation": 100}
    }
    assert stop["usage"][SONNET]["cache_read"] == 2200
    assert stop_again["usage"] is None  # the second Stop finds nothing new


def test_stop_with_a_missing_transcript_still_sends_the_event(tmp_path: Path) -> None:
    stop = next(p for p in fixtures(tmp_path) if p["hook_event_name"] == "Stop")
    stop["transcript_path"] = str(tmp_path / "gone.jsonl")
    run_all([stop], dead_env(tmp_path))
    (event,) = spooled(tmp_path / "spool")
    assert event["hook_event"] == "Stop" and event["usage"] is None


def test_a_message_read_while_streaming_gets_its_final_usage_later(
    tmp_path: Path, read_usage: Any
) -> None:
    """Stop can run before the turn's last line is written: the next read (a prompt, SessionEnd)
    counts only what the message grew by, never the message twice."""
    path = tmp_path / "t.jsonl"
    path.write_text(assistant("m1", "r1", SONNET, 40, 2))
    state = str(tmp_path / "state")
    assert read_usage(str(path), state)[SONNET]["output"] == 2
    with path.open("a") as f:
        f.write(assistant("m1", "r1", SONNET, 40, 90) + assistant("m2", "r2", SONNET, 7, 1))
    assert read_usage(str(path), state)[SONNET] == {
        "input": 7,
        "output": 88 + 1,
        "cache_read": 0,
        "cache_creation": 0,
    }
    assert read_usage(str(path), state) is None


def test_claude_codes_own_totals_come_from_the_last_cost_state(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        from awhook.transcript import read_cost_state
    finally:
        sys.path.remove(str(REPO / "hooks"))
    path = tmp_path / "t.jsonl"
    assert read_cost_state(str(path)) is None
    models = {SONNET: {"inputTokens": 5, "outputTokens": 6, "cacheReadInputTokens": 7}}
    lines = [
        {"type": "cost-state", "totalCostUSD": 0.1, "modelUsage": models},
        {"type": "user", "message": {"role": "user", "content": "again"}},
        {
            "type": "cost-state",
            "totalCostUSD": 0.3,
            "modelUsage": {**models, HAIKU: {"costUSD": 0.2}},
        },
    ]
    path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    assert read_cost_state(str(path)) == {
        "total_cost_usd": 0.3,
        "models": {
            SONNET: {
                "input": 5,
                "output": 6,
                "cache_read": 7,
                "cache_creation": 0,
                "cost_usd": 0.0,
            },
            HAIKU: {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0, "cost_usd": 0.2},
        },
    }
