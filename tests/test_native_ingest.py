"""Claude Code's own OpenTelemetry into the collector: POST /v1/logs and /v1/metrics (OTLP/HTTP,
protobuf or JSON, gzip or not) against the app factory, with bodies the real Claude Code 2.1.328
sent (tests/fixtures/otel/), and the real Claude Code sending to a real collector."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from prometheus_client.parser import text_string_to_metric_families

from collector.native.decode import decode
from collector.native.events import to_events
from collector.native.metrics import NativeMetrics
from collector.settings import Settings
from collector.store import StoreSaturated
from tests.conftest import BACKENDS, Harness, envelope
from tests.support.claude import Claude
from tests.support.db import PAYLOAD_TEXT
from tests.support.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.support.otlp_receiver import attrs_of
from tests.support.procs import start_collector, wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "otel"
# Both captured from the real Claude Code 2.1.328 (headless, one Bash call, two API requests):
LOGS_PB = FIXTURES / "logs.binpb"  # the raw protobuf body it POSTed to /v1/logs
LOGS_JSON = FIXTURES / "logs.json"  # another run's ExportLogsServiceRequest, as OTLP JSON
METRICS_PB = FIXTURES / "metrics.binpb"
METRICS_JSON = FIXTURES / "metrics.json"
PB, JSON = "application/x-protobuf", "application/json"
SECRET = "ghp_" + "Q7" * 18
NATIVE = ("api_request", "tool_result", "user_prompt")


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """These tests run on both stores (tests/conftest.py)."""
    return str(request.param)


# -- helpers ---------------------------------------------------------------------------------
def post(h: Harness, path: str, body: bytes, kind: str = PB, **headers: str) -> httpx.Response:
    return h.client.post(path, content=body, headers={"content-type": kind, **headers})


def fixture_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(body, attributes) of each log record of a captured request."""
    req = ExportLogsServiceRequest()
    if path.suffix == ".json":
        json_format.Parse(path.read_text(), req)
    else:
        req.ParseFromString(path.read_bytes())
    return [
        (lr.body.string_value, attrs_of(lr.attributes))
        for rl in req.resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
    ]


def timeline(h: Harness, session_id: str) -> list[dict[str, Any]]:
    r = h.client.get(f"/v1/sessions/{session_id}/events", params={"limit": 500})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def count(h: Harness) -> int:
    return int(h.rows("SELECT count(*) FROM events")[0][0])


def payloads(h: Harness) -> list[str]:
    return [str(p) for (p,) in h.rows(f"SELECT {PAYLOAD_TEXT} FROM events")]


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def record(
    name: str,
    session: str | None = "s-native-1",
    body: str | None = "",
    time_ns: int = 0,
    **attrs: Any,
) -> LogRecord:
    """A log record the way Claude Code writes one (keyword `x_y` is attribute `x.y` when the
    name is one of the dotted ones)."""
    dotted = {"event_timestamp": "event.timestamp", "event_sequence": "event.sequence"}
    dotted |= {"prompt_id": "prompt.id", "user_id": "user.id", "user_email": "user.email"}
    values: dict[str, Any] = {"event.name": name}
    if session is not None:
        values["session.id"] = session
    values |= {dotted.get(k, k): v for k, v in attrs.items()}
    lr = LogRecord(time_unix_nano=time_ns)
    if body is not None:
        lr.body.string_value = body or f"claude_code.{name}"
    lr.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in values.items())
    return lr


def logs(*records: LogRecord, version: str = "2.1.328") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    for key, value in (("service.name", "claude-code"), ("service.version", version)):
        rl.resource.attributes.add(key=key, value=_any(value))
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    sl.log_records.extend(records)
    return req


def iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@functools.cache
def bomb(inflated: int) -> bytes:
    """A gzip body of `inflated` zero bytes, made without holding them."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join(z.compress(chunk) for _ in range(inflated >> 20)) + z.flush()


# -- the real captures -------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "kind"), [(LOGS_PB, PB), (LOGS_JSON, JSON)])
def test_captured_claude_code_logs_become_events_of_their_session(
    harness: Harness, path: Path, kind: str
) -> None:
    records = fixture_records(path)
    (session,) = {a["session.id"] for _, a in records}
    r = post(harness, "/v1/logs", path.read_bytes(), kind)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == kind
    answer = ExportLogsServiceResponse()
    if kind == PB:
        answer.ParseFromString(r.content)
    else:
        json_format.Parse(r.text, answer)
    assert not answer.HasField("partial_success")

    events = timeline(harness, session)
    assert len(events) == len(records)  # every record, once
    by_sequence = {e["payload"]["event.sequence"]: e for e in events}
    checked = 0
    for body, a in records:
        e = by_sequence[a["event.sequence"]]
        assert e["hook_event"] == body == "claude_code." + a["event.name"]
        assert e["source"] == "otel" and e["session_id"] == session
        assert e["ts"] == iso_ms(a["event.timestamp"])
        assert e["source_app"] == "unknown"  # no hook told the collector its project
        assert e["machine_id"].startswith("otel-")
        assert e["payload"]["claude_code.version"] == "2.1.328"
        name = a["event.name"]
        if name not in NATIVE:
            continue
        checked += 1
        if name == "api_request":
            assert e["usage"] == {
                a["model"]: {
                    "input": int(a["input_tokens"]),
                    "output": int(a["output_tokens"]),
                    "cache_read": int(a["cache_read_tokens"]),
                    "cache_creation": int(a["cache_creation_tokens"]),
                }
            }
            assert float(e["payload"]["cost_usd"]) == float(a["cost_usd"])
        elif name == "tool_result":
            assert (e["tool_name"], e["tool_use_id"]) == (a["tool_name"], a["tool_use_id"])
            assert e["outcome"] == ("success" if a["success"] == "true" else "error")
        else:
            assert e["payload"]["prompt"] == a["prompt"]
    assert checked == 4  # two API requests, one tool result, one prompt

    # The session's tokens and cost are Claude Code's own figures.
    requests = [a for _, a in records if a["event.name"] == "api_request"]
    s = harness.client.get(f"/v1/sessions/{session}").json()
    assert s["cost_usd"] == round(sum(float(a["cost_usd"]) for a in requests), 6)
    assert s["cost_source"] == "exact"
    assert s["tokens"] == sum(
        int(a[k])
        for a in requests
        for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
    )
    assert harness.metric(
        "agentwatch_events_total", hook_event="claude_code.api_request", source_app="unknown"
    ) == len(requests)

    # A re-sent batch (an exporter's retry) stores nothing new, in either encoding.
    stored = count(harness)
    assert post(harness, "/v1/logs", path.read_bytes(), kind).status_code == 200
    other = PB if kind == JSON else JSON
    req = ExportLogsServiceRequest()
    if kind == JSON:
        json_format.Parse(path.read_text(), req)
        again = req.SerializeToString()
    else:
        req.ParseFromString(path.read_bytes())
        again = json_format.MessageToJson(req).encode()
    assert post(harness, "/v1/logs", again, other).status_code == 200
    assert count(harness) == stored
    assert harness.metric("agentwatch_events_duplicate_total") == 2 * len(records)
    assert harness.client.get(f"/v1/sessions/{session}").json()["cost_usd"] == s["cost_usd"]


def test_gzip_bodies_in_both_encodings(harness: Harness) -> None:
    for path, kind in ((LOGS_PB, PB), (LOGS_JSON, JSON)):
        r = post(
            harness,
            "/v1/logs",
            gzip.compress(path.read_bytes()),
            kind,
            **{"content-encoding": "gzip"},
        )
        assert r.status_code == 200, r.text
    sessions = {a["session.id"] for p in (LOGS_PB, LOGS_JSON) for _, a in fixture_records(p)}
    assert len(sessions) == 2
    assert count(harness) == len(fixture_records(LOGS_PB)) + len(fixture_records(LOGS_JSON))


def test_a_known_session_gives_its_project(harness: Harness) -> None:
    env = envelope(session_id="s-known-1", hook_event="SessionStart", source_app="shop")
    assert harness.post("/v1/events", env).status_code == 200
    body = logs(
        record("tool_result", "s-known-1", tool_name="Bash", tool_use_id="toolu_1", success="true"),
        record("tool_result", "s-new-1", tool_name="Bash", tool_use_id="toolu_2", success="true"),
    ).SerializeToString()
    assert post(harness, "/v1/logs", body).status_code == 200
    apps = dict(harness.rows("SELECT session_id, source_app FROM events WHERE source = 'otel'"))
    assert apps == {"s-known-1": "shop", "s-new-1": "unknown"}


# -- attribute values, however they come -------------------------------------------------------
def test_values_are_read_tolerantly(harness: Harness) -> None:
    t0 = "2026-01-05T10:00:00.250Z"
    body = logs(
        record(  # every number a string, as Claude Code sends most of them
            "api_request",
            event_timestamp=t0,
            event_sequence="7",
            model="claude-opus-5-5",
            input_tokens="1000",
            output_tokens="50",
            cache_read_tokens="100",
            cache_creation_tokens="oops",
            cost_usd="0.25",
        ),
        record(
            "tool_result", event_sequence=8, tool_name="Bash", tool_use_id="t-f", success="false"
        ),
        record("tool_result", event_sequence=9, tool_name="Read", tool_use_id="t-y", success=True),
        # No body: the name comes from event.name. No event.timestamp: the record's own time.
        record("tool_decision", body=None, time_ns=1_767_607_200_000_000_000, event_sequence=10),
    ).SerializeToString()
    assert post(harness, "/v1/logs", body).status_code == 200
    events = {e["payload"]["event.sequence"]: e for e in timeline(harness, "s-native-1")}
    api = events[7]  # stored as the number it is
    # Counts are numbers in the stored payload, never mistaken for a secret named "token".
    assert (api["payload"]["input_tokens"], api["payload"]["cost_usd"]) == (1000, 0.25)
    assert api["ts"] == iso_ms(t0)
    assert api["usage"] == {"claude-opus-5-5": {"input": 1000, "output": 50, "cache_read": 100}}
    assert harness.client.get("/v1/sessions/s-native-1").json()["cost_usd"] == 0.25
    assert (events[8]["outcome"], events[9]["outcome"]) == ("error", "success")
    assert events[10]["hook_event"] == "claude_code.tool_decision"
    assert events[10]["ts"] == 1_767_607_200_000


def test_user_is_the_hash_unless_the_operator_opts_in_to_emails() -> None:
    req = logs(record("api_request", user_id="abc123hash", user_email="dev@example.com"))
    settings = Settings(db=Path("unused.db"))
    (event,) = to_events(req, 1_767_607_200_000, settings, "127.0.0.1", lambda _: None).events
    assert event.user == "abc123hash"
    opted = dataclasses.replace(settings, user_label="email")  # AGENTWATCH_USER_LABEL=email
    (event,) = to_events(req, 1_767_607_200_000, opted, "127.0.0.1", lambda _: None).events
    assert event.user == "dev@example.com"


def test_event_ids_are_stable_and_tell_records_apart() -> None:
    def ids(req: ExportLogsServiceRequest) -> list[str]:
        settings = Settings(db=Path("unused.db"))
        return [e.event_id for e in to_events(req, 0, settings, "c", lambda _: None).events]

    a = record("tool_result", event_timestamp="2026-01-05T10:00:00Z", event_sequence=1)
    b = record("tool_result", event_timestamp="2026-01-05T10:00:00Z", event_sequence=2)
    assert ids(logs(a)) == ids(logs(a))  # a re-send
    assert len(set(ids(logs(a, b)))) == 2
    # Without Claude Code's sequence and timestamp, the record's time and attributes count.
    c, d = record("x", time_ns=1, n=1), record("x", time_ns=1, n=2)
    assert len(set(ids(logs(c, d)))) == 2 and ids(logs(c)) == ids(logs(c))


def test_sessions_are_looked_up_once_each() -> None:
    asked: list[str] = []

    def lookup(sid: str) -> str | None:
        asked.append(sid)
        return "shop"

    req = logs(*(record("x", session=f"s-{i % 2}", event_sequence=i) for i in range(10)))
    out = to_events(req, 0, Settings(db=Path("unused.db")), "c", lookup)
    assert sorted(asked) == ["s-0", "s-1"]
    assert {e.source_app for e in out.events} == {"shop"}


# -- partial success, policy, redaction ---------------------------------------------------------
@pytest.mark.parametrize("kind", [PB, JSON])
def test_records_without_a_session_are_rejected_and_the_rest_stored(
    harness: Harness, kind: str
) -> None:
    req = logs(
        record("api_request", model="m", input_tokens=5),
        record("api_request", session=None, model="m", input_tokens=5),
        record("tool_result", event_sequence=2),
    )
    body = req.SerializeToString() if kind == PB else json_format.MessageToJson(req).encode()
    r = post(harness, "/v1/logs", body, kind)
    assert r.status_code == 200
    answer = ExportLogsServiceResponse()
    if kind == PB:
        answer.ParseFromString(r.content)
    else:
        assert r.json()["partialSuccess"]["rejectedLogRecords"] == "1"  # int64: a string
        json_format.Parse(r.text, answer)
    assert answer.partial_success.rejected_log_records == 1
    assert "log record 1: no session.id" in answer.partial_success.error_message
    assert count(harness) == 2
    assert harness.metric("agentwatch_events_rejected_total", reason="invalid_event") == 1


def test_capture_metadata_drops_prompts_and_responses(make_harness: Any) -> None:
    h = make_harness(capture="metadata")
    assert post(h, "/v1/logs", LOGS_PB.read_bytes()).status_code == 200
    (prompt,) = [a["prompt"] for _, a in fixture_records(LOGS_PB) if "prompt" in a]
    (reply,) = [a["response"] for _, a in fixture_records(LOGS_PB) if "response" in a]
    stored = payloads(h)
    assert len(stored) == len(fixture_records(LOGS_PB))
    for text in stored:
        doc = json.loads(text)
        assert not {"prompt", "prompt_text", "response"} & set(doc)
        assert prompt not in text and f'"{reply}"' not in text
    (result,) = [
        e
        for e in timeline(h, fixture_records(LOGS_PB)[0][1]["session.id"])
        if e["hook_event"] == "claude_code.tool_result"
    ]
    assert result["payload"]["tool_name"] == "Bash" and result["outcome"] == "success"


def test_a_secret_in_an_attribute_is_redacted(harness: Harness) -> None:
    body = logs(
        record("user_prompt", prompt=f"use {SECRET} please", prompt_text=f"token={SECRET}"),
        record("tool_result", tool_parameters=json.dumps({"command": f"echo {SECRET}"})),
    ).SerializeToString()
    assert post(harness, "/v1/logs", body).status_code == 200
    stored = payloads(harness)
    assert len(stored) == 2
    assert all(SECRET not in p for p in stored)
    assert "[REDACTED:github_token]" in stored[0]


# -- refusals -------------------------------------------------------------------------------
def status_of(r: httpx.Response) -> str:
    """The message of the google.rpc.Status an OTLP error carries, in the request's encoding."""
    if r.headers["content-type"] == PB:
        status = status_pb2.Status()
        status.ParseFromString(r.content)
        return str(status.message)
    doc = r.json()
    assert set(doc) == {"code", "message"}
    return str(doc["message"])


