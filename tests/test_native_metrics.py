"""collector/native/metrics.py: Claude Code's own OTLP metrics exposed on the collector's /metrics.

The fixtures tests/fixtures/otel/metrics-session-<n>-<k>.pb are the raw /v1/metrics bodies the
real Claude Code 2.1.328 sent for two headless sessions of one user (tests/fixtures/otel/
metrics-capture.py made them): session 1 ran Bash, Write and Edit and exported twice, session 2
only answered. The expected figures are what Claude Code itself reported for the two runs.
"""

from __future__ import annotations

import math
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from collector.native import MetricsSink
from collector.native.metrics import NativeMetrics, prometheus_name
from tests.support.procs import require_binary, start_prometheus, wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "otel"
SESSIONS = [sorted(FIXTURES.glob(f"metrics-session-{n}-*.pb")) for n in (1, 2)]
# What the two runs' `claude -p --output-format json` reported (total_cost_usd, modelUsage).
MODEL = "claude-opus-5-5"
COST = 0.02496 + 0.00241
TOKENS = {"input": 4900 + 500, "output": 180 + 20, "cacheRead": 1300 + 50, "cacheCreation": 300}
T0 = 1_796_176_400_000_000_000  # ns


# -- building OTLP requests ------------------------------------------------------------------------
def attrs(**values: Any) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        key = key.replace("__", ".")  # session__id=... -> session.id
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = AnyValue(double_value=value)
        else:
            any_value = AnyValue(string_value=value)
        out.append(KeyValue(key=key, value=any_value))
    return out


def point(value: float, start: int = T0, time: int = T0 + 1, **labels: Any) -> NumberDataPoint:
    p = NumberDataPoint(start_time_unix_nano=start, time_unix_nano=time, attributes=attrs(**labels))
    if isinstance(value, int):
        p.as_int = value
    else:
        p.as_double = value
    return p


def request(
    name: str,
    *points: NumberDataPoint,
    unit: str = "",
    kind: str = "delta",
    monotonic: bool = True,
    resource: dict[str, Any] | None = None,
) -> ExportMetricsServiceRequest:
    metric = Metric(name=name, unit=unit, description=f"{name} for a test")
    if kind == "gauge":
        metric.gauge.data_points.extend(points)
    elif kind == "histogram":
        metric.histogram.data_points.add(count=1, sum=2.0)
    else:
        metric.sum.aggregation_temporality = (
            AGGREGATION_TEMPORALITY_DELTA if kind == "delta" else AGGREGATION_TEMPORALITY_CUMULATIVE
        )
        metric.sum.is_monotonic = monotonic
        metric.sum.data_points.extend(points)
    rm = ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[metric])])
    rm.resource.attributes.extend(attrs(**(resource or {"service.name": "claude-code"})))
    rm.scope_metrics[0].scope.name = "com.anthropic.claude_code"
    return ExportMetricsServiceRequest(resource_metrics=[rm])


def fixture(paths: list[Path]) -> list[ExportMetricsServiceRequest]:
    return [ExportMetricsServiceRequest.FromString(p.read_bytes()) for p in paths]


def raw(metric: str) -> list[tuple[dict[str, str], float]]:
    """Every data point of `metric` in the fixtures: its string attributes and value."""
    out = []
    for req in fixture(SESSIONS[0] + SESSIONS[1]):
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.sum.data_points if m.name == metric else []:
                        labels = {a.key: a.value.string_value for a in p.attributes}
                        out.append((labels, p.as_double))
    return out


def add_session(native: NativeMetrics, n: int, received_ms: int = 0) -> None:
    for req in fixture(SESSIONS[n - 1]):
        native.add(req, received_ms)


# -- reading the registry --------------------------------------------------------------------------
def samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for m in registry.collect() for s in m.samples if s.name == name]


def total(registry: CollectorRegistry, name: str, **match: str) -> float:
    """The sum of the samples of `name` whose labels include `match` (sum by ... in PromQL)."""
    return sum(v for labels, v in samples(registry, name) if match.items() <= labels.items())


