"""Ingest routes against the app factory: envelopes, raw hooks, duplicates, bad input, auth."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from collector.auth import sign
from tests.conftest import BACKENDS, Harness, envelope
from tests.support.db import AGENT_TYPE, PAYLOAD_TEXT


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """These tests run on both stores (tests/conftest.py)."""
    return str(request.param)


def count(h: Harness) -> int:
    return int(h.rows("SELECT count(*) FROM events")[0][0])


def test_single_envelope_is_stored_and_acknowledged(harness: Harness) -> None:
    env = envelope()
    r = harness.post("/v1/events", env)
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicate": 0, "rejected": []}
    row = harness.rows(
        "SELECT aw_event_id(event_id), session_id, coalesce(agent_id, session_id), parent_agent_id,"
        f" {AGENT_TYPE}, hook_event, tool_name, source_app FROM events"
    )
    assert row == [
        (
            env["event_id"],
            env["session_id"],
            env["session_id"],
            None,
            "main",
            "PreToolUse",
            "Bash",
            "shop",
        )
    ]
    assert (
        harness.metric("agentwatch_events_total", hook_event="PreToolUse", source_app="shop") == 1
    )


def test_single_duplicate_answers_409_and_is_stored_once(harness: Harness) -> None:
    env = envelope()
    assert harness.post("/v1/events", env).status_code == 200
    r = harness.post("/v1/events", env)
    assert r.status_code == 409
    assert r.json()["duplicate"] == 1
    assert count(harness) == 1
    assert harness.metric("agentwatch_events_duplicate_total") == 1


def test_batch_reports_accepted_duplicate_and_rejected_with_index(harness: Harness) -> None:
    first = envelope()
    assert harness.post("/v1/events", first).status_code == 200
    again = envelope()
    batch = [envelope(), first, {"event_id": "x"}, again, again, envelope(ts="yesterday")]
    r = harness.post("/v1/events", batch)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2 and body["duplicate"] == 2
    assert [item["index"] for item in body["rejected"]] == [2, 5]
    assert "event_id" in body["rejected"][0]["reason"]
    assert "ts" in body["rejected"][1]["reason"]
    assert count(harness) == 3
    assert harness.metric("agentwatch_events_rejected_total", reason="invalid_event") == 2


def test_ndjson_batch_with_a_malformed_line(harness: Harness) -> None:
    lines = [orjson.dumps(envelope()), b"{not json", orjson.dumps(envelope())]
    r = harness.client.post(
        "/v1/events",
        content=b"\n".join(lines) + b"\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    assert r.json()["rejected"][0]["index"] == 1
    assert "malformed JSON" in r.json()["rejected"][0]["reason"]


def test_raw_hook_answers_204_with_empty_body(harness: Harness) -> None:
    hook = {
        "session_id": "s-raw",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/work/payments",
        "hook_event_name": "UserPromptSubmit",
        "prompt": "fix the build",
    }
    r = harness.post("/v1/hooks", hook)
    assert r.status_code == 204
    assert r.content == b""
    rows = harness.rows("SELECT source_app, hook_event, length(aw_event_id(event_id)) FROM events")
    assert rows == [("payments", "UserPromptSubmit", 36)]
    assert harness.metric("agentwatch_prompts_total", source_app="payments") == 1


def test_raw_hook_after_a_cd_keeps_its_sessions_project(harness: Harness) -> None:
    """An http hook's cwd follows the agent; the session's project came with its SessionStart
    (a command hook, which knows CLAUDE_PROJECT_DIR)."""
    start = envelope(session_id="s-cd", hook_event="SessionStart", source_app="payments")
    assert harness.post("/v1/events", start).status_code == 200
    hook = {"session_id": "s-cd", "cwd": "/tmp", "hook_event_name": "Stop"}
    assert harness.post("/v1/hooks", hook).status_code == 204
    assert harness.rows("SELECT DISTINCT source_app FROM events") == [("payments",)]


def test_unknown_future_hook_event_is_stored_as_is(harness: Harness) -> None:
    env = envelope(
        hook_event="TeleportAgent", payload={"hook_event_name": "TeleportAgent", "warp": 9}
    )
    assert harness.post("/v1/events", env).status_code == 200
    payload = orjson.loads(harness.rows(f"SELECT {PAYLOAD_TEXT} FROM events")[0][0])
    assert payload["warp"] == 9 and payload["hook_event_name"] == "TeleportAgent"


def test_subagent_fields(harness: Harness) -> None:
    env = envelope(
        session_id="s-main",
        hook_event="SubagentStart",
        payload={
            "hook_event_name": "SubagentStart",
            "agent_id": "agent-7",
            "agent_type": "Explore",
        },
    )
    del env["tool_name"], env["tool_use_id"]
    assert harness.post("/v1/events", env).status_code == 200
    assert harness.rows("SELECT agent_id, parent_agent_id, agent_type FROM events") == [
        ("agent-7", "s-main", "Explore")
    ]
    assert harness.metric("agentwatch_subagents_total", agent_type="Explore") == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason", "needle"),
    [
        (b"{nope", "application/json", 400, "malformed_json", "malformed JSON"),
        (b'"\xff"', "application/json", 400, "malformed_json", "UTF-8"),
        (b"[" * 1500 + b"]" * 1500, "application/json", 400, "malformed_json", "depth"),
        (b'{"n": 1e400}', "application/json", 400, "malformed_json", "infinity"),
        (b"42", "application/json", 422, "invalid_event", "array"),
        (b"{}", "text/plain", 415, "unsupported_media_type", "content type"),
        (b"{}", "application/json", 422, "invalid_event", "event_id"),
        (b"x" * 5000, "application/json", 413, "too_large", "larger than"),
    ],
)
def test_bad_input_gets_a_clear_error_and_nothing_is_stored(
    make_harness: Any, body: bytes, content_type: str, status: int, reason: str, needle: str
) -> None:
    h = make_harness(max_body_bytes=4096)
    r = h.client.post("/v1/events", content=body, headers={"content-type": content_type})
    assert r.status_code == status
    assert needle in r.json()["error"]
    assert h.metric("agentwatch_events_rejected_total", reason=reason) == 1
    assert count(h) == 0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"session_id": 5}, "session_id must be a string"),
        ({"ts": 10**20}, "ts is out of range"),
        ({"ts": 946_684_800_000}, "ts is out of range"),  # 2000-01-01
        ({"payload": [1]}, "payload must be a JSON object"),
        ({"usage": {"m": {"input": -1}}}, "non-negative"),
        ({"usage": {"m": {"bogus": 1}}}, "usage type"),
        ({"spool_dropped": "many"}, "spool_dropped"),
    ],
)
def test_wrong_types_are_422(harness: Harness, override: dict[str, Any], needle: str) -> None:
    r = harness.post("/v1/events", envelope(**override))
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]
    assert count(harness) == 0


def test_nul_bytes_and_huge_strings_are_stored_capped(make_harness: Any) -> None:
    h = make_harness(max_field_chars=1000)
    env = envelope(payload={"tool_response": {"stdout": "a\u0000b" + "x" * 50_000}})
    assert h.post("/v1/events", env).status_code == 200
    payload = orjson.loads(h.rows(f"SELECT {PAYLOAD_TEXT} FROM events")[0][0])
    stdout = payload["tool_response"]["stdout"]
    assert stdout.startswith("a\u0000b") and "truncated" in stdout and len(stdout) < 1100


def test_batch_over_the_limit_is_413(make_harness: Any) -> None:
    h = make_harness(max_batch_events=3)
    r = h.post("/v1/events", [envelope() for _ in range(4)])
    assert r.status_code == 413 and "at most 3" in r.json()["error"]
    assert count(h) == 0


def test_ten_thousand_events_in_one_batch(harness: Harness) -> None:
    batch = [envelope() for _ in range(10_000)]
    r = harness.post("/v1/events", batch)
    assert r.status_code == 200 and r.json()["accepted"] == 10_000
    assert count(harness) == 10_000


def test_capture_metadata_drops_prompt_and_tool_content(make_harness: Any) -> None:
    h = make_harness(capture="metadata")
    env = envelope(
        payload={"tool_input": {"command": "cat notes"}, "tool_response": "secret plans"}
    )
    assert h.post("/v1/events", env).status_code == 200
    payload = orjson.loads(h.rows(f"SELECT {PAYLOAD_TEXT} FROM events")[0][0])
    assert "tool_input" not in payload and "tool_response" not in payload
    assert payload["tool_name"] == "Bash"


def test_capture_metadata_keeps_only_an_allow_list(make_harness: Any) -> None:
    """Content in fields a list of content keys would miss (summaries, permission rules, error
    details, whatever a newer Claude Code adds) is dropped too; kinds and ids are kept."""
    h = make_harness(capture="metadata")
    texts = {
        "compact_summary": "we discussed the merger",
        "permission_suggestions": [{"type": "addRules", "rules": [{"ruleContent": "rm -rf"}]}],
        "error_details": "stack trace with /home/dev/plans",
        "last_assistant_message": "the plan is",
        "some_future_field": "more content",
    }
    events = [
        envelope(hook_event="PostCompact", payload={"hook_event_name": "PostCompact", **texts}),
        envelope(
            hook_event="StopFailure",
            payload={"hook_event_name": "StopFailure", "error": "rate_limit", **texts},
        ),
    ]
    assert h.post("/v1/events", events).status_code == 200
    rows = [orjson.loads(r[0]) for r in h.rows(f"SELECT {PAYLOAD_TEXT} FROM events ORDER BY seq")]
    for payload in rows:
        assert not set(texts) & set(payload), payload
        assert payload["session_id"] and payload["tool_use_id"]
    assert rows[1]["error"] == "rate_limit"  # StopFailure's error is a kind, not a text
    batch = {
        "hook_event_name": "PostToolBatch",
        "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_1", "tool_input": {"c": 1}}],
    }
    assert h.post("/v1/events", envelope(hook_event="PostToolBatch", payload=batch)).status_code
    last = orjson.loads(h.rows(f"SELECT {PAYLOAD_TEXT} FROM events ORDER BY seq DESC")[0][0])
    assert last["tool_calls"] == [{"tool_use_id": "toolu_1", "tool_name": "Bash"}]  # ids only


def test_secrets_are_redacted_before_storage(harness: Harness) -> None:
    key = "sk-ant-api03-" + "A" * 40
    env = envelope(payload={"tool_input": {"command": f"ANTHROPIC_API_KEY={key} claude -p hi"}})
    assert harness.post("/v1/events", env).status_code == 200
    stored = harness.rows(f"SELECT {PAYLOAD_TEXT} FROM events")[0][0]
    assert key not in stored and "[REDACTED:" in stored


class TestAuth:
    def test_token_required_when_set(self, make_harness: Any) -> None:
        h = make_harness(token="s3cret-token")
        env = envelope()
        assert h.post("/v1/events", env).status_code == 401
        assert h.post("/v1/events", env, authorization="Bearer wrong").status_code == 401
        assert (
            h.post("/v1/hooks", {"session_id": "s", "hook_event_name": "Stop"}).status_code == 401
        )
        assert count(h) == 0
        assert h.metric("agentwatch_events_rejected_total", reason="unauthorized") == 3
        assert h.post("/v1/events", env, authorization="Bearer s3cret-token").status_code == 200
        assert h.client.get("/healthz").status_code == 200
        assert h.client.get("/readyz").status_code == 200

    def test_metrics_auth_is_optional(self, make_harness: Any) -> None:
        open_metrics = make_harness(token="t0ken-abc")
        assert open_metrics.client.get("/metrics").status_code == 200
        closed = make_harness(token="t0ken-abc", metrics_auth=True)
        assert closed.client.get("/metrics").status_code == 401
        ok = closed.client.get("/metrics", headers={"authorization": "Bearer t0ken-abc"})
        assert ok.status_code == 200

    def test_hmac_signature_window_and_replay(self, make_harness: Any) -> None:
        h = make_harness(hmac_secret="hmac-key")
        body = orjson.dumps(envelope())
        now = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-agentwatch-timestamp": now,
            "x-agentwatch-signature": sign("hmac-key", now, body),
        }
        unsigned = h.client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert unsigned.status_code == 401
        assert h.client.post("/v1/events", content=body, headers=headers).status_code == 200
        replay = h.client.post("/v1/events", content=body, headers=headers)
        assert replay.status_code == 401 and "replay" in replay.json()["error"]
        old = str(int(time.time()) - 3600)
        stale = {
            **headers,
            "x-agentwatch-timestamp": old,
            "x-agentwatch-signature": sign("hmac-key", old, body),
        }
        assert "window" in h.client.post("/v1/events", content=body, headers=stale).json()["error"]
        tampered = {**headers, "x-agentwatch-signature": sign("hmac-key", now, body + b" ")}
        assert h.client.post("/v1/events", content=body, headers=tampered).status_code == 401
        assert count(h) == 1


def test_alertmanager_webhook_stores_and_counts(harness: Harness) -> None:
    notification = {
        "version": "4",
        "status": "firing",
        "receiver": "collector",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "AgentLoopDetected", "severity": "warning"},
                "annotations": {"summary": "Loop."},
                "startsAt": "2026-11-21T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "abc123",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "AgentwatchCollectorDown", "severity": "critical"},
                "annotations": {},
                "startsAt": "2026-11-21T09:00:00Z",
                "endsAt": "2026-11-21T09:05:00Z",
                "fingerprint": "def456",
            },
        ],
    }
    assert harness.post("/v1/alerts", notification).status_code == 200
    assert harness.post("/v1/alerts", notification).status_code == 200  # a retry: deduplicated
    assert count(harness) == 2
    firing = {"alertname": "AgentLoopDetected", "status": "firing"}
    assert harness.metric("agentwatch_alert_notifications_total", **firing) == 1
    resolved = {"alertname": "AgentwatchCollectorDown", "status": "resolved"}
    assert harness.metric("agentwatch_alert_notifications_total", **resolved) == 1
    assert harness.post("/v1/alerts", {"alerts": "no"}).status_code == 422


def test_health_routes(harness: Harness) -> None:
    assert harness.client.get("/healthz").json() == {"status": "ok"}
    ready = harness.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["relay"]["state"] == "disabled"
    text = harness.client.get("/metrics").text
    assert "agentwatch_build_info{version=" in text
    assert "agentwatch_ready 1.0" in text
    assert 'agentwatch_relay_state{state="disabled"} 1.0' in text
    assert "agentwatch_host_cpu_utilization_ratio" in text
    assert (
        'agentwatch_http_request_duration_seconds_count{method="GET",route="/readyz",status="200"}'
        in text
    )


def test_alert_webhook_takes_the_token_but_no_signature(make_harness: Any) -> None:
    h = make_harness(token="am-token-123", hmac_secret="hmac-key")
    note = {
        "alerts": [{"status": "firing", "labels": {"alertname": "Watchdog"}, "fingerprint": "f1"}]
    }
    assert h.post("/v1/alerts", note).status_code == 401
    assert h.post("/v1/alerts", note, authorization="Bearer am-token-123").status_code == 200
    # Hook ingest still needs the signature.
    r = h.post("/v1/events", envelope(), authorization="Bearer am-token-123")
    assert r.status_code == 401 and "Signature" in r.json()["error"]


def test_signatures_made_before_the_collector_started_are_refused(make_harness: Any) -> None:
    # Used signatures live in memory: one captured before a restart must not replay after it.
    h = make_harness(hmac_secret="hmac-key")
    body = orjson.dumps(envelope())
    before = str(int(time.time()) - 5)  # inside the window, but older than this collector
    headers = {
        "content-type": "application/json",
        "x-agentwatch-timestamp": before,
        "x-agentwatch-signature": sign("hmac-key", before, body),
    }
    r = h.client.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 401 and "before the collector started" in r.json()["error"]
    assert count(h) == 0
