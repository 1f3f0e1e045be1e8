"""The alert path end to end with the real binaries on 127.0.0.1: the collector, Debian's
Prometheus loading alerts/*.rules.yml with a config derived from prometheus/prometheus.yml, and
Debian's Alertmanager loading alerts/alertmanager.yml with its webhook pointed at the collector.

Test-only changes, all in temp copies: scrape and evaluation every second, Prometheus's
resend-delay 1s, Alertmanager's group_wait 1s and group_interval 5s, and the `for:` of the two alerts under test
(AgentLoopDetected, AgentwatchCollectorDown) cut to FOR_SECONDS, since the shipped minutes would
make the test slow. Expressions, labels, routes and receivers are the shipped ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.db import PAYLOAD_TEXT, connect
from tests.support.procs import (
    REPO,
    Proc,
    start_alertmanager,
    start_collector,
    start_prometheus,
    wait_until,
)
from tests.support.promconfig import derive_config
from tests.test_alert_rules import agent_session, post_events

pytestmark = pytest.mark.e2e

FOR_SECONDS = 3
UNDER_TEST = {"AgentLoopDetected", "AgentwatchCollectorDown"}
SHIPPED_WEBHOOK = "http://collector:4000/v1/alerts"


def rule_copies(tmp: Path) -> list[str]:
    """alerts/*.rules.yml copied with a short `for:` on the alerts under test."""
    out = tmp / "rules"
    out.mkdir()
    paths = []
    for src in sorted((REPO / "alerts").glob("*.rules.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") in UNDER_TEST:
                    rule["for"] = f"{FOR_SECONDS}s"
        dst = out / src.name
        dst.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(str(dst))
    return paths


def alertmanager_config(collector_url: str) -> str:
    text = (REPO / "alerts" / "alertmanager.yml").read_text()
    assert SHIPPED_WEBHOOK in text and "group_wait: 10s" in text and "group_interval: 1m" in text
    text = text.replace(SHIPPED_WEBHOOK, collector_url + "/v1/alerts")
    return text.replace("group_wait: 10s", "group_wait: 1s").replace(
        "group_interval: 1m", "group_interval: 5s"
    )


def notifications(collector: Proc, alertname: str, status: str) -> float:
    text = httpx.get(collector.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "agentwatch_alert_notifications_total"
                and s.labels.get("alertname") == alertname
                and s.labels.get("status") == status
            ):
                return s.value
    return 0.0


def prometheus_alerts(prom: Proc, alertname: str) -> list[dict[str, Any]]:
    data = httpx.get(prom.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in data if a["labels"]["alertname"] == alertname]


def alertmanager_alerts(am: Proc) -> set[str]:
    got = httpx.get(am.url + "/api/v2/alerts", params={"active": "true"}, timeout=5).json()
    return {a["labels"]["alertname"] for a in got}


def firing(prom: Proc, alertname: str) -> bool:
    return any(a["state"] == "firing" for a in prometheus_alerts(prom, alertname))


def stored_alert_payloads(db: Path, alertname: str) -> list[str]:
    with connect(db) as conn:
        rows = conn.execute(
            f"SELECT {PAYLOAD_TEXT} FROM events "
            "WHERE hook_event = 'AlertNotification' AND tool_name = ?",
            (alertname,),
        ).fetchall()
    return [r[0] for r in rows]


def test_loop_alert_is_delivered_and_collector_down_fires_and_resolves(tmp_path: Path) -> None:
    db = tmp_path / "agentwatch.db"
    collector = start_collector(tmp_path, db=db)
    am = start_alertmanager(tmp_path, alertmanager_config(collector.url))
    prom_config = derive_config(
        (REPO / "prometheus" / "prometheus.yml").read_text(),
        {"agentwatch-collector": f"127.0.0.1:{collector.port}"},
        alertmanager=f"127.0.0.1:{am.port}",
        rule_files=rule_copies(tmp_path),
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    # Alerts evaluated before Prometheus has discovered Alertmanager are dropped and re-sent only
    # after resend-delay (1m by default): re-send every second here.
    prom = start_prometheus(tmp_path, prom_config, ["--rules.alert.resend-delay=1s"])
    try:
        # The Watchdog proves the whole path before anything else is asserted.
        wait_until(lambda: notifications(collector, "Watchdog", "firing") >= 1, 30, "Watchdog")
        assert notifications(collector, "AgentLoopDetected", "firing") == 0

        # A session where the agent runs the same Bash command 7 times in a row.
        start = time.monotonic()
        post_events(collector.url, agent_session(loop_calls=7))
        wait_until(
            lambda: notifications(collector, "AgentLoopDetected", "firing") >= 1,
            60,
            "AgentLoopDetected delivered to /v1/alerts",
        )
        loop_latency = time.monotonic() - start
        stored = stored_alert_payloads(db, "AgentLoopDetected")
        assert stored and '"tool":"Bash"' in stored[0] and '"status":"firing"' in stored[0]
        print(
            f"AgentLoopDetected: loop posted -> notification stored in {loop_latency:.1f}s "
            f"({loop_latency - FOR_SECONDS:.1f}s beyond for: {FOR_SECONDS}s; scrape and "
            "evaluation 1s, group_wait 1s)"
        )

        # The collector goes away: its down alert fires in Prometheus.
        collector.stop()
        start = time.monotonic()
        wait_until(
            lambda: firing(prom, "AgentwatchCollectorDown"), 60, "AgentwatchCollectorDown firing"
        )
        down_latency = time.monotonic() - start
        (alert,) = prometheus_alerts(prom, "AgentwatchCollectorDown")
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == f"127.0.0.1:{collector.port}"
        assert alert["annotations"]["runbook_url"].endswith("runbooks/AgentwatchCollectorDown.md")
        print(
            f"AgentwatchCollectorDown: collector stopped -> firing in {down_latency:.1f}s "
            f"({down_latency - FOR_SECONDS:.1f}s beyond for: {FOR_SECONDS}s)"
        )

        # Prometheus hands it to Alertmanager (which cannot deliver it: its receiver is down).
        wait_until(
            lambda: "AgentwatchCollectorDown" in alertmanager_alerts(am),
            30,
            "AgentwatchCollectorDown in Alertmanager",
        )

        # It comes back on the same port: the alert resolves. (Whether Alertmanager then sends a
        # resolved notification depends on a firing one having got through first, which the
        # outage may have prevented, so that is not asserted.)
        collector = start_collector(tmp_path, port=collector.port, db=db)
        wait_until(
            lambda: not prometheus_alerts(prom, "AgentwatchCollectorDown"),
            60,
            "AgentwatchCollectorDown resolved",
        )
    finally:
        for proc in (prom, am, collector):
            proc.stop()
