"""Every PromQL target of every dashboard, run against Debian's Prometheus with real data.

The demo session goes through the real hook script into a real collector, and a real Claude
Code's own telemetry goes to the same collector the way Claude Code sends it: its OTLP log events
(tests/fixtures/otel/logs.binpb: api_request events with its exact cost) to /v1/logs, its OTLP
metrics (tests/fixtures/otel/metrics-session-*.pb: two sessions) to /v1/metrics, which the
collector exposes as claude_code_*. Prometheus scrapes the collector with the repo's own job
config (tests/support/promconfig.py): there is no other source of claude_code_* series.

Each query must succeed and return data, and the data must not be all zero or NaN: a panel that
can only show 0 where the session had something to show is as broken as an empty one (a counter
series born at its first increment, which increase() alone never sees, looks just like that).
The few targets whose data may really be 0 here are listed in EXPECTED_ZERO with the reason.
Each variable's label_values() must offer values.

Then the real Claude Code (tests/support/claude.py, against the scripted Messages API) works in
the demo's project with its telemetry on: the hook-derived series and its own claude_code_*
series rise from a real client, so per-minute rates have something to show. The repo's rule
files are loaded (the budget gauge, error-ratio guards and thresholds read recording rules), and
the Health row's Prometheus and Alertmanager panels read the real binaries, each made to fail the
way the panel watches for: a rule that cannot be evaluated, an Alertmanager that Prometheus cannot
reach, a webhook receiver nobody listens on. The otel-collector, Loki and Tempo have no binary
here: their targets must still run, and may only come back empty (NOT_RUN_HERE).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from demo.replay import HOOK, RECORDING, load, replay
from tests.support.claude import Claude
from tests.support.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.support.otlp_receiver import GrpcReceiver
from tests.support.procs import (
    free_port,
    start_alertmanager,
    start_collector,
    start_prometheus,
    wait_until,
)
from tests.support.promconfig import REPO_PROMETHEUS_YML, derive_config, repo_rule_files
from tests.test_claude_code import TELEMETRY
from tests.test_dashboards import DASHBOARDS, all_panels, substitute
from tests.test_dashboards import load as load_dashboard

SCRAPE = "1s"
FIXTURES = Path(__file__).parent / "fixtures" / "otel"
METRICS = sorted(FIXTURES.glob("metrics-session-*.pb"))
PROTOBUF = {"content-type": "application/x-protobuf"}

# (dashboard, panel title, refId) -> why its data may be all 0 after the demo and the recorded
# Claude Code sessions. Anything else that is all 0 or NaN fails.
EXPECTED_ZERO = {
    ("agentwatch-health.json", "Hook spool drops", "A"): "every hook delivered its events",
    ("agentwatch-health.json", "Rejected and duplicate events / s", "A"): "nothing was refused",
    ("agentwatch-health.json", "Store queue", "A"): "the writer keeps up: the queue drains",
    ("agentwatch-health.json", "Store write time and errors", "B"): "no store write failed",
    ("agentwatch-health.json", "Relay exported / failed per s", "B"): "the receiver took all",
    ("agentwatch-health.json", "Relay backlog", "A"): "the relay keeps up with the demo",
    ("agentwatch-health.json", "Relay lag", "A"): "the relay keeps up with the demo",
    ("agentwatch-overview.json", "Firing alerts", "A"): (
        "only the Watchdog fires (left out: the test checks it fires); every other alert's for: "
        "outlasts the test"
    ),
    ("agentwatch-overview.json", "Waiting for input", "A"): (
        "the demo's permission prompt is answered long before the collector's wait threshold"
    ),
    ("agentwatch-overview.json", "Loops / min and sessions waiting for input", "B"): (
        "the demo's permission prompt is answered long before the collector's wait threshold"
    ),
    ("agentwatch-health.json", "Notification failures / min", "C"): (
        "the reachable Alertmanager took every alert: Prometheus drops alerts only when no "
        "Alertmanager does"
    ),
    ("claude-code-telemetry.json", "Commits", "A"): (
        "the recorded Claude Code sessions made no commit (Claude Code sends "
        "claude_code.commit.count only when it commits)"
    ),
    ("claude-code-telemetry.json", "Pull requests", "A"): (
        "the recorded Claude Code sessions opened no pull request"
    ),
}


# Metric name prefixes of the stack components with no binary on the development and CI
# machines: their targets run (Prometheus parses and evaluates them) and may come back empty.
NOT_RUN_HERE = ("otelcol_", "loki_", "tempo_")
# A rule Prometheus cannot evaluate: both series have the labels {instance, job} once renamed.
BROKEN_RULE = {
    "groups": [
        {
            "name": "broken-on-purpose",
            "rules": [
                {
                    "record": "test:same_labels_twice",
                    "expr": '{__name__=~"up|scrape_samples_scraped",job="prometheus"}',
                }
            ],
        }
    ]
}


def alertmanager_to_nobody(dead: str) -> str:
    """Alertmanager whose only receiver is a webhook nobody listens on: every delivery fails."""
    return yaml.safe_dump(
        {
            "route": {
                "receiver": "people",
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "people",
                    "webhook_configs": [{"url": f"http://{dead}/hook", "send_resolved": False}],
                }
            ],
        }
    )


def prometheus_config(collector: int, prometheus: int, alertmanager: int, rules: Path) -> str:
    """The repo's config scraping the collector, Prometheus and Alertmanager, with the repo's
    rules plus the broken one, and alerts to the real Alertmanager and to one that is not there."""
    text = derive_config(
        REPO_PROMETHEUS_YML.read_text(),
        {
            "agentwatch-collector": f"127.0.0.1:{collector}",
            "prometheus": f"127.0.0.1:{prometheus}",
            "alertmanager": f"127.0.0.1:{alertmanager}",
        },
        alertmanager=f"127.0.0.1:{alertmanager}",
        rule_files=[*repo_rule_files(), str(rules)],
        scrape_interval=SCRAPE,
        evaluation_interval=SCRAPE,
    )
    config = yaml.safe_load(text)
    dead = f"127.0.0.1:{free_port()}"
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"].append(dead)
    return yaml.safe_dump(config, sort_keys=False)


def real_claude_code_session(root: Path, collector_url: str, source_app: str) -> None:
    """The real Claude Code, headless, in the demo's project, with its telemetry on: a subagent
    (general-purpose, as in the demo), a tool call repeated into a loop, a command a deny rule refuses."""
    api = FakeAnthropic().start()
    try:
        env = TELEMETRY | {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            "AGENTWATCH_SOURCE_APP": source_app,
        }
        claude = Claude(root, api.url, collector_url, env_extra=env)
        launch = ToolUse(
            "Agent",
            {
                "subagent_type": "general-purpose",
                "description": "look around",
                "prompt": "[[dash-sub]] list the files",
            },
        )
        again = [ToolUse("Bash", {"command": "ls", "description": "list"}) for _ in range(7)]
        # Refused by a deny rule: a blocked Bash call, like the demo's interrupted one.
        denied = ToolUse("Bash", {"command": "touch denied.txt", "description": "touch"})
        api.script.conversations["[[dash]]"] = [
            Reply(tools=[launch], input=2000, output=30, cache_read=500),
            Reply(tools=again, input=2100, output=40),
            Reply(tools=[denied], input=2200, output=20),
            Reply(text="Done.", input=2300, output=10),
        ]
        api.script.conversations["[[dash-sub]]"] = [
            Reply(tools=[ToolUse("Bash", {"command": "pwd", "description": "where"})]),
            Reply(text="One directory.", input=900, output=8),
        ]
        run = claude.headless(
            "[[dash]] look around",
            *("--allowedTools", "Bash,Agent", "--disallowedTools", "Bash(touch:*)"),
        )
        assert run.returncode == 0, run.stderr
    finally:
        api.stop()


def query(prom: str, expr: str, instant: bool) -> list[Any]:
    now = time.time()
    if instant:
        resp = httpx.get(f"{prom}/api/v1/query", params={"query": expr, "time": now}, timeout=10)
    else:
        params = {"query": expr, "start": now - 300, "end": now, "step": 5}
        resp = httpx.get(f"{prom}/api/v1/query_range", params=params, timeout=10)
    body = resp.json()
    assert body["status"] == "success", f"{expr}: {body.get('errorType')}: {body.get('error')}"
    result: list[Any] = body["data"]["result"]
    return result


def scalar(prom: str, expr: str) -> float | None:
    result = query(prom, expr, instant=True)
    return float(result[0]["value"][1]) if result else None


def only_zero_or_nan(result: list[Any]) -> bool:
    """True when no sample of the query's result is a real, non-zero number."""
    values = [
        float(v)
        for series in result
        for _, v in (series["values"] if "values" in series else [series["value"]])
    ]
    return all(math.isnan(v) or v == 0 for v in values)


