"""The alert path end to end with the real binaries on 127.0.0.1: the collector (requiring a
token), Debian's Prometheus loading alerts/*.rules.yml with a config derived from
prometheus/prometheus.yml, and Debian's Alertmanager loading the config `make up` renders from
alerts/alertmanager.yml and a .env (scripts/init_env.py) that sets AGENTWATCH_TOKEN and the human
receivers, pointed at local stand-ins: Slack's incoming webhooks and a generic webhook.

Test-only changes, all in temp copies: scrape and evaluation every second, Prometheus's
resend-delay 1s, Alertmanager's group_wait 1s and group_interval 5s, the `for:` of the two alerts
under test (AgentLoopDetected, AgentwatchCollectorDown) cut to FOR_SECONDS, since the shipped
minutes would make the test slow, and the collector's address. Expressions, labels, routes,
receivers and the token's credentials file are the shipped ones.
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
from tests.test_alert_rules import agent_session
from tests.test_alertmanager_config import Recorder, fast, render

pytestmark = pytest.mark.e2e

FOR_SECONDS = 3
UNDER_TEST = {"AgentLoopDetected", "AgentwatchCollectorDown"}
SHIPPED_WEBHOOK = "http://collector:4000/v1/alerts"
TOKEN = "e2e-collector-token"


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


def alertmanager_config(tmp: Path, collector_url: str, people: Recorder) -> str:
    """What `make up` renders from a .env with the token and every webhook-based human
    receiver set, with the secret files where this Alertmanager can read them."""
    env = {
        "AGENTWATCH_TOKEN": TOKEN,
        "ALERT_SLACK_STACK_WEBHOOK_URL": people.url + "/slack/stack",
        "ALERT_SLACK_AGENTS_WEBHOOK_URL": people.url + "/slack/agents",
        "ALERT_WEBHOOK_URL": people.url + "/page",
    }
    out = tmp / "secrets" / "alertmanager"
    render(tmp, env, secrets_path=str(out))
    assert (out / "agentwatch_token").read_text() == TOKEN
    text = (out / "alertmanager.yml").read_text()
    assert text.count(SHIPPED_WEBHOOK) == 2  # the collector and the Watchdog receivers
    return fast(text.replace(SHIPPED_WEBHOOK, collector_url + "/v1/alerts"))


def post_events(url: str, envelopes: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(url + "/v1/events", json=envelopes, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(envelopes), r.text


def slack_messages(people: Recorder, path: str, alertname: str, status: str) -> list[Any]:
    """Slack incoming-webhook payloads (attachments with title and text) about this alert."""
    return [
        body
        for _, body in people.posts(path)
        for a in body.get("attachments", [])
        if alertname in a.get("title", "") and f"[{status.upper()}]" in a["title"]
    ]


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


def scraped(prom: Proc, job: str) -> bool:
    query = f'up{{job="{job}"}} == 1'
    got = httpx.get(prom.url + "/api/v1/query", params={"query": query}, timeout=5).json()
    return bool(got["data"]["result"])


def rules_loaded(prom: Proc) -> bool:
    got = httpx.get(prom.url + "/api/v1/rules", timeout=5).json()
    return bool(got["data"]["groups"])


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


def test_alerts_reach_the_token_protected_collector_and_collector_down_reaches_people(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agentwatch.db"
    collector_env = {"AGENTWATCH_TOKEN": TOKEN}
    collector = start_collector(tmp_path, collector_env, db=db)
    procs = [collector]
    people = Recorder()
    try:
        # The collector really refuses alerts without the token: the credentials file is what
        # makes every delivery below succeed.
        unsigned = httpx.post(collector.url + "/v1/alerts", json={"alerts": []}, timeout=5)
        assert unsigned.status_code == 401
        am = start_alertmanager(tmp_path, alertmanager_config(tmp_path, collector.url, people))
        procs.append(am)

        def prom_config(rule_files: list[str]) -> str:
            return derive_config(
                (REPO / "prometheus" / "prometheus.yml").read_text(),
                {"agentwatch-collector": f"127.0.0.1:{collector.port}"},
                alertmanager=f"127.0.0.1:{am.port}",
                rule_files=rule_files,
                scrape_interval="1s",
                evaluation_interval="1s",
            )

        # Alerts evaluated before Prometheus has discovered Alertmanager are dropped and re-sent
        # only after resend-delay (1m by default): re-send every second here.
        prom = start_prometheus(tmp_path, prom_config([]), ["--rules.alert.resend-delay=1s"])
        procs.append(prom)
        # The rules only once the collector has been scraped: Prometheus applies discovered
        # targets at most every 5 s, and until then `up` is absent, which the down alert's
        # absent() half (rightly) counts as down -- longer than this test's short `for:`, not
        # the shipped 1m.
        wait_until(lambda: scraped(prom, "agentwatch-collector"), 30, "collector scraped")
        (tmp_path / "prometheus.yml").write_text(prom_config(rule_copies(tmp_path)))
        assert httpx.post(prom.url + "/-/reload", timeout=10).status_code == 200
        wait_until(lambda: rules_loaded(prom), 30, "rules loaded")

        # The Watchdog proves the whole path, token included, before anything else is asserted.
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
        # Neither agent behaviour nor the Watchdog reaches the stack's channel or the pager.
        assert not people.posts("/slack/stack") and not people.posts("/page")

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

        # While the collector is down, people hear about it: the stack's Slack channel (Slack's
        # incoming-webhook payload) and the page webhook (Alertmanager's JSON), not the agents'.
        wait_until(
            lambda: slack_messages(people, "/slack/stack", "AgentwatchCollectorDown", "firing"),
            30,
            "AgentwatchCollectorDown in the stack's Slack",
        )
        slack_latency = time.monotonic() - start
        message = slack_messages(people, "/slack/stack", "AgentwatchCollectorDown", "firing")[0]
        (attachment,) = message["attachments"]
        assert attachment["title"] == "[FIRING] AgentwatchCollectorDown (critical)"
        assert attachment["color"] == "danger"
        assert alert["annotations"]["summary"] in attachment["text"]
        assert alert["annotations"]["runbook_url"] in attachment["text"]
        wait_until(lambda: people.posts("/page"), 30, "AgentwatchCollectorDown paged")
        page = people.posts("/page")[0][1]
        assert page["status"] == "firing" and page["receiver"] == "page"
        assert [a["labels"]["alertname"] for a in page["alerts"]] == ["AgentwatchCollectorDown"]
        assert not slack_messages(people, "/slack/agents", "AgentwatchCollectorDown", "firing")
        assert collector.proc.poll() is not None, "the collector was down all along"
        print(f"AgentwatchCollectorDown: collector stopped -> Slack in {slack_latency:.1f}s")

        # It comes back on the same port: the alert resolves, and the channel that was told it
        # fired is told it resolved.
        collector = start_collector(tmp_path, collector_env, port=collector.port, db=db)
        procs.append(collector)
        wait_until(
            lambda: not prometheus_alerts(prom, "AgentwatchCollectorDown"),
            60,
            "AgentwatchCollectorDown resolved",
        )
        wait_until(
            lambda: slack_messages(people, "/slack/stack", "AgentwatchCollectorDown", "resolved"),
            30,
            "the resolved message in the stack's Slack",
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
        people.close()