def points(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("agentwatch_native_metric_points_total", {"result": result})
    assert value is not None
    return value


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def native(registry: CollectorRegistry) -> NativeMetrics:
    return NativeMetrics(registry, label_cap=200)


# -- names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        # What Claude Code 2.1.328 declares (installMeter in its bundle): names and units.
        ("claude_code.session.count", "", "counter", "claude_code_session_count_total"),
        ("claude_code.cost.usage", "USD", "counter", "claude_code_cost_usage_USD_total"),
        ("claude_code.token.usage", "tokens", "counter", "claude_code_token_usage_tokens_total"),
        ("claude_code.active_time.total", "s", "counter", "claude_code_active_time_seconds_total"),
        ("claude_code.lines_of_code.count", "", "counter", "claude_code_lines_of_code_count_total"),
        ("claude_code.commit.count", "", "counter", "claude_code_commit_count_total"),
        ("claude_code.pull_request.count", "", "counter", "claude_code_pull_request_count_total"),
        (
            "claude_code.code_edit_tool.decision",
            "",
            "counter",
            "claude_code_code_edit_tool_decision_total",
        ),
        # The otel-collector's own cases (pkg/translator/prometheus/normalize_name_test.go).
        ("system.filesystem.usage", "By", "gauge", "system_filesystem_usage_bytes"),
        ("system.network.dropped", "{packets}", "counter", "system_network_dropped_total"),
        ("system.network.dropped", "packets", "gauge", "system_network_dropped_packets"),
        ("system.cpu.utilization", "1", "gauge", "system_cpu_utilization_ratio"),
        ("system.io", "By/s", "sum", "system_io_bytes_per_second"),
        ("foo.seconds", "s", "counter", "foo_seconds_total"),
        ("foo.total", "", "counter", "foo_total"),
        ("2xx.requests", "", "gauge", "_2xx_requests"),
    ],
)
def test_names_follow_the_otel_collector_prometheus_exporter(
    name: str, unit: str, kind: str, expected: str
) -> None:
    assert prometheus_name(name, unit, kind) == expected


