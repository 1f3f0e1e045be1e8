"""The Prometheus rules in alerts/: promtool checks and unit tests, conventions, coverage of the
promtool tests, and that every metric a rule reads is one the collector really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from collector.native.events import PREFIX as NATIVE_PREFIX
from collector.vocabulary import HOOKED_EVENTS, HookEvent
from tests.support.procs import (
    REPO,
    require_binary,
    start_alertmanager,
    start_collector,
    start_prometheus,
)
from tests.support.promconfig import REPO_PROMETHEUS_YML, derive_config
from tests.support.stack import resolved_config

ALERTS = REPO / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))
THRESHOLDS = ALERTS / "thresholds.rules.yml"
# The one runbook base URL: prometheus/prometheus.yml's external label, set from RUNBOOK_BASE_URL.
RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}"
SEVERITIES = {"critical", "warning", "info"}


def runbook_url(alertname: str, base: str = RUNBOOK_BASE) -> str:
    """An alert's runbook_url: the base URL, then the runbook's path in the repository."""
    return f"{base}/runbooks/{alertname}.md"


@dataclass(frozen=True)
class AlertRule:
    name: str
    severity: str
    expr: str
    for_seconds: float
    labels: dict[str, str]
    annotations: dict[str, str]
    file: str


def parse_duration(text: str) -> float:
    """A Prometheus duration ("1h30m", "15s", "0s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def rule_groups() -> list[tuple[str, dict[str, Any]]]:
    return [(f.name, g) for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]


def alert_rules() -> list[AlertRule]:
    return [
        AlertRule(
            name=r["alert"],
            severity=r.get("labels", {}).get("severity", ""),
            expr=r["expr"],
            for_seconds=parse_duration(r.get("for", "0s")),
            labels=r.get("labels", {}),
            annotations=r.get("annotations", {}),
            file=file,
        )
        for file, group in rule_groups()
        for r in group["rules"]
        if "alert" in r
    ]


def alert_names() -> set[str]:
    return {a.name for a in alert_rules()}


def metric_names(
    expr: str, prefixes: tuple[str, ...] = ("agentwatch_", "claude_code_", "process_")
) -> set[str]:
    """The series with these prefixes an expression reads (by default those the collector
    exposes: its own, Claude Code's, and its process metrics); recording-rule names (with ':')
    skipped."""
    return {
        token
        for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
        if token.startswith(prefixes) and ":" not in token
    }


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, cwd=ALERTS, check=False
    )


# -- promtool -------------------------------------------------------------------------------


def test_rule_files_exist() -> None:
    assert {f.name for f in RULE_FILES} >= {
        "collector.rules.yml",
        "relay.rules.yml",
        "stack.rules.yml",
        "host.rules.yml",
        "agents.rules.yml",
        "budget.rules.yml",
        "watchdog.rules.yml",
        "thresholds.rules.yml",
    }


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