@pytest.mark.parametrize("path", ["/v1/logs", "/v1/metrics"])
@pytest.mark.parametrize(
    ("body", "kind", "headers", "status", "reason", "needle"),
    [
        (b"\x0a\xff\xff\xff", PB, {}, 400, "malformed_body", "malformed protobuf"),
        (b"{nope", JSON, {}, 400, "malformed_json", "malformed JSON"),
        (b"[1]", JSON, {}, 400, "malformed_body", "object"),
        (b'{"resourceLogs": 5, "resourceMetrics": 5}', JSON, {}, 400, "malformed_body", "OTLP"),
        (b"\x1f\x8b\x08\x00garbage", PB, {"content-encoding": "gzip"}, 400, "malformed_body", "gzip"),
        (gzip.compress(b"x" * 100)[:-12], PB, {"content-encoding": "gzip"}, 400, "malformed_body", "cut short"),
        (b"{}", "text/plain", {}, 415, "unsupported_media_type", "content type"),
        (b"{}", JSON, {"content-encoding": "br"}, 415, "unsupported_media_type", "encoding"),
        (b"\x00" * 5000, PB, {}, 413, "too_large", "larger than"),
    ],
)  # fmt: skip
def test_bad_bodies_get_a_clear_otlp_error_and_nothing_is_stored(
    make_harness: Any,
    path: str,
    body: bytes,
    kind: str,
    headers: dict[str, str],
    status: int,
    reason: str,
    needle: str,
) -> None:
    h = make_harness(max_body_bytes=4096)
    r = post(h, path, body, kind, **headers)
    assert r.status_code == status, r.text
    assert needle in status_of(r)
    assert h.metric("agentwatch_events_rejected_total", reason=reason) == 1
    assert count(h) == 0
    points = ("accepted", "duplicate", "invalid", "unsupported", "dropped")
    assert sum(h.metric("agentwatch_native_metric_points_total", result=r) for r in points) == 0


