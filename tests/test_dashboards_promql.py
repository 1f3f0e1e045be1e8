"""Every PromQL target of every dashboard, run against Debian's Prometheus with real data.

The demo session goes through the real hook script into a real collector; Prometheus scrapes the
collector with the repo's own job config (tests/support/promconfig.py). Claude Code's native
metrics come from a small exposition endpoint serving series in the otel-collector Prometheus
exporter's naming, scraped as job otel-collector. Each query must succeed and return data, and
each variable's label_values() must offer values.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.replay import HOOK, RECORDING, load, replay
from tests.support.procs import free_port, start_collector, start_prometheus, wait_until
from tests.support.promconfig import REPO_PROMETHEUS_YML, derive_config
from tests.test_dashboards import DASHBOARDS, all_panels, substitute
from tests.test_dashboards import load as load_dashboard

SCRAPE = "1s"


def native_exposition(n: int) -> str:
    """Claude Code's metrics as the otel-collector's Prometheus exporter names them; they grow
    with every scrape so rate() and increase() have something to show."""
    model = {"model": "claude-sonnet-4-5-20250929"}
    families: dict[str, list[tuple[dict[str, str], float]]] = {
        "claude_code_cost_usage_USD_total": [(model, 0.05 * n)],
        "claude_code_token_usage_tokens_total": [
            ({**model, "type": kind}, per * n)
            for kind, per in (
                ("input", 120),
                ("output", 800),
                ("cacheRead", 9000),
                ("cacheCreation", 700),
            )
        ],
        "claude_code_session_count_total": [({}, 1 + n // 10)],
        "claude_code_lines_of_code_count_total": [
            ({"type": "added"}, 12 * n),
            ({"type": "removed"}, 4 * n),
        ],
        "claude_code_commit_count_total": [({}, n // 3)],
        "claude_code_pull_request_count_total": [({}, n // 5)],
        "claude_code_code_edit_tool_decision_total": [
            ({"tool_name": "Edit", "decision": "accept", "language": "TypeScript"}, 2 * n),
            ({"tool_name": "Write", "decision": "reject", "language": "Python"}, n // 2),
        ],
        "claude_code_active_time_seconds_total": [
            ({"type": "cli"}, 3.5 * n),
            ({"type": "user"}, 1.5 * n),
        ],
    }
    lines = []
    for name, samples in families.items():
        lines.append(f"# TYPE {name} counter")
        for labels, value in samples:
            common = {"service_name": "claude-code", **labels}
            rendered = ",".join(f'{k}="{v}"' for k, v in common.items())
            lines.append(f"{name}{{{rendered}}} {value}")
    return "\n".join(lines) + "\n"


class _Native(BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self) -> None:
        type(self).scrapes += 1
        body = native_exposition(type(self).scrapes).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def native_target() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Native)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


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


@pytest.mark.e2e
def test_every_promql_target_returns_data(tmp_path: Path, native_target: int) -> None:
    assert HOOK.exists(), "hooks/agentwatch_hook.py is missing"
    collector = start_collector(tmp_path / "collector")
    config = derive_config(
        REPO_PROMETHEUS_YML.read_text(),
        {
            "agentwatch-collector": f"127.0.0.1:{collector.port}",
            "otel-collector": f"127.0.0.1:{native_target}",
        },
        alertmanager=None,
        rule_files=[],
        scrape_interval=SCRAPE,
        evaluation_interval=SCRAPE,
    )
    prom = start_prometheus(tmp_path, config)
    try:
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

        problems = []
        checked = 0
        for path in DASHBOARDS:
            dashboard = load_dashboard(path)
            for panel in all_panels(dashboard):
                for target in panel.get("targets", []):
                    if target["datasource"]["type"] != "prometheus":
                        continue
                    expr = substitute(target["expr"])
                    checked += 1
                    try:
                        result = query(prom.url, expr, instant=bool(target.get("instant")))
                    except AssertionError as exc:
                        problems.append(f"{path.name} / {panel['title']}: {exc}")
                        continue
                    if not result:
                        problems.append(f"{path.name} / {panel['title']}: no data for {expr}")
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
        assert not problems, "\n".join(problems)
    finally:
        prom.stop()
        collector.stop()