def test_promtool_unit_tests_pin_the_for_duration(tmp_path: Path) -> None:
    """A changed `for:` breaks the unit tests: they check the timing, not only the expression."""
    shutil.copytree(ALERTS, tmp_path / "alerts")
    rules = tmp_path / "alerts" / "collector.rules.yml"
    text = rules.read_text()
    down = 'absent(up{job="agentwatch-collector"})\n        for: '
    changed = text.replace(down + "1m", down + "2m")
    assert changed != text
    rules.write_text(changed)
    binary = require_binary("promtool")
    result = subprocess.run(
        [binary, "test", "rules", "tests/collector.test.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path / "alerts",
        check=False,
    )
    assert result.returncode != 0
    assert "AgentwatchCollectorDown" in result.stdout + result.stderr


# -- conventions ----------------------------------------------------------------------------


def test_alert_conventions() -> None:
    rules = alert_rules()
    assert len(rules) >= 25
    for a in rules:
        assert re.fullmatch(r"(Agentwatch|Agent)[A-Z][A-Za-z]+|Watchdog", a.name), a.name
        # The Watchdog is no problem to act on: severity none (kube-prometheus), so severity
        # routes, inhibitions and "firing alerts" counts leave it out.
        expected = {"none"} if a.name == "Watchdog" else SEVERITIES
        assert a.severity in expected, (a.name, a.severity)
        assert set(a.annotations) == {"summary", "description", "runbook_url"}, a.name
        summary = a.annotations["summary"]
        assert re.fullmatch(r"[A-Z][^\n]*\.", summary), (a.name, summary)
        assert ". " not in summary, f"{a.name}: the summary is one sentence"
        assert "{{" not in summary, f"{a.name}: templates go in the description"
        # The Watchdog's description is the one constant text: it has no value or label to show.
        if a.name != "Watchdog":
            assert "{{" in a.annotations["description"], f"{a.name}: description is templated"
        assert a.annotations["runbook_url"] == runbook_url(a.name), a.name


def test_rule_groups_are_kebab_case_and_records_follow_level_metric_operation() -> None:
    for file, group in rule_groups():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", group["name"]), (file, group["name"])
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule


def test_one_down_alert_per_scrape_job() -> None:
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    jobs = [j["job_name"] for j in config["scrape_configs"]]
    rules = alert_rules()
    for job in jobs:
        down = [
            a.name for a in rules if re.search(rf'up\{{job="{re.escape(job)}"\}}\s*==\s*0', a.expr)
        ]
        assert len(down) == 1, f"job {job}: down alerts {down}"
    for a in rules:
        for match in re.finditer(r"\bup\b(\{[^}]*\})?", a.expr):
            assert match.group(1) and "job=" in match.group(1), f"{a.name}: catch-all up"


def test_thresholds_are_recorded_constants_all_used() -> None:
    group = yaml.safe_load(THRESHOLDS.read_text())["groups"][0]
    defined = {}
    for rule in group["rules"]:
        assert rule["record"].startswith("agentwatch:threshold:")
        value = re.fullmatch(r"vector\(([0-9.e+]+)\)", rule["expr"])
        assert value, f"{rule['record']} must be a constant"
        defined[rule["record"]] = float(value.group(1))
    used = set()
    for _file, grp in rule_groups():
        for rule in grp["rules"]:
            text = rule["expr"] + str(rule.get("annotations", ""))
            used |= set(re.findall(r"agentwatch:threshold:[a-z0-9_]+", text))
    assert used == set(defined)


def test_counters_are_read_by_their_total_names() -> None:
    """Every series under rate()/increase() or an `unless ... offset` first-increment term is a
    counter by its exposition name: `_total`, or a histogram's `_count`/`_bucket`/`_sum`. A
    name without the suffix (as some exporters' docs still print them) matches nothing."""
    counter_use = re.compile(
        r"(?:\b(?:rate|increase)\(\s*|\bunless\s+)([a-z_][a-z0-9_]*)\b(?![:(])"
    )
    seen = 0
    for _file, group in rule_groups():
        for rule in group["rules"]:
            for name in counter_use.findall(rule["expr"]):
                seen += 1
                assert name.endswith(("_total", "_count", "_bucket", "_sum")), (rule, name)
    assert seen >= 20


def test_collector_memory_threshold_is_the_compose_limit(tmp_path: Path) -> None:
    """AgentwatchCollectorMemoryHigh compares against a constant: it must be the collector's
    mem_limit in docker-compose.monitoring.yml (Prometheus cannot read a container's limit)."""
    group = yaml.safe_load(THRESHOLDS.read_text())["groups"][0]
    (limit,) = [
        r["expr"]
        for r in group["rules"]
        if r["record"] == "agentwatch:threshold:collector_memory_limit_bytes"
    ]
    collector = resolved_config(tmp_path)["services"]["collector"]
    assert limit == f"vector({int(collector['mem_limit'])})", (limit, collector["mem_limit"])


# -- promtool unit-test coverage --------------------------------------------------------------


def _test_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(f, yaml.safe_load(f.read_text())) for f in TEST_FILES]


def test_every_rule_file_has_a_unit_test_file() -> None:
    tested = {Path(rf).name for _, doc in _test_docs() for rf in doc["rule_files"]}
    assert tested == {f.name for f in RULE_FILES}


def test_every_alert_is_tested_just_before_and_just_after_for() -> None:
    """For each alert (and severity): a case where it fires with its full labels and
    annotations, and, when it has a `for:`, a case one evaluation earlier where it does not."""
    rules = alert_rules()
    covered: set[tuple[str, str]] = set()
    for path, doc in _test_docs():
        interval = parse_duration(doc.get("evaluation_interval", "1m"))
        files = {Path(rf).name for rf in doc["rule_files"]}
        for case_group in doc["tests"]:
            cases = case_group.get("alert_rule_test", [])
            for case in cases:
                t = parse_duration(case["eval_time"])
                for exp in case["exp_alerts"]:
                    severity = exp["exp_labels"]["severity"]
                    rule = next(
                        r
                        for r in rules
                        if r.name == case["alertname"]
                        and r.severity == severity
                        and r.file in files
                    )
                    assert set(exp["exp_annotations"]) == set(rule.annotations), path
                    assert exp["exp_annotations"]["summary"] == rule.annotations["summary"]
                    # Each test group sets the base URL; the expected link is built from it.
                    base = case_group["external_labels"]["runbook_base_url"]
                    assert exp["exp_annotations"]["runbook_url"] == runbook_url(rule.name, base)
                    assert t >= rule.for_seconds, f"{rule.name} fires before its for: ran out"
                    if rule.for_seconds:
                        before = [
                            c
                            for c in cases
                            if c["alertname"] == rule.name
                            and parse_duration(c["eval_time"]) == t - interval
                        ]
                        assert before, f"{path.name}: no case for {rule.name} at {t - interval}s"
                        assert all(
                            e["exp_labels"]["severity"] != severity
                            for c in before
                            for e in c["exp_alerts"]
                        ), f"{rule.name} ({severity}) expected firing one evaluation before"
                    covered.add((rule.name, severity))
    assert covered == {(r.name, r.severity) for r in rules}