@pytest.mark.parametrize("path", ["/v1/logs", "/v1/metrics"])
def test_a_gzip_bomb_is_refused_without_inflating_it(harness: Harness, path: str) -> None:
    body = bomb(1 << 30)  # 1 GiB of zeros in ~1 MiB
    assert len(body) < harness.settings.max_body_bytes < 1 << 30
    r = post(harness, path, body, PB, **{"content-encoding": "gzip"})
    assert r.status_code == 413
    assert "once inflated" in status_of(r)
    assert harness.metric("agentwatch_events_rejected_total", reason="too_large") == 1


def test_too_many_records_in_one_request_is_413(make_harness: Any) -> None:
    h = make_harness(max_batch_events=10)
    r = post(h, "/v1/logs", LOGS_PB.read_bytes())
    assert r.status_code == 413 and "at most 10" in status_of(r)
    assert count(h) == 0


def test_token_auth_applies(make_harness: Any) -> None:
    h = make_harness(token="s3cret-token")
    for path, body in (("/v1/logs", LOGS_PB), ("/v1/metrics", METRICS_PB)):
        r = post(h, path, body.read_bytes())
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in status_of(r)
        ok = post(h, path, body.read_bytes(), authorization="Bearer s3cret-token")
        assert ok.status_code == 200
    assert h.metric("agentwatch_events_rejected_total", reason="unauthorized") == 2
    assert count(h) == len(fixture_records(LOGS_PB))


