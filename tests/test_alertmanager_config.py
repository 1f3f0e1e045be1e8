"""alerts/alertmanager.yml and its rendering from .env (scripts/init_env.py): Debian's amtool
validates the template and every rendering and resolves the routes of every shipped alert;
Debian's Alertmanager runs the rendered config against local stand-ins for the collector and
Slack, and applies the inhibitions."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import REPO, Proc, require_binary, start_alertmanager, wait_until
from tests.test_alert_rules import alert_rules

CONFIG = REPO / "alerts" / "alertmanager.yml"
INIT_ENV = REPO / "scripts" / "init_env.py"
COLLECTOR_WEBHOOK = "http://collector:4000/v1/alerts"
SECRETS_MOUNT = "/etc/alertmanager/secrets"
# The naming convention the audience routes rely on (Agentwatch... is not Agent[A-Z]...).
STACK = r"Agentwatch[A-Z][A-Za-z0-9]*"
AGENTS = r"Agent[A-Z][A-Za-z0-9]*"
HUMAN = {"page", "stack-chat", "agents-chat"}
# Every channel .env can turn on, with what each needs.
FULL_ENV = {
    "AGENTWATCH_TOKEN": "collector-token-for-tests",
    "ALERT_SLACK_STACK_WEBHOOK_URL": "https://hooks.slack.test/services/T0/B0/stack",
    "ALERT_SLACK_AGENTS_WEBHOOK_URL": "https://hooks.slack.test/services/T0/B0/agents",
    "ALERT_EMAIL_TO": "oncall@example.test",
    "ALERT_EMAIL_FROM": "agentwatch@example.test",
    "ALERT_SMTP_SMARTHOST": "smtp.example.test:587",
    "ALERT_SMTP_USERNAME": "agentwatch",
    "ALERT_SMTP_PASSWORD": "smtp-password-for-tests",
    "ALERT_WEBHOOK_URL": "https://ntfy.example.test/agentwatch?tpl=1&m={{.commonAnnotations.summary}}",
    "ALERT_WEBHOOK_TOKEN": "tk_for_tests",
    "ALERT_DEADMANS_SWITCH_URL": "https://hc-ping.example.test/0f1e2d3c",
}
SECRET_VARS = {
    "AGENTWATCH_TOKEN": "agentwatch_token",
    "ALERT_SLACK_STACK_WEBHOOK_URL": "slack_stack_webhook_url",
    "ALERT_SLACK_AGENTS_WEBHOOK_URL": "slack_agents_webhook_url",
    "ALERT_SMTP_PASSWORD": "smtp_password",
    "ALERT_WEBHOOK_TOKEN": "webhook_token",
}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("amtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return data


def receivers(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in cfg["receivers"]}


def integrations(cfg: dict[str, Any]) -> dict[str, set[str]]:
    """Receiver -> the kinds of integration it has (slack, email, webhook)."""
    return {
        name: {k.removesuffix("_configs") for k in r if k.endswith("_configs")}
        for name, r in receivers(cfg).items()
    }


def render(
    tmp: Path,
    env: dict[str, str],
    secrets_path: str | None = None,
    shell: dict[str, str] | None = None,
) -> Path:
    """`scripts/init_env.py` as `make up` runs it, on a .env with exactly these values; returns
    the output directory (alerts/secrets/alertmanager/ in the checkout)."""
    env_file = tmp / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    out = tmp / "secrets" / "alertmanager"
    result = subprocess.run(
        [sys.executable, str(INIT_ENV), "--env", str(env_file), "--out", str(out),
         "--secrets-path", secrets_path or SECRETS_MOUNT],
        capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ["PATH"], **(shell or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def rendered(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((out / "alertmanager.yml").read_text())
    return data


# --- a stand-in for the collector's and Slack's webhooks -------------------------------------


class Recorder:
    """An HTTP server on 127.0.0.1 that answers 200 and keeps every POST (path, headers, JSON)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append((self.path, dict(self.headers), json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[tuple[dict[str, str], Any]]:
        return [(h, body) for p, h, body in list(self.requests) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    try:
        yield r
    finally:
        r.close()


def alertmanager_metric(am: Proc, name: str, **labels: str) -> float:
    """Sum of one Alertmanager metric's samples whose labels include these."""
    total = 0.0
    for line in httpx.get(am.url + "/metrics", timeout=5).text.splitlines():
        found = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if not found or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found.group(3))
    return total


# --- the template -----------------------------------------------------------------------------


def test_amtool_check_config_passes() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check is strict, so the *_file fields used here are ones Alertmanager 0.25 knows."""
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(CONFIG.read_text().replace("api_url_file:", "api_url_path:"))
    result = amtool("check-config", str(bad))
    assert result.returncode != 0


def test_no_secret_is_written_in_the_template() -> None:
    """Secrets come from .env through files; the template only shows example values."""
    text = CONFIG.read_text()
    for inline in ("api_url:", "auth_password:", "auth_secret:", "slack_api_url:", "credentials:"):
        assert inline not in text
    for line in text.splitlines():
        if "_file:" in line:
            assert f"{SECRETS_MOUNT}/" in line and "# ${" in line, line
    for var in SECRET_VARS:
        assert FULL_ENV[var] not in text


def test_every_alert_follows_the_audience_naming_convention() -> None:
    """The routes tell the audience from the name: Agentwatch<Something> for the stack itself,
    Agent<Something> for agent behaviour; the Watchdog is the one exception."""
    rules = alert_rules()
    assert rules
    for alert in rules:
        assert (
            re.fullmatch(STACK, alert.name)
            or re.fullmatch(AGENTS, alert.name)
            or alert.name == "Watchdog"
        ), f"{alert.name}: name it Agentwatch<Something> (the stack) or Agent<Something> (agents)"
    routes = config()["route"]["routes"]
    matchers = [m for r in routes for m in r.get("matchers", [])]
    assert f'alertname=~"{STACK}"' in matchers and f'alertname=~"{AGENTS}"' in matchers


def expected_receivers(name: str, severity: str) -> list[str]:
    if name == "Watchdog":
        return ["watchdog"]
    out = ["collector"]
    if severity == "critical":
        out.append("page")
    if severity in {"critical", "warning"}:
        out.append("stack-chat" if re.fullmatch(STACK, name) else "agents-chat")
    return out


def test_every_shipped_alert_reaches_the_collector_and_its_audience() -> None:
    """amtool resolves the routes of every alert rule with its own labels: all reach the
    collector; warning and critical reach their audience's Slack; critical also pages; info
    and the Watchdog reach no person."""
    seen = set()
    for alert in alert_rules():
        labels = (alert.name, alert.severity)
        if labels in seen:
            continue
        seen.add(labels)
        want = ",".join(expected_receivers(*labels))
        result = amtool(
            "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={want}",
            f"alertname={alert.name}", f"severity={alert.severity}",
        )  # fmt: skip
        assert result.returncode == 0, (labels, result.stdout + result.stderr)
        assert result.stdout.strip() == want, labels
    assert ("Watchdog", "none") in seen


@pytest.mark.parametrize(
    ("labels", "want"),
    [
        (["alertname=AgentwatchCollectorDown", "severity=critical"], "collector,page,stack-chat"),
        (["alertname=AgentwatchRelayLagHigh", "severity=warning"], "collector,stack-chat"),
        (["alertname=AgentCostBudgetExceeded", "severity=warning"], "collector,agents-chat"),
        (["alertname=AgentRunawaySpend", "severity=critical"], "collector,page,agents-chat"),
        (["alertname=AgentLoopDetected", "severity=info", "tool=Bash"], "collector"),
        (["alertname=Watchdog", "severity=none"], "watchdog"),
        (["alertname=SomethingElse"], "collector"),
    ],
)
def test_routes_by_severity_and_audience(labels: list[str], want: str) -> None:
    result = amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={want}",
        *labels,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == want


def test_the_watchdog_is_routed_first_and_never_resolves() -> None:
    routes = config()["route"]["routes"]
    assert routes[0]["matchers"] == ['alertname="Watchdog"'] and routes[0]["receiver"] == "watchdog"
    assert "continue" not in routes[0]
    hooks = receivers(config())["watchdog"]["webhook_configs"]
    assert hooks[0]["url"] == COLLECTOR_WEBHOOK
    assert all(h["send_resolved"] is False for h in hooks)
    collector = receivers(config())["collector"]["webhook_configs"]
    assert [h["url"] for h in collector] == [COLLECTOR_WEBHOOK] and collector[0]["send_resolved"]


def test_inhibitions() -> None:
    rules = {tuple(r["source_matchers"]): r for r in config()["inhibit_rules"]}
    same = rules[('severity="critical"',)]
    assert same["target_matchers"] == ['severity=~"warning|info"']
    assert "alertname" in same["equal"] and "severity" not in same["equal"]
    otel = rules[('alertname="AgentwatchOtelCollectorDown"',)]
    assert otel["target_matchers"] == ['alertname=~"AgentwatchRelay.*"']
    # Different jobs and instances: only the stack's external labels can be equal.
    assert not {"job", "instance"} & set(otel["equal"])
    collector = rules[('alertname="AgentwatchCollectorDown"',)]
    assert collector["target_matchers"] == [
        'alertname="AgentwatchAlertmanagerNotificationsFailing"',
        'integration="webhook"',
    ]
    assert not {"job", "instance"} & set(collector["equal"])
    disk = rules[('alertname="AgentwatchHostDiskUsageHigh"', 'severity="critical"')]
    assert disk["target_matchers"] == ['alertname=~"AgentwatchDataDiskFillingUp.*"']
    assert disk["equal"] == ["instance", "path"]
    # The labels an inhibition compares are ones its alerts carry (from the expressions).
    by_name = {a.name: a for a in alert_rules()}
    for name in ("AgentwatchHostDiskUsageHigh", "AgentwatchDataDiskFillingUp"):
        assert "agentwatch_host_disk_utilization_ratio" in by_name[name].expr, name
    failing = by_name["AgentwatchAlertmanagerNotificationsFailing"].expr
    stack_rules = (REPO / "alerts" / "stack.rules.yml").read_text()
    assert failing.startswith("integration:alertmanager_notifications_failed:increase15m")
    assert "sum by (job, instance, integration)" in stack_rules  # the label it is matched on
    # The equal labels are external labels, which Prometheus puts on every alert it sends.
    external = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]
    for rule in (otel, collector):
        assert set(rule["equal"]) <= set(external["external_labels"]), rule


# --- rendering from .env ----------------------------------------------------------------------


def test_nothing_configured_renders_only_the_collector(tmp_path: Path) -> None:
    out = render(tmp_path, {})
    cfg = rendered(out)
    assert amtool("check-config", str(out / "alertmanager.yml")).returncode == 0
    assert integrations(cfg) == {
        "collector": {"webhook"}, "watchdog": {"webhook"},
        "page": set(), "stack-chat": set(), "agents-chat": set(),
    }  # fmt: skip
    # No token: no authorization at all (an empty credentials file would send "Bearer ").
    assert "http_config" not in receivers(cfg)["collector"]["webhook_configs"][0]
    assert sorted(p.name for p in out.iterdir()) == ["alertmanager.yml"]
    # The routing tree is the template's.
    assert cfg["route"] == config()["route"] and cfg["inhibit_rules"] == config()["inhibit_rules"]


def test_everything_configured_renders_every_channel_with_secrets_in_files(
    tmp_path: Path,
) -> None:
    out = render(tmp_path, FULL_ENV)
    text = (out / "alertmanager.yml").read_text()
    check = amtool("check-config", str(out / "alertmanager.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    cfg = rendered(out)
    assert integrations(cfg) == {
        "collector": {"webhook"}, "watchdog": {"webhook"},
        "page": {"email", "webhook"}, "stack-chat": {"slack"}, "agents-chat": {"slack"},
    }  # fmt: skip
    recv = receivers(cfg)
    token_file = f"{SECRETS_MOUNT}/agentwatch_token"
    for name in ("collector", "watchdog"):
        hook = recv[name]["webhook_configs"][0]
        assert hook["url"] == COLLECTOR_WEBHOOK
        assert hook["http_config"]["authorization"] == {"credentials_file": token_file}
    assert recv["watchdog"]["webhook_configs"][1]["url"] == FULL_ENV["ALERT_DEADMANS_SWITCH_URL"]
    email = recv["page"]["email_configs"][0]
    assert (email["to"], email["from"], email["smarthost"], email["auth_username"]) == (
        "oncall@example.test", "agentwatch@example.test", "smtp.example.test:587", "agentwatch",
    )  # fmt: skip
    assert email["auth_password_file"] == f"{SECRETS_MOUNT}/smtp_password"
    assert recv["page"]["webhook_configs"][0]["url"] == FULL_ENV["ALERT_WEBHOOK_URL"]
    slack = recv["stack-chat"]["slack_configs"][0]
    assert slack["api_url_file"] == f"{SECRETS_MOUNT}/slack_stack_webhook_url"
    # Secrets: only in their files, never in the rendered config.
    for var, name in SECRET_VARS.items():
        assert (out / name).read_text() == FULL_ENV[var], name
        assert FULL_ENV[var] not in text, var
    # alerts/secrets/ is owner-only; what the container reads is readable by its user (nobody).
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"ALERT_SLACK_STACK_WEBHOOK_URL": "https://h.test/s"}, {"stack-chat": {"slack"}}),
        ({"ALERT_SLACK_AGENTS_WEBHOOK_URL": "https://h.test/a"}, {"agents-chat": {"slack"}}),
        ({"ALERT_WEBHOOK_URL": "https://ntfy.test/t"}, {"page": {"webhook"}}),
        # E-mail needs all three; with one missing it is left out, not sent half-configured.
        ({"ALERT_EMAIL_TO": "a@x.test", "ALERT_EMAIL_FROM": "b@x.test"}, {}),
        (
            {"ALERT_EMAIL_TO": "a@x.test", "ALERT_EMAIL_FROM": "b@x.test",
             "ALERT_SMTP_SMARTHOST": "relay.x.test:25"},
            {"page": {"email"}},
        ),
    ],
)  # fmt: skip
def test_each_channel_turns_on_alone(
    tmp_path: Path, env: dict[str, str], want: dict[str, set[str]]
) -> None:
    out = render(tmp_path, env)
    assert amtool("check-config", str(out / "alertmanager.yml")).returncode == 0
    got = {k: v for k, v in integrations(rendered(out)).items() if k in HUMAN and v}
    assert got == want
    if "page" in want and "email" in want["page"]:
        email = receivers(rendered(out))["page"]["email_configs"][0]
        assert "auth_username" not in email and "auth_password_file" not in email


def test_a_secret_removed_from_env_is_removed_and_the_shell_wins(tmp_path: Path) -> None:
    out = render(tmp_path, FULL_ENV)
    assert (out / "slack_stack_webhook_url").exists()
    # As compose does, the shell's environment overrides .env.
    render(tmp_path, {"AGENTWATCH_TOKEN": "from-dotenv"}, shell={"AGENTWATCH_TOKEN": "from-shell"})
    assert sorted(p.name for p in out.iterdir()) == ["agentwatch_token", "alertmanager.yml"]
    assert (out / "agentwatch_token").read_text() == "from-shell"


def test_dotenv_values_are_read_as_compose_reads_them(tmp_path: Path) -> None:
    env_file = tmp_path / "quoted.env"
    env_file.write_text(
        "# a comment\n"
        "ALERT_SLACK_STACK_WEBHOOK_URL='https://h.test/quoted # not a comment'\n"
        "export ALERT_SLACK_AGENTS_WEBHOOK_URL=https://h.test/a#frag  # a comment\n"
    )
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(INIT_ENV), "--env", str(env_file), "--out", str(out)],
        check=True, capture_output=True, timeout=30, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert (out / "slack_stack_webhook_url").read_text() == "https://h.test/quoted # not a comment"
    assert (out / "slack_agents_webhook_url").read_text() == "https://h.test/a#frag"


# --- the real Alertmanager --------------------------------------------------------------------


def post_alerts(am: Proc, alerts: list[dict[str, Any]]) -> None:
    r = httpx.post(am.url + "/api/v2/alerts", json=alerts, timeout=5)
    assert r.status_code == 200, r.text


def fast(config_text: str) -> str:
    """Test-only timings: every group_wait 1s, group_interval 5s."""
    text = re.sub(r"group_wait: \w+", "group_wait: 1s", config_text)
    return re.sub(r"group_interval: \w+", "group_interval: 5s", text)


@pytest.mark.e2e
def test_unconfigured_receivers_notify_nobody_and_fail_nothing(tmp_path: Path) -> None:
    """The config `make up` renders from an empty .env, in Debian's Alertmanager: a critical
    stack alert reaches the collector stand-in, and no integration fails or retries."""
    out = render(tmp_path, {})
    with recorder() as collector:
        text = (out / "alertmanager.yml").read_text().replace(COLLECTOR_WEBHOOK, collector.url)
        am = start_alertmanager(tmp_path, fast(text))
        try:
            post_alerts(am, [{"labels": {"alertname": "AgentwatchCollectorDown",
                                         "severity": "critical", "instance": "collector:4000"}}])  # fmt: skip
            wait_until(lambda: collector.posts("/"), 30, "the alert at the collector stand-in")
            # The page and chat routes matched it (amtool above); they just have no integration.
            wait_until(
                lambda: alertmanager_metric(am, "alertmanager_notifications_total") >= 1, 15,
                "the notification counted",
            )  # fmt: skip
            assert alertmanager_metric(am, "alertmanager_notifications_failed_total") == 0
            for kind in ("slack", "email"):
                assert (
                    alertmanager_metric(am, "alertmanager_notifications_total", integration=kind)
                    == 0
                )
            assert "level=error" not in am.logs()
        finally:
            am.stop()


@pytest.mark.e2e
def test_alertmanager_applies_the_inhibitions(tmp_path: Path) -> None:
    """Debian's Alertmanager with this config: the 97 % disk alert hides the 90 % one and the
    fill-up forecasts for the same disk, not for another disk; the otel-collector down alert
    hides the relay alerts; the collector down alert (its absent() form: no instance) hides
    failed webhook notifications, not failed e-mails."""
    out = render(tmp_path, {})
    text = (out / "alertmanager.yml").read_text().replace(COLLECTOR_WEBHOOK, "http://127.0.0.1:9/")
    am = start_alertmanager(tmp_path, text)
    try:
        disk = {"instance": "collector:4000", "job": "agentwatch-collector"}
        stack = {"monitor": "agentwatch", "environment": "local"}

        def alert(name: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, **stack, **labels}}

        alerts = [
            alert("AgentwatchHostDiskUsageHigh", **disk, path="/data", severity="critical"),
            alert("AgentwatchHostDiskUsageHigh", **disk, path="/data", severity="warning"),
            alert("AgentwatchHostDiskUsageHigh", **disk, path="/other", severity="warning"),
            alert("AgentwatchDataDiskFillingUp", **disk, path="/data", severity="warning"),
            alert("AgentwatchDataDiskFillingUpFast", **disk, path="/data", severity="critical"),
            alert("AgentwatchDataDiskFillingUp", **disk, path="/other", severity="warning"),
            alert("AgentwatchOtelCollectorDown", job="otel-collector",
                  instance="otel-collector:8888", severity="warning"),
            alert("AgentwatchRelayLagHigh", **disk, severity="warning"),
            alert("AgentwatchRelayCircuitOpen", **disk, severity="warning"),
            alert("AgentwatchStoreWriteErrors", **disk, severity="warning"),
            alert("AgentwatchCollectorDown", job="agentwatch-collector", severity="critical"),
            alert("AgentwatchAlertmanagerNotificationsFailing", job="alertmanager",
                  instance="alertmanager:9093", integration="webhook", severity="warning"),
            alert("AgentwatchAlertmanagerNotificationsFailing", job="alertmanager",
                  instance="alertmanager:9093", integration="email", severity="warning"),
        ]  # fmt: skip
        post_alerts(am, alerts)

        def states() -> dict[tuple[str, str, str], str]:
            got = httpx.get(am.url + "/api/v2/alerts", timeout=5).json()
            return {
                (a["labels"]["alertname"],
                 a["labels"].get("path", a["labels"].get("integration", "")),
                 a["labels"]["severity"]): a["status"]["state"]
                for a in got
            }  # fmt: skip

        expected = {
            ("AgentwatchHostDiskUsageHigh", "/data", "critical"): "active",
            ("AgentwatchHostDiskUsageHigh", "/data", "warning"): "suppressed",
            ("AgentwatchHostDiskUsageHigh", "/other", "warning"): "active",
            ("AgentwatchDataDiskFillingUp", "/data", "warning"): "suppressed",
            ("AgentwatchDataDiskFillingUpFast", "/data", "critical"): "suppressed",
            ("AgentwatchDataDiskFillingUp", "/other", "warning"): "active",
            ("AgentwatchOtelCollectorDown", "", "warning"): "active",
            ("AgentwatchRelayLagHigh", "", "warning"): "suppressed",
            ("AgentwatchRelayCircuitOpen", "", "warning"): "suppressed",
            ("AgentwatchStoreWriteErrors", "", "warning"): "active",
            ("AgentwatchCollectorDown", "", "critical"): "active",
            ("AgentwatchAlertmanagerNotificationsFailing", "webhook", "warning"): "suppressed",
            ("AgentwatchAlertmanagerNotificationsFailing", "email", "warning"): "active",
        }
        wait_until(lambda: states() == expected, 15, "inhibitions applied")
    finally:
        am.stop()