# -- metrics the rules read ------------------------------------------------------------------


def _envelope(session: str, seq: int, hook_event: str, **fields: Any) -> dict[str, Any]:
    payload = {"session_id": session, "hook_event_name": hook_event, "cwd": "/work/demo"}
    payload.update(fields.pop("payload", {}))
    return {
        "event_id": str(uuid.uuid4()),
        "ts": int(time.time() * 1000) - 60_000 + seq * 100,
        "source_app": "demo",
        "machine_id": "machine-test",
        "session_id": session,
        "agent_id": fields.pop("agent_id", session),
        "parent_agent_id": fields.pop("parent_agent_id", None),
        "agent_type": fields.pop("agent_type", None),
        "hook_event": hook_event,
        "tool_name": fields.pop("tool_name", None),
        "tool_use_id": fields.pop("tool_use_id", None),
        "usage": fields.pop("usage", None),
        "payload": payload,
        **fields,
    }


def agent_session(session: str | None = None, loop_calls: int = 0) -> list[dict[str, Any]]:
    """A realistic session as hook envelopes: prompt, tool calls (one failing), a permission
    prompt, a subagent with its own tool call, token usage at Stop, and optionally the same
    Bash call `loop_calls` times in a row (a loop once above the collector's threshold, 5)."""
    sid = session or str(uuid.uuid4())
    sub = "agent-" + uuid.uuid4().hex[:8]
    out: list[dict[str, Any]] = []

    def add(hook_event: str, **fields: Any) -> None:
        out.append(_envelope(sid, len(out), hook_event, **fields))

    def tool(name: str, tool_input: dict[str, Any], ok: bool = True, **agent: Any) -> None:
        use = "toolu_" + uuid.uuid4().hex[:12]
        base = {"tool_name": name, "tool_input": tool_input, "tool_use_id": use}
        add("PreToolUse", tool_name=name, tool_use_id=use, payload=base, **agent)
        if ok:
            post = {**base, "tool_response": {"stdout": "ok"}}
            add("PostToolUse", tool_name=name, tool_use_id=use, payload=post, **agent)
        else:
            post = {**base, "error": "exit status 1", "is_interrupt": False}
            add("PostToolUseFailure", tool_name=name, tool_use_id=use, payload=post, **agent)

    add("SessionStart", payload={"source": "startup", "model": "claude-sonnet-4-5"})
    add("UserPromptSubmit", payload={"prompt": "fix the failing test"})
    tool("Read", {"file_path": "/work/demo/app.py"})
    tool("Bash", {"command": "pytest -q"}, ok=False)
    perm = {"tool_name": "Bash", "tool_input": {"command": "rm -rf build"}}
    add("PermissionRequest", tool_name="Bash", payload=perm)
    note = {"message": "Claude needs your permission", "notification_type": "permission_prompt"}
    add("Notification", payload=note)
    tool("Edit", {"file_path": "/work/demo/app.py", "old_string": "a", "new_string": "b"})
    subagent = {"agent_id": sub, "parent_agent_id": sid, "agent_type": "Explore"}
    add("SubagentStart", payload={"agent_id": sub, "agent_type": "Explore"}, **subagent)
    tool("Grep", {"pattern": "def test_"}, **subagent)
    usage = {
        "claude-haiku-4-5": {"input": 900, "output": 120, "cache_read": 0, "cache_creation": 0}
    }
    add("SubagentStop", usage=usage, payload={"agent_id": sub, "agent_type": "Explore"}, **subagent)
    for _ in range(loop_calls):
        tool("Bash", {"command": "gh run view --log | tail -1"})
    usage = {
        "claude-sonnet-4-5": {
            "input": 1200,
            "output": 800,
            "cache_read": 50000,
            "cache_creation": 3000,
        }
    }
    add("Stop", usage=usage, payload={"stop_hook_active": False})
    add("SessionEnd", payload={"reason": "prompt_input_exit"})
    return out