def alertmanager_notification() -> dict[str, Any]:
    """What Alertmanager's webhook receiver posts (the stack's default route to the collector)."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "AgentToolErrorRateHigh", "severity": "warning"},
        "annotations": {"summary": "Tool calls fail often."},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0123456789abcdef",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="AgentToolErrorRateHigh"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "agentwatch-collector",
        "groupLabels": {"alertname": "AgentToolErrorRateHigh"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


def claude_code_logs() -> list[bytes]:
    """The recorded Claude Code session's log events as two export requests, split between its
    two api_request events (Claude Code exports its events in batches every few seconds): so the
    session's exact cost is seen rising, not only born."""
    request = ExportLogsServiceRequest.FromString((FIXTURES / "logs.binpb").read_bytes())
    (resource,) = request.resource_logs
    (scope,) = resource.scope_logs
    records = list(scope.log_records)
    api = [i for i, r in enumerate(records) if r.body.string_value == "claude_code.api_request"]
    assert len(api) >= 2, "the fixture has two api_request events"
    halves = []
    for part in (records[: api[1]], records[api[1] :]):
        half = ExportLogsServiceRequest()
        rl = half.resource_logs.add()
        rl.resource.CopyFrom(resource.resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(scope.scope)
        sl.log_records.extend(part)
        halves.append(half.SerializeToString())
    return halves


def claude_code_metrics(replayed: bool) -> list[bytes]:
    """The recorded sessions' metric export requests, as Claude Code posted them; `replayed`
    sends them again as two later sessions of the same user (new session ids): delta points of
    new streams that add to the same claude_code_* series (the collector drops session.id)."""
    bodies = []
    for path in METRICS:
        if not replayed:
            bodies.append(path.read_bytes())
            continue
        request = ExportMetricsServiceRequest.FromString(path.read_bytes())
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        for kv in point.attributes:
                            if kv.key == "session.id":
                                kv.value.string_value = str(
                                    uuid.uuid5(uuid.NAMESPACE_URL, kv.value.string_value)
                                )
        bodies.append(request.SerializeToString())
    return bodies


def post(url: str, path: str, body: bytes) -> None:
    resp = httpx.post(url + path, content=body, headers=PROTOBUF, timeout=10)
    assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text}"


