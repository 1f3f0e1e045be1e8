"""alerts/alertmanager.yml: Debian's amtool validates it and resolves its routes; receivers,
inhibition and secrets follow the project's rules."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import REPO, require_binary, start_alertmanager, wait_until

CONFIG = REPO / "alerts" / "alertmanager.yml"
COLLECTOR_WEBHOOK = "http://collector:4000/v1/alerts"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("amtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def receivers() -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in config()["receivers"]}


def test_amtool_check_config_passes() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check is strict, so the *_file fields above are ones Alertmanager 0.25 knows."""
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(CONFIG.read_text().replace("api_url_file:", "api_url_path:"))
    result = amtool("check-config", str(bad))
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=AgentwatchCollectorDown", "severity=critical"], "critical"),
        (["alertname=AgentLoopDetected", "severity=warning", "tool=Bash"], "warning"),
        (["alertname=AgentWaitingForInput", "severity=info"], "info"),
        (["alertname=Watchdog", "severity=info"], "watchdog"),
        (["alertname=SomethingElse"], "default"),
    ],
)
def test_routes_by_severity_and_watchdog_apart(labels: list[str], receiver: str) -> None:
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_routed_receivers_notify_the_collector_with_resolved() -> None:
    cfg = config()
    routed = {cfg["route"]["receiver"]} | {r["receiver"] for r in cfg["route"]["routes"]}
    assert routed == {"default", "critical", "warning", "info", "watchdog"}
    for name in routed:
        hooks = receivers()[name]["webhook_configs"]
        assert [h["url"] for h in hooks] == [COLLECTOR_WEBHOOK], name
        # The Watchdog repeats every few minutes: a resolved notification would never come.
        assert all(h["send_resolved"] is (name != "watchdog") for h in hooks), name
    watchdog = next(r for r in cfg["route"]["routes"] if r["receiver"] == "watchdog")
    assert watchdog["matchers"] == ['alertname="Watchdog"']
    assert cfg["route"]["routes"][0] is watchdog


def test_slack_and_email_are_ready_but_unrouted_with_secrets_from_files() -> None:
    recv = receivers()
    slack = recv["slack"]["slack_configs"][0]
    email = recv["email"]["email_configs"][0]
    assert slack["api_url_file"].startswith("/etc/alertmanager/config/secrets/")
    assert email["auth_password_file"].startswith("/etc/alertmanager/config/secrets/")
    text = CONFIG.read_text()
    for inline_secret in ("api_url:", "auth_password:", "auth_secret:", "slack_api_url:"):
        assert inline_secret not in text
    routed = {r["receiver"] for r in config()["route"]["routes"]}
    assert not routed & {"slack", "email"}


def test_critical_inhibits_warning_and_info_of_the_same_alert() -> None:
    rule = config()["inhibit_rules"][0]
    assert rule["source_matchers"] == ['severity="critical"']
    assert rule["target_matchers"] == ['severity=~"warning|info"']
    assert "alertname" in rule["equal"] and "severity" not in rule["equal"]


@pytest.mark.e2e
def test_alertmanager_inhibits_the_warning_while_the_critical_fires(tmp_path: Path) -> None:
    """Debian's Alertmanager with this config: the 97 % disk alert hides the 90 % one for the
    same disk, not the one for another disk."""
    am = start_alertmanager(
        tmp_path, CONFIG.read_text().replace(COLLECTOR_WEBHOOK, "http://127.0.0.1:9/")
    )
    try:
        common = {"alertname": "AgentwatchHostDiskUsageHigh", "instance": "collector:4000"}
        alerts = [
            {"labels": {**common, "path": "/data", "severity": "critical"}},
            {"labels": {**common, "path": "/data", "severity": "warning"}},
            {"labels": {**common, "path": "/other", "severity": "warning"}},
        ]
        r = httpx.post(am.url + "/api/v2/alerts", json=alerts, timeout=5)
        assert r.status_code == 200, r.text

        def states() -> dict[tuple[str, str], str]:
            got = httpx.get(am.url + "/api/v2/alerts", timeout=5).json()
            return {
                (a["labels"]["path"], a["labels"]["severity"]): a["status"]["state"] for a in got
            }

        expected = {
            ("/data", "critical"): "active",
            ("/data", "warning"): "suppressed",
            ("/other", "warning"): "active",
        }
        wait_until(lambda: states() == expected, 15, "inhibition applied")
    finally:
        am.stop()