def post_events(url: str, envelopes: list[dict[str, Any]]) -> None:
    r = httpx.post(url + "/v1/events", json=envelopes, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == len(envelopes) and not body["rejected"], body


def scraped_sample_names(url: str) -> set[str]:
    text = httpx.get(url + "/metrics", timeout=5).text
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def prometheus_and_alertmanager_metric_names(tmp: Path) -> set[str]:
    """The sample names Debian's Prometheus (the repo's rule files loaded, so per-group series
    exist) and Alertmanager expose on their own /metrics."""
    prom = start_prometheus(tmp, derive_config(REPO_PROMETHEUS_YML.read_text(), {}))
    try:
        am = start_alertmanager(tmp, "route:\n  receiver: r\nreceivers:\n  - name: r\n")
        try:
            return scraped_sample_names(prom.url) | scraped_sample_names(am.url)
        finally:
            am.stop()
    finally:
        prom.stop()


@pytest.mark.e2e
def test_every_metric_the_rules_read_is_exposed_by_the_collector(tmp_path: Path) -> None:
    """Hook events and a real Claude Code's own metrics (its OTLP export requests, recorded in
    tests/fixtures/otel) go to the collector; every series a rule reads is on its /metrics."""
    used = {m for a in rule_groups() for r in a[1]["rules"] for m in metric_names(r["expr"])}
    assert "agentwatch_tool_calls_total" in used and "agentwatch_agent_loops_total" in used
    assert "claude_code_active_time_seconds_total" in used
    proc = start_collector(tmp_path)
    try:
        post_events(proc.url, agent_session(loop_calls=7))
        for body in sorted((REPO / "tests" / "fixtures" / "otel").glob("metrics-session-*.pb")):
            r = httpx.post(
                proc.url + "/v1/metrics",
                content=body.read_bytes(),
                headers={"content-type": "application/x-protobuf"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
        exposed = scraped_sample_names(proc.url)
    finally:
        proc.stop()
    missing = sorted(used - exposed)
    assert not missing, f"rules read metrics the collector does not expose: {missing}"


COMPONENT_METRICS = ("prometheus_", "alertmanager_")


@pytest.mark.e2e
def test_every_prometheus_and_alertmanager_metric_the_rules_read_exists(tmp_path: Path) -> None:
    """The rules on Prometheus' and Alertmanager's own metrics use names those binaries export:
    Debian's Prometheus (with the repo's rule files loaded, so per-group series exist) and
    Alertmanager, their /metrics read directly. (The otel-collector's, Loki's and Tempo's names
    cannot be checked here: none of them runs on this machine.)"""
    used = {
        m
        for _, g in rule_groups()
        for r in g["rules"]
        for m in metric_names(r["expr"], COMPONENT_METRICS)
    }
    assert {
        "prometheus_config_last_reload_successful",
        "prometheus_rule_evaluation_failures_total",
        "alertmanager_notifications_failed_total",
    } <= used
    missing = sorted(used - prometheus_and_alertmanager_metric_names(tmp_path))
    assert not missing, f"rules read metrics Prometheus/Alertmanager do not expose: {missing}"


def test_hook_events_and_claude_codes_own_events_are_told_apart_as_the_collector_names_them() -> (
    None
):
    """AgentwatchHookEventsMissing splits agentwatch_events_total by hook_event: Claude Code's own
    events ("claude_code.<name>", collector/native) against every hook event, AlertNotification
    (Alertmanager's, stored by the collector) in neither."""
    rules = {r["record"]: r["expr"] for _, g in rule_groups() for r in g["rules"] if "record" in r}

    def selectors(record: str) -> set[tuple[str, str]]:
        return set(re.findall(r'hook_event(=~|!~)"([^"]+)"', rules[record]))

    (native,) = selectors("agentwatch:claude_code_events:increase15m")
    (hooks,) = selectors("agentwatch:hook_events:increase15m")

    def matches(selector: tuple[str, str], value: str) -> bool:
        op, regex = selector
        # PromQL strings unescape like Go's; regex matchers are anchored.
        found = re.fullmatch(regex.encode().decode("unicode_escape"), value) is not None
        return found if op == "=~" else not found

    claude_code = [NATIVE_PREFIX + name for name in ("api_request", "tool_result", "api_error")]
    for event in HOOKED_EVENTS:
        assert matches(hooks, event) and not matches(native, event), event
    for event in claude_code:
        assert matches(native, event) and not matches(hooks, event), event
    alert = HookEvent.ALERT_NOTIFICATION
    assert not matches(hooks, alert) and not matches(native, alert)