def native_cost(prom: str) -> float:
    return scalar(prom, "sum(claude_code_cost_usage_USD_total)") or 0.0


def collector_native_cost(collector: str) -> float:
    """sum(claude_code_cost_usage_USD_total) as the collector exposes it right now."""
    text = httpx.get(collector + "/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "claude_code_cost_usage_USD_total"
    )


@pytest.mark.e2e
def test_every_promql_target_returns_data(tmp_path: Path) -> None:
    assert HOOK.exists(), "hooks/agentwatch_hook.py is missing"
    assert len(METRICS) >= 2, "the recorded Claude Code metric exports are missing"
    # The relay on, to a real OTLP receiver: the relay panels have exports to show.
    receiver = GrpcReceiver().start()
    relay = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    collector = start_collector(tmp_path / "collector", relay)
    (tmp_path / "am").mkdir()
    am = start_alertmanager(tmp_path / "am", alertmanager_to_nobody(f"127.0.0.1:{free_port()}"))
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(yaml.safe_dump(BROKEN_RULE))
    # Prometheus picks its port as it starts: then it is told to scrape itself, by a reload.
    prom = start_prometheus(
        tmp_path,
        prometheus_config(collector.port, free_port(), am.port, broken),
        ["--rules.alert.resend-delay=1s"],
    )
    try:
        (tmp_path / "prometheus.yml").write_text(
            prometheus_config(collector.port, prom.port, am.port, broken)
        )
        assert httpx.post(prom.url + "/-/reload", timeout=10).status_code == 200
        # One scrape before the demo, so counters are seen rising (rate() > 0), not born high.
        wait_until(
            lambda: scalar(prom.url, 'up{job="agentwatch-collector"}') == 1, 30, "first scrape"
        )
        counts = replay(collector.url, quiet=True)
        assert counts.pop("__undelivered_spool_files") == 0, collector.logs()
        resp = httpx.post(
            f"{collector.url}/v1/alerts", json=alertmanager_notification(), timeout=10
        )
        assert resp.status_code < 300, resp.text

        # Claude Code's own telemetry, in two rounds with a scrape between them: series are
        # born in the first and rise in the second.
        first_logs, second_logs = claude_code_logs()
        post(collector.url, "/v1/logs", first_logs)
        for body in claude_code_metrics(replayed=False):
            post(collector.url, "/v1/metrics", body)
        # The collector's own figure, then Prometheus holding it: a scrape between two of the
        # posts above would otherwise be taken for the whole first round.
        once = collector_native_cost(collector.url)
        assert once > 0
        wait_until(
            lambda: native_cost(prom.url) == pytest.approx(once),
            30,
            "Claude Code's metrics scraped",
        )
        wait_until(
            lambda: (
                scalar(prom.url, 'sum(agentwatch_cost_usd_total{cost_source="exact"})') is not None
            ),
            30,
            "Claude Code's exact cost scraped",
        )
        post(collector.url, "/v1/logs", second_logs)
        # A retried export (its answer lost on the way back): stored once, counted as duplicates.
        post(collector.url, "/v1/logs", second_logs)
        for body in claude_code_metrics(replayed=True):
            post(collector.url, "/v1/metrics", body)
        wait_until(
            lambda: native_cost(prom.url) == pytest.approx(2 * once),
            30,
            "the replayed sessions scraped (twice the cost, one set of series)",
        )

        finished = sum(
            1
            for r in load(RECORDING)
            if r["input"]["hook_event_name"] in ("PostToolUse", "PostToolUseFailure")
        )
        wait_until(
            lambda: scalar(prom.url, "sum(agentwatch_tool_calls_total)") == finished,
            30,
            f"{finished} tool calls scraped",
        )
        # A real client's session in the same project, after the demo's series were scraped.
        demo_app = Path(load(RECORDING)[0]["input"]["cwd"]).name
        real_claude_code_session(tmp_path / "claude", collector.url, demo_app)
        wait_until(
            lambda: (scalar(prom.url, "sum(agentwatch_tool_calls_total)") or 0) >= finished + 9,
            60,
            "the real session's tool calls scraped",
        )
        wait_until(
            lambda: (native_cost(prom.url) or 0) > 2 * once,
            60,
            "the real session's own metrics scraped",
        )
        wait_until(
            lambda: (
                (scalar(prom.url, "sum(rate(agentwatch_events_total[1m]))") or 0) > 0
                and (scalar(prom.url, "sum(rate(claude_code_cost_usage_USD_total[1m]))") or 0) > 0
            ),
            30,
            "two scrapes after the demo",
        )
        # increase() needs two samples of the alert series, born after the demo.
        wait_until(
            lambda: (
                (
                    scalar(
                        prom.url, "min(count_over_time(agentwatch_alert_notifications_total[1m]))"
                    )
                    or 0
                )
                >= 2
            ),
            30,
            "two scrapes after the alert notification",
        )

        # The rules: recorded, and the Watchdog firing (the one alert "Firing alerts" leaves out).
        wait_until(
            lambda: (scalar(prom.url, "agentwatch:cost_usd:increase24h") or 0) > 0,
            30,
            "the budget recording rules evaluated",
        )
        wait_until(
            lambda: bool(query(prom.url, 'ALERTS{alertname="Watchdog"}', instant=True)),
            30,
            "the Watchdog firing",
        )
        # Each failure the Health row draws from a real binary, seen rising.
        for failing in (
            "prometheus_rule_evaluation_failures_total",
            "prometheus_notifications_errors_total",
            "alertmanager_notifications_failed_total",
        ):
            rising = f"sum(rate({failing}[1m])) > 0"
            wait_until(lambda q=rising: bool(query(prom.url, q, True)), 60, rising)

        problems = []
        targets = set()
        absent, no_binary = set(), set()
        checked = 0
        for path in DASHBOARDS:
            dashboard = load_dashboard(path)
            for panel in all_panels(dashboard):
                for target in panel.get("targets", []):
                    if target["datasource"]["type"] != "prometheus":
                        continue
                    expr = substitute(target["expr"])
                    where = f"{path.name} / {panel['title']} / {target['refId']}"
                    key = (path.name, panel["title"], target["refId"])
                    targets.add(key)
                    checked += 1
                    try:
                        result = query(prom.url, expr, instant=bool(target.get("instant")))
                    except AssertionError as exc:
                        problems.append(f"{where}: {exc}")
                        continue
                    if any(p in expr for p in NOT_RUN_HERE):
                        no_binary.add(key)
                    if not result and key in no_binary:
                        absent.add(key)
                    elif not result:
                        problems.append(f"{where}: no data for {expr}")
                    elif only_zero_or_nan(result) and key not in EXPECTED_ZERO:
                        problems.append(f"{where}: only 0 or NaN for {expr}")
            for variable in dashboard["templating"]["list"]:
                if variable["type"] != "query":
                    continue
                m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
                assert m, f"{path.name}: ${variable['name']}: unexpected query {variable['query']}"
                metric, label = m.groups()
                values = httpx.get(
                    f"{prom.url}/api/v1/label/{label}/values",
                    params={"match[]": metric},
                    timeout=10,
                ).json()["data"]
                if not values:
                    problems.append(f"{path.name}: ${variable['name']} offers no values")
        assert checked > 50
        # Only the Health row's otel-collector, Loki and Tempo targets came back empty.
        assert absent == no_binary and {file for file, _, _ in absent} == {
            "agentwatch-health.json"
        }, absent
        stale = sorted(set(EXPECTED_ZERO) - targets)
        assert not stale, f"EXPECTED_ZERO names targets that are gone: {stale}"
        assert not problems, "\n".join(problems)
        # Claude Code's metrics come from the collector's job only: nothing counts them twice.
        jobs = query(prom.url, "count by (job) (claude_code_cost_usage_USD_total)", instant=True)
        assert [r["metric"]["job"] for r in jobs] == ["agentwatch-collector"]
    finally:
        prom.stop()
        am.stop()
        collector.stop()
        receiver.stop()