# -- the real Claude Code ------------------------------------------------------------------------------
def test_real_claude_code_metrics_exposed_with_the_monitoring_guide_names(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    assert len(SESSIONS[0]) >= 1 and len(SESSIONS[1]) >= 1
    add_session(native, 1)
    add_session(native, 2, 1_796_176_430_000)
    user = raw("claude_code.session.count")[0][0]["user.id"]
    session_ids = {labels["session.id"] for labels, _ in raw("claude_code.session.count")}
    assert len(session_ids) == 2
    names = {m.name for m in registry.collect()}
    assert names == {
        "agentwatch_native_metric_points",
        "agentwatch_native_metric_last_received_timestamp_seconds",
        "claude_code_session_count",
        "claude_code_cost_usage_USD",
        "claude_code_token_usage_tokens",
        "claude_code_active_time_seconds",
        "claude_code_lines_of_code_count",
        "claude_code_code_edit_tool_decision",
    }  # families; each counter's samples end in _total (commits and PRs: none in these runs)
    for m in registry.collect():
        if m.name.startswith("claude_code_"):
            assert m.type == "counter"
            assert all(s.name == m.name + "_total" for s in m.samples)

    # Two sessions (three exports) of one user and model: one series, Claude Code's own totals.
    cost = samples(registry, "claude_code_cost_usage_USD_total")
    assert len(cost) == 1
    labels, value = cost[0]
    assert value == pytest.approx(COST)
    assert labels == {
        "model": MODEL,
        "query_source": "main",
        "effort": "medium",
        "terminal_type": "xterm",
        "anthropic_provider": "firstParty",
        "anthropic_custom_base_url": "true",
        "user": user,
    }
    tokens = samples(registry, "claude_code_token_usage_tokens_total")
    assert {lab["type"]: v for lab, v in tokens} == TOKENS
    assert {lab["model"] for lab, _ in tokens} == {MODEL}
    assert samples(registry, "claude_code_session_count_total") == [
        (
            {
                "start_type": "fresh",
                "terminal_type": "xterm",
                "anthropic_provider": "firstParty",
                "anthropic_custom_base_url": "true",
                "user": user,
            },
            2.0,
        )
    ]
    active = samples(registry, "claude_code_active_time_seconds_total")
    assert [lab["type"] for lab, _ in active] == ["cli"]
    assert active[0][1] == pytest.approx(sum(v for _, v in raw("claude_code.active_time.total")))
    lines = samples(registry, "claude_code_lines_of_code_count_total")
    assert {lab["type"]: v for lab, v in lines} == {"added": 4, "removed": 1}
    decisions = samples(registry, "claude_code_code_edit_tool_decision_total")
    assert sorted(
        (lab["tool_name"], lab["decision"], lab["language"], lab["source"], v)
        for lab, v in decisions
    ) == [("Edit", "accept", "Python", "config", 1.0), ("Write", "accept", "Python", "config", 1.0)]

    # No session id anywhere: not as a label, not as a label value.
    text = generate_latest(registry).decode()
    for session_id in session_ids:
        assert session_id not in text
    label_names = {k for m in registry.collect() for s in m.samples for k in s.labels}
    assert not {k for k in label_names if "session" in k or k.endswith(("id", "uuid", "email"))}
    n_points = sum(
        len(m.sum.data_points)
        for req in fixture(SESSIONS[0] + SESSIONS[1])
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )
    assert points(registry, "accepted") == n_points
    assert registry.get_sample_value(
        "agentwatch_native_metric_last_received_timestamp_seconds"
    ) == pytest.approx(1_796_176_430)


def test_the_sink_fits_the_protocol_and_leaves_the_global_registry_alone(
    registry: CollectorRegistry,
) -> None:
    before = set(REGISTRY._names_to_collectors)
    sink: MetricsSink = NativeMetrics(registry)
    for req in fixture(SESSIONS[0]):
        sink.add(req, 1)
    assert set(REGISTRY._names_to_collectors) == before
    assert REGISTRY.get_sample_value("claude_code_cost_usage_USD_total") is None
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        NativeMetrics(registry)  # one sink per registry


# -- delta ---------------------------------------------------------------------------------------------
def test_deltas_add_up_over_requests_and_sessions(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    name = "claude_code_cost_usage_USD_total"
    a: dict[str, Any] = {"model": MODEL, "session__id": "s-a", "user__id": "u1", "prompt__id": "p1"}
    b: dict[str, Any] = {"model": MODEL, "session__id": "s-b", "user__id": "u1", "prompt__id": "p2"}
    # session a exports every interval: each point is the cost since the last export
    for i, cost in enumerate((0.5, 0.25, 0.125)):
        start = T0 + i * 60_000_000_000
        native.add(
            request(
                "claude_code.cost.usage",
                point(cost, start, start + 60_000_000_000, **a),
                unit="USD",
            ),
            i,
        )
    assert samples(registry, name) == [({"model": MODEL, "user": "u1"}, 0.875)]
    # a second session of the same user and model adds into the same series
    native.add(request("claude_code.cost.usage", point(1.0, T0, T0 + 5, **b), unit="USD"), 9)
    assert samples(registry, name) == [({"model": MODEL, "user": "u1"}, 1.875)]
    # another model is another series
    native.add(
        request("claude_code.cost.usage", point(2.0, **{**b, "model": "haiku"}), unit="USD"), 9
    )
    assert total(registry, name, model=MODEL) == 1.875
    assert total(registry, name, model="haiku") == 2.0
    # several points in one request, int values too
    native.add(
        request(
            "claude_code.token.usage",
            point(100, type="input", **a),
            point(7, type="output", **a),
            point(50, type="input", **b),
            unit="tokens",
        ),
        10,
    )
    tokens = "claude_code_token_usage_tokens_total"
    assert total(registry, tokens, type="input") == 150
    assert total(registry, tokens, type="output") == 7
    assert points(registry, "accepted") == 8


def test_a_resent_delta_request_counts_once(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    req = request("claude_code.session.count", point(1, session__id="s-a", user__id="u1"))
    native.add(req, 1)
    native.add(req, 2)  # the sender retried: same stream, same start and time
    assert total(registry, "claude_code_session_count_total") == 1
    assert points(registry, "duplicate") == 1
    # another session with the very same times is another stream: counted
    native.add(request("claude_code.session.count", point(1, session__id="s-b", user__id="u1")), 3)
    assert total(registry, "claude_code_session_count_total") == 2


# -- cumulative ----------------------------------------------------------------------------------------
def test_cumulative_keeps_the_latest_per_start_and_adds_across_restarts(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    name = "claude_code_commit_count_total"

    def send(value: float, start: int, time: int, session: str = "s-a") -> None:
        native.add(
            request(
                "claude_code.commit.count",
                point(value, start, time, session__id=session, user__id="u1"),
                kind="cumulative",
            ),
            0,
        )

    exposed = []
    send(1, T0, T0 + 10)
    exposed.append(total(registry, name))
    send(3, T0, T0 + 20)
    exposed.append(total(registry, name))
    send(3, T0, T0 + 30)  # nothing new
    exposed.append(total(registry, name))
    send(2, T0, T0 + 15)  # older than what we have: ignored
    exposed.append(total(registry, name))
    send(2, T0 + 100, T0 + 110)  # the sender restarted: a new start time, counting from 0 again
    exposed.append(total(registry, name))
    send(5, T0 + 100, T0 + 120)
    exposed.append(total(registry, name))
    send(1, T0 + 100, T0 + 130)  # went down without a new start: a reset too
    exposed.append(total(registry, name))
    send(4, T0, T0 + 40)  # the first process, still running beside the second one
    exposed.append(total(registry, name))
    send(10, T0 + 5, T0 + 50, session="s-b")  # another session, same labels: adds
    exposed.append(total(registry, name))
    assert exposed == [1, 3, 3, 3, 5, 8, 9, 10, 20]
    assert exposed == sorted(exposed)  # never goes down
    assert samples(registry, name) == [({"user": "u1"}, 20)]
    assert points(registry, "duplicate") == 1


def test_gauges_up_down_sums_and_what_is_skipped(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    native.add(request("claude_code.queue.depth", point(3.0, q="a"), kind="gauge", unit="1"), 0)
    native.add(request("claude_code.queue.depth", point(2.0, q="a"), kind="gauge", unit="1"), 0)
    assert samples(registry, "claude_code_queue_depth_ratio") == [({"q": "a"}, 2.0)]
    # a delta up-down counter: its running sum, as a gauge without _total
    for i, delta in enumerate((5, -2)):
        p = point(delta, T0 + i, T0 + i + 1)
        native.add(request("claude_code.open.files", p, monotonic=False), 0)
    assert samples(registry, "claude_code_open_files") == [({}, 3.0)]
    native.add(
        request("claude_code.open.files", point(7, T0, T0 + 9), monotonic=False, kind="cumulative"),
        0,
    )
    assert samples(registry, "claude_code_open_files") == [({}, 7.0)]
    assert points(registry, "accepted") == 5

    native.add(request("claude_code.request.duration", kind="histogram"), 0)
    assert points(registry, "unsupported") == 1
    native.add(request("http.server.requests", point(1)), 0)  # not Claude Code's
    assert points(registry, "dropped") == 1
    native.add(request("claude_code.cost.usage", point(math.nan), unit="USD"), 0)
    native.add(request("claude_code.cost.usage", point(-1.0), unit="USD"), 0)  # a counter
    # one exposed name, two types: a gauge claude_code_errors_total, then a counter of that name
    native.add(request("claude_code.errors.total", point(1), kind="gauge"), 0)
    native.add(request("claude_code.errors", point(1)), 0)
    assert points(registry, "invalid") == 3
    assert samples(registry, "claude_code_errors_total") == [({}, 1.0)]
    assert [m.type for m in registry.collect() if m.name == "claude_code_errors_total"] == ["gauge"]
    assert total(registry, "claude_code_cost_usage_USD_total") == 0
    text = generate_latest(registry).decode()
    assert "http_server" not in text
    assert "duration" not in text


def test_metric_families_are_capped(registry: CollectorRegistry) -> None:
    native = NativeMetrics(registry, max_metrics=2)
    for i in range(4):
        native.add(request(f"claude_code.thing{i}", point(1)), 0)
    assert [m.name for m in registry.collect() if m.name.startswith("claude_code")] == [
        "claude_code_thing0",
        "claude_code_thing1",
    ]
    assert points(registry, "dropped") == 2


# -- labels ----------------------------------------------------------------------------------------
def test_ids_are_never_labels_and_user_is_the_hashed_user_id(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    native.add(
        request(
            "claude_code.token.usage",
            point(
                10,
                user__id="hash-1",
                session__id="s-1",
                session_id="s-1",
                prompt__id="p-1",
                request_id="req_1",
                user__account_uuid="acc-1",
                organization__id="org-1",
                user__email="dev@example.com",
                tool_use_id="toolu_1",
                model=MODEL,
                type="input",
                terminal__type="tmux",
                user="spoofed",
                app__version="2.1.328",
                attempt=2,
                cached=False,
            ),
            unit="tokens",
        ),
        0,
    )
    ((labels, value),) = samples(registry, "claude_code_token_usage_tokens_total")
    assert labels == {
        "user": "hash-1",
        "model": MODEL,
        "type": "input",
        "terminal_type": "tmux",
        "app_version": "2.1.328",
        "attempt": "2",
        "cached": "false",
    }
    assert value == 10


def test_user_is_the_email_when_the_operator_opts_in(registry: CollectorRegistry) -> None:
    native = NativeMetrics(registry, user_label="email")
    native.add(request("claude_code.session.count", point(1, user__id="h", user__email="a@b.c")), 0)
    native.add(request("claude_code.session.count", point(1, user__id="h2")), 0)  # not signed in
    assert sorted(samples(registry, "claude_code_session_count_total"), key=str) == [
        ({"user": "a@b.c"}, 1.0),
        ({"user": "h2"}, 1.0),
    ]


def test_label_values_beyond_the_cap_become_other(registry: CollectorRegistry) -> None:
    native = NativeMetrics(registry, label_cap=2)
    for model, user in (("m1", "u1"), ("m2", "u2"), ("m3", "u3"), ("m4", "u1"), ("m1", "u9")):
        native.add(
            request("claude_code.cost.usage", point(1.0, model=model, user__id=user), unit="USD"), 0
        )
    got = {
        (lab["model"], lab["user"]): v
        for lab, v in samples(registry, "claude_code_cost_usage_USD_total")
    }
    assert got == {
        ("m1", "u1"): 1.0,
        ("m2", "u2"): 1.0,
        ("other", "other"): 1.0,
        ("other", "u1"): 1.0,
        ("m1", "other"): 1.0,
    }
    assert total(registry, "claude_code_cost_usage_USD_total") == 5  # nothing lost


# -- concurrency ---------------------------------------------------------------------------------------
def test_adds_and_scrapes_from_many_threads(
    registry: CollectorRegistry, native: NativeMetrics
) -> None:
    threads_n, per_thread = 8, 200
    stop = threading.Event()
    scrapes: list[int] = []

    def scrape() -> None:
        while not stop.is_set():
            generate_latest(registry)
            scrapes.append(1)

    def send(t: int) -> None:
        for i in range(per_thread):
            p = point(1, T0 + i, T0 + i + 1, session__id=f"s-{t}", model=f"m{t % 2}")
            native.add(request("claude_code.session.count", p), i)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    senders = [threading.Thread(target=send, args=(t,)) for t in range(threads_n)]
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    stop.set()
    scraper.join()
    assert scrapes
    assert total(registry, "claude_code_session_count_total") == threads_n * per_thread
    assert total(registry, "claude_code_session_count_total", model="m0") == 4 * per_thread
    assert points(registry, "accepted") == threads_n * per_thread


# -- a real scrape ---------------------------------------------------------------------------------
@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[int]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.e2e
def test_promtool_accepts_the_exposition(
    registry: CollectorRegistry, native: NativeMetrics, served: int
) -> None:
    promtool = require_binary("promtool")
    add_session(native, 1)
    add_session(native, 2)
    native.add(request("claude_code.commit.count", point(1, user__id="u1")), 2)
    native.add(request("claude_code.pull_request.count", point(1, user__id="u1")), 2)
    url = f"http://127.0.0.1:{served}/metrics"
    text = httpx.get(url).text
    for name in ("cost_usage_USD", "commit_count", "pull_request_count"):
        assert f"# TYPE claude_code_{name}_total counter" in text
        assert f"claude_code_{name}_total{{" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool reads the text format only; OpenMetrics gets prometheus_client's strict parser.
    om = httpx.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    parsed = openmetrics_families(om.text)  # type: ignore[no-untyped-call]
    families = {f.name: f.type for f in parsed}
    assert families["claude_code_cost_usage_USD"] == "counter"
    assert families["agentwatch_native_metric_points"] == "counter"


def _query(prom: str, expr: str) -> list[Any]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


@pytest.mark.e2e
def test_prometheus_scrapes_the_fixture_cost_by_model(
    tmp_path: Path, native: NativeMetrics, served: int
) -> None:
    config = f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: agentwatch-collector
    static_configs:
      - targets: ["127.0.0.1:{served}"]
"""
    prom = start_prometheus(tmp_path, config)
    try:
        add_session(native, 1)
        by_model = "sum by (model) (claude_code_cost_usage_USD_total)"
        wait_until(lambda: len(_query(prom.url, by_model)) == 1, 30, "the first session scraped")
        # The next session adds to the same series (no session.id): increase() sees it grow,
        # where a series per session would be born at 1 and show ~0.
        add_session(native, 2)
        wait_until(
            lambda: float(_query(prom.url, by_model)[0]["value"][1]) == pytest.approx(COST),
            30,
            "the second session scraped",
        )
        (result,) = _query(prom.url, by_model)
        assert result["metric"] == {"model": MODEL}
        assert float(result["value"][1]) == pytest.approx(COST)
        sessions = "sum(increase(claude_code_session_count_total[1m]))"
        wait_until(
            lambda: float(_query(prom.url, sessions)[0]["value"][1]) > 0.5, 30, "increase() > 0"
        )
        tokens = _query(prom.url, "sum by (type) (claude_code_token_usage_tokens_total)")
        assert {r["metric"]["type"]: float(r["value"][1]) for r in tokens} == TOKENS
        assert _query(prom.url, "count(claude_code_cost_usage_USD_total)")[0]["value"][1] == "1"
    finally:
        prom.stop()
