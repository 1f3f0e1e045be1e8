"""The recorded demo session and its replay through the real hook into a real collector."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from demo.replay import END_BEFORE_NOW_S, HOOK, RECORDING, load, main, prepare, replay
from tests.support.procs import start_collector, wait_until

RECORDS = load(RECORDING)
INPUTS = [r["input"] for r in RECORDS]


def events(name: str) -> list[dict[str, Any]]:
    return [i for i in INPUTS if i["hook_event_name"] == name]


def test_recording_is_a_realistic_multi_agent_session() -> None:
    assert len(events("UserPromptSubmit")) >= 3
    assert len({i["session_id"] for i in INPUTS}) == 2
    assert {i["cwd"].rsplit("/", 1)[1] for i in INPUTS} == {"shopfront", "billing-api"}
    # Subagents started by Task calls with a subagent_type, running at the same time.
    tasks = [i for i in events("PreToolUse") if i["tool_name"] in ("Task", "Agent")]
    assert len(tasks) >= 2 and all(t["tool_input"]["subagent_type"] for t in tasks)
    starts, stops = events("SubagentStart"), events("SubagentStop")
    assert 2 <= len(starts) == len(stops) <= 3
    assert all(i["agent_id"] and i["agent_type"] for i in starts + stops)
    first_stop = min(r["at"] for r in RECORDS if r["input"]["hook_event_name"] == "SubagentStop")
    assert all(
        r["at"] < first_stop for r in RECORDS if r["input"]["hook_event_name"] == "SubagentStart"
    )
    # Failures, an interrupted (blocked) call, compaction, a stop failure, a session end.
    failures = events("PostToolUseFailure")
    assert len(failures) >= 3 and any(f["is_interrupt"] for f in failures)
    assert events("PreCompact") and events("PostCompact")
    assert events("StopFailure") and events("SessionEnd")


def test_recording_has_a_tool_loop_and_an_unanswered_permission_prompt() -> None:
    run, longest, last = 0, 0, None
    for i in events("PreToolUse"):
        key = (i["session_id"], i.get("agent_id"), i["tool_name"], json.dumps(i["tool_input"]))
        run = run + 1 if key == last else 1
        longest, last = max(longest, run), key
    assert longest >= 6
    main_session = [i for i in INPUTS if i["session_id"] == INPUTS[0]["session_id"]]
    assert [i["hook_event_name"] for i in main_session[-2:]] == [
        "PermissionRequest",
        "Notification",
    ]
    assert main_session[-1]["notification_type"] == "permission_prompt"


def test_recording_carries_token_usage_in_transcripts() -> None:
    with_usage = [r for r in RECORDS if r["input"]["hook_event_name"] in ("Stop", "SubagentStop")]
    assert with_usage and all(r.get("transcript") for r in with_usage)
    for r in with_usage:
        for line in r["transcript"]:
            msg = line["message"]
            assert line["requestId"] and msg["id"] and msg["model"]
            assert set(msg["usage"]) >= {
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            }
    ids = Counter(line["message"]["id"] for r in with_usage for line in r["transcript"])
    assert any(n > 1 for n in ids.values()), "streamed messages repeat their id"


def test_prepare_gives_fresh_ids_local_transcripts_and_last_hour_timestamps(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    first = prepare(RECORDS, tmp_path, now_ms)
    second = prepare(RECORDS, tmp_path, now_ms)
    assert {e[1]["session_id"] for e in first}.isdisjoint({e[1]["session_id"] for e in second})
    assert {e[1]["session_id"] for e in first}.isdisjoint({i["session_id"] for i in INPUTS})
    stamps = [ts for ts, _, _ in first]
    assert stamps == sorted(stamps)
    assert now_ms - 3600_000 < stamps[0] and stamps[-1] == now_ms - int(END_BEFORE_NOW_S * 1000)
    for _, hook_input, appends in first:
        assert Path(hook_input["transcript_path"]).parent == tmp_path
        for path, lines in appends:
            assert path.is_relative_to(tmp_path)
            if hook_input["hook_event_name"] == "SubagentStop":
                assert path == Path(hook_input["agent_transcript_path"])
                assert path.name == f"agent-{hook_input['agent_id']}.jsonl"
                assert all(line["agentId"] == hook_input["agent_id"] for line in lines)
    # A tool call's Pre and Post keep sharing one (new) tool_use_id.
    pre = {e[1]["tool_use_id"] for e in first if e[1]["hook_event_name"] == "PreToolUse"}
    post = {e[1]["tool_use_id"] for e in first if e[1]["hook_event_name"].startswith("PostToolUse")}
    assert post <= pre


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v for (n, lab), v in metrics.items() if n == name and set(labels.items()) <= set(lab)
    )


@pytest.mark.e2e
def test_replay_through_the_real_hook_fills_the_collector(tmp_path: Path) -> None:
    assert HOOK.exists(), "hooks/agentwatch_hook.py is missing"
    collector = start_collector(tmp_path)
    try:
        counts = replay(collector.url, quiet=True)
        assert counts.pop("__undelivered_spool_files") == 0, collector.logs()
        assert sum(counts.values()) == len(RECORDS)
        wait_until(
            lambda: total(samples(collector.url), "agentwatch_events_total") == len(RECORDS),
            30,
            "every replayed event counted",
        )
        m = samples(collector.url)
        finished = len(events("PostToolUse")) + len(events("PostToolUseFailure"))
        assert total(m, "agentwatch_tool_calls_total") == finished
        assert (
            total(m, "agentwatch_tool_calls_total", outcome="error")
            == len(events("PostToolUseFailure")) - 1
        )
        assert total(m, "agentwatch_tool_calls_total", outcome="blocked") == 1
        assert total(m, "agentwatch_prompts_total") == len(events("UserPromptSubmit"))
        assert total(m, "agentwatch_subagents_total") == len(events("SubagentStart"))
        assert total(m, "agentwatch_agent_loops_total", tool="Bash") == 1
        assert total(m, "agentwatch_events_total", source_app="billing-api") > 0
        assert total(m, "agentwatch_tokens_total", type="cache_read") > 0
        assert total(m, "agentwatch_cost_usd_total") > 0
        assert total(m, "agentwatch_session_duration_seconds_count") == 1  # billing-api ended
    finally:
        collector.stop()


def test_main_explains_a_missing_collector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--quiet"]) == 1
    assert "make dev" in capsys.readouterr().err