def test_hmac_applies_as_on_other_ingest_routes(make_harness: Any) -> None:
    import time

    from collector.auth import sign

    h = make_harness(hmac_secret="hmac-key")
    body = LOGS_PB.read_bytes()
    assert post(h, "/v1/logs", body).status_code == 401
    now = str(int(time.time()))
    signed = {"x-agentwatch-timestamp": now, "x-agentwatch-signature": sign("hmac-key", now, body)}
    assert post(h, "/v1/logs", body, **signed).status_code == 200


def test_a_saturated_store_answers_503_with_retry_after(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(_events: list[Any]) -> list[bool]:
        raise StoreSaturated("writer queue full")

    monkeypatch.setattr(harness.client.app.state.ctx.store, "write", full)
    r = post(harness, "/v1/logs", LOGS_PB.read_bytes())
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "writer queue full" in status_of(r)
    assert harness.metric("agentwatch_events_rejected_total", reason="store_unavailable") == 1


# -- metrics ----------------------------------------------------------------------------------
def test_metrics_go_to_the_sink_and_are_not_stored(harness: Harness) -> None:
    sink = harness.client.app.state.ctx.native_metrics
    assert isinstance(sink, NativeMetrics)
    r = post(harness, "/v1/metrics", METRICS_PB.read_bytes())
    assert r.status_code == 200 and r.headers["content-type"] == PB
    ExportMetricsServiceResponse().ParseFromString(r.content)
    r = post(
        harness,
        "/v1/metrics",
        gzip.compress(METRICS_JSON.read_bytes()),
        JSON,
        **{"content-encoding": "gzip"},
    )
    assert r.status_code == 200 and r.json() == {}
    accepted = harness.metric("agentwatch_native_metric_points_total", result="accepted")
    assert accepted > 0
    assert "\nclaude_code_cost_usage_USD_total{" in harness.client.get("/metrics").text
    assert count(harness) == 0


def test_a_plugged_in_sink_gets_the_decoded_request(harness: Harness) -> None:
    got: list[tuple[ExportMetricsServiceRequest, int]] = []

    class Sink:
        def add(self, request: ExportMetricsServiceRequest, received_ms: int) -> None:
            got.append((request, received_ms))

    harness.client.app.state.ctx.native_metrics = Sink()
    assert post(harness, "/v1/metrics", METRICS_PB.read_bytes()).status_code == 200
    ((request, received),) = got
    names = {
        m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"claude_code.cost.usage", "claude_code.token.usage"} <= names
    assert received > 0


def test_otlp_json_trace_ids_are_hex() -> None:
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    req = decode(json.dumps(doc).encode(), JSON, "identity", ExportLogsServiceRequest, 1 << 20)
    lr = req.resource_logs[0].scope_logs[0].log_records[0]
    assert lr.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert lr.span_id.hex() == "eee19b7ec3c1b174"


# -- the real Claude Code -----------------------------------------------------------------------
def metrics_posted(url: str) -> float:
    """POST /v1/metrics answered 200, by the collector's own request histogram."""
    labels = {"route": "/v1/metrics", "method": "POST", "status": "200"}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture
def api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.mark.e2e
def test_real_claude_code_telemetry_joins_its_hook_events(
    tmp_path: Path, api: FakeAnthropic
) -> None:
    """Claude Code with its own telemetry pointed at the collector: the session's timeline holds
    its api_request and tool_result events beside the hook events, and its tool_result carries
    the tool_use_id of the hook's tool call."""
    (tmp_path / "collector").mkdir()
    proc = start_collector(tmp_path / "collector")
    try:
        claude = Claude(
            tmp_path,
            api.url,
            proc.url,
            env_extra={
                "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
                "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": proc.url,
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "OTEL_LOGS_EXPORT_INTERVAL": "500",
            },
        )
        bash = ToolUse("Bash", {"command": "echo hi", "description": "say hi"})
        api.script.conversations["[[otel]]"] = [
            Reply(tools=[bash], input=1000, output=50, cache_read=100),
            Reply(text="done", input=1200, output=10),
        ]
        run = claude.headless("[[otel]] say hi", "--allowedTools", "Bash")
        assert run.returncode == 0, run.stderr
        sid = run.session_id

        def events() -> list[dict[str, Any]]:
            r = httpx.get(f"{proc.url}/v1/sessions/{sid}/events", params={"limit": 500})
            return r.json()["items"] if r.status_code == 200 else []

        def arrived() -> bool:
            names = [e["hook_event"] for e in events()]
            return (
                names.count("claude_code.api_request") == 2
                and "claude_code.tool_result" in names
                and "SessionEnd" in names
            )

        wait_until(arrived, 60, "Claude Code's own events and the hook events")
        timeline = events()
        sources = {e["source"] for e in timeline}
        assert sources == {"hook", "otel"}
        by_tool_use = [e for e in timeline if e["tool_use_id"] == bash.id]
        assert {(e["source"], e["hook_event"]) for e in by_tool_use} >= {
            ("hook", "PreToolUse"),
            ("hook", "PostToolUse"),
            ("otel", "claude_code.tool_result"),
        }
        (result,) = [e for e in by_tool_use if e["hook_event"] == "claude_code.tool_result"]
        assert result["outcome"] == "success" and result["tool_name"] == "Bash"
        # Its project is the one the session's hooks named (they ran before the tool did).
        assert result["source_app"] == claude.project.name
        usage = [e["usage"] for e in timeline if e["hook_event"] == "claude_code.api_request"]
        assert sum(u[m]["input"] for u in usage for m in u) == 2200
        assert all(e["session_id"] == sid for e in timeline)
        # Its metrics came too (and were handed to the sink).
        wait_until(lambda: metrics_posted(proc.url) > 0, 30, "a POST /v1/metrics")
    finally:
        proc.stop()
