"""runbooks/: one per alert and no other, each with the same sections, and the PromQL and LogQL
they tell a newcomer to run actually parse (promtool, Grafana's LogQL grammar). Every alert links
its runbook through one base URL, RUNBOOK_BASE_URL, whose default (the stack's Prometheus) really
serves the runbooks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import (
    IN_CI,
    REPO,
    require_binary,
    start_prometheus,
    wait_until,
)
from tests.support.promconfig import REPO_PROMETHEUS_YML, derive_config
from tests.support.stack import host_path, raw_compose, resolved_config
from tests.test_alert_rules import (
    RULE_FILES,
    alert_names,
    alert_rules,
    prometheus_and_alertmanager_metric_names,
    rule_groups,
    runbook_url,
)

RUNBOOKS = REPO / "runbooks"
SECTIONS = ["Meaning", "Impact", "Diagnosis", "Mitigation"]
# Inline code that starts with one of these is a shell command, not a query.
COMMANDS = {
    "amtool", "curl", "df", "dmesg", "docker", "du", "gh", "grep", "iostat", "make", "python3",
    "top", "until",
}  # fmt: skip


def runbooks() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(RUNBOOKS.glob("*.md"))}


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def code_spans(text: str) -> list[str]:
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", text)]


def queries() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(runbook, PromQL) and (runbook, LogQL) pairs from the Diagnosis sections."""
    promql, logql = [], []
    for name, text in runbooks().items():
        for span in code_spans(sections(text).get("Diagnosis", "")):
            if "{service_name=" in span:
                logql.append((name, span))
            elif (
                span.split()[0] not in COMMANDS
                and not re.search(r"\S/\S|://", span)
                and re.match(r"[a-z_:][a-z0-9_:]*\s*(\{|\(|\[|$|[-+*/<>=!])", span)
            ):
                promql.append((name, span))
    return promql, logql


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    alerts, books = alert_names(), set(runbooks())
    assert not alerts - books, f"alerts without a runbook: {sorted(alerts - books)}"
    assert not books - alerts, f"runbooks without an alert: {sorted(books - alerts)}"


def test_every_alert_links_its_runbook_through_the_one_base_url() -> None:
    """No rule hard-codes where runbooks live: each runbook_url is the shared base (the external
    label runbook_base_url) followed by the runbook's own path in the repository."""
    for alert in alert_rules():
        assert alert.annotations["runbook_url"] == runbook_url(alert.name), alert.name
        assert (RUNBOOKS / f"{alert.name}.md").is_file(), alert.name
    for path in RULE_FILES:
        text = path.read_text()
        assert set(re.findall(r"\$externalLabels\.(\w+)", text)) <= {"runbook_base_url"}, path


def test_the_base_url_is_one_variable_whose_default_serves_the_runbooks(tmp_path: Path) -> None:
    """prometheus.yml takes the base from RUNBOOK_BASE_URL; compose and .env.example default it
    to the stack's Prometheus, which serves the checkout's runbooks/ under /user/."""
    prometheus = yaml.safe_load(REPO_PROMETHEUS_YML.read_text())
    assert prometheus["global"]["external_labels"]["runbook_base_url"] == "${RUNBOOK_BASE_URL}"
    service = raw_compose()["services"]["prometheus"]
    found = re.fullmatch(
        r"\$\{RUNBOOK_BASE_URL:-(.+)\}", service["environment"]["RUNBOOK_BASE_URL"]
    )
    assert found, service["environment"]
    default = found.group(1)
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert example["RUNBOOK_BASE_URL"] == default
    flags = dict(str(arg).split("=", 1) for arg in service["command"] if "=" in str(arg))
    assert default == flags["--web.external-url"] + "/user"
    mounted = flags["--web.user-assets"] + "/runbooks"
    assert host_path(resolved_config(tmp_path), "prometheus", mounted) == RUNBOOKS


@pytest.mark.e2e
def test_prometheus_builds_the_link_from_the_variable_and_serves_the_runbook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's Prometheus on the repo's prometheus.yml and rules, with RUNBOOK_BASE_URL set and
    runbooks/ served at /user/runbooks/ as in compose: the Watchdog links to its runbook there."""
    assets = tmp_path / "user"
    assets.mkdir()
    (assets / "runbooks").symlink_to(RUNBOOKS)
    base = "http://prometheus.test/user"
    monkeypatch.setenv("RUNBOOK_BASE_URL", base)
    config = derive_config(REPO_PROMETHEUS_YML.read_text(), {}, evaluation_interval="1s")
    # Prometheus 3 always expands ${VAR} in external labels; 2.x (Debian's) needs the flag.
    flags = ["--enable-feature=expand-external-labels", f"--web.user-assets={assets}"]
    prom = start_prometheus(tmp_path, config, flags)
    try:
        links: list[str] = []

        def watchdog_link() -> bool:
            alerts = httpx.get(prom.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            links[:] = [
                a["annotations"]["runbook_url"]
                for a in alerts
                if a["labels"]["alertname"] == "Watchdog"
            ]
            return bool(links)

        wait_until(watchdog_link, 30, "the Watchdog in /api/v1/alerts")
        assert links == [f"{base}/runbooks/Watchdog.md"]
        served = httpx.get(prom.url + links[0].removeprefix("http://prometheus.test"), timeout=5)
        assert served.status_code == 200
        assert served.text == (RUNBOOKS / "Watchdog.md").read_text()
    finally:
        prom.stop()


@pytest.mark.parametrize("name", sorted(alert_names()))
def test_runbook_structure(name: str) -> None:
    text = (RUNBOOKS / f"{name}.md").read_text()
    assert text.splitlines()[0] == f"# {name}"
    found = sections(text)
    assert list(found) == SECTIONS, f"{name}: sections {list(found)}"
    for title, body in found.items():
        assert len(body.split()) >= 10, f"{name}: section {title} is too thin"
    assert code_spans(found["Diagnosis"]), f"{name}: Diagnosis gives no query or command"


def test_runbook_promql_parses(tmp_path: Path) -> None:
    promql, _ = queries()
    assert len(promql) >= 40
    rules = [{"record": f"runbook:query:n{i}", "expr": q} for i, (_, q) in enumerate(promql)]
    path = tmp_path / "runbook-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbook-queries", "rules": rules}]}))
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + json.dumps(promql)


def test_runbook_logql_parses() -> None:
    _, logql = queries()
    assert len(logql) >= 5
    script = REPO / "tools" / "logql-check.mjs"
    if not (REPO / "tools" / "node_modules").is_dir():
        message = "tools/node_modules missing: run `make node-deps`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [require_binary("node"), str(script)],
        input=json.dumps([q for _, q in logql]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(result.stdout)
    bad = [(name, r) for (name, _), r in zip(logql, report, strict=True) if not r["ok"]]
    assert not bad and result.returncode == 0, bad


# --- the commands and names a runbook gives must work ----------------------------------------

COMPOSE = "docker compose -f docker-compose.monitoring.yml"
# Metric prefixes a runbook may name, and where each is checked: the collector's (its /metrics,
# and Claude Code's names it exposes), Prometheus' and Alertmanager's (their /metrics, e2e), the
# otel-collector's, Loki's and Tempo's (none runs here: UPSTREAM, from their documentation).
METRIC_PREFIXES = (
    "agentwatch_", "claude_code_", "process_", "python_", "prometheus_", "alertmanager_",
    "otelcol_", "loki_", "tempo_",
)  # fmt: skip
UPSTREAM = {
    # otel-collector 0.135 internal telemetry (counters with _total through its Prometheus reader)
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    "otelcol_exporter_sent_log_records_total",
    "otelcol_exporter_sent_spans_total",
    "otelcol_exporter_send_failed_log_records_total",
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_exporter_enqueue_failed_log_records_total",
    "otelcol_exporter_enqueue_failed_spans_total",
    "otelcol_receiver_accepted_log_records_total",
    "otelcol_receiver_accepted_spans_total",
    "otelcol_receiver_refused_log_records_total",
    "otelcol_receiver_refused_spans_total",
    # Loki 3.5 and Tempo 2.8
    "loki_discarded_samples_total",
    "tempo_discarded_spans_total",
    "tempo_distributor_spans_received_total",
}
# Files a runbook may name that are not in git: made by `make up` from .env.
GENERATED = {"alerts/secrets/alertmanager/alertmanager.yml", ".env"}
REPO_PATH = re.compile(
    r"(?<![\w./~-])((?:alerts|runbooks|scripts|hooks|collector|prometheus|grafana|loki|tempo|"
    r"otel-collector|tests|make|bench|demo|tools)/[\w./*-]*[\w*]|"
    r"[\w.-]+\.(?:yml|yaml|py|md|json|mk|toml)|\.env(?:\.example)?)(?![\w/-])"
)


def all_code_spans() -> list[tuple[str, str]]:
    return [(name, span) for name, text in runbooks().items() for span in code_spans(text)]


def metric_tokens(span: str) -> set[str]:
    """Metric names in a code span: not file names, hosts or paths, not prefixes in prose."""
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", span):
        token, before, after = m.group(), span[: m.start()][-1:], span[m.end() :][:1]
        named = token.startswith(METRIC_PREFIXES) and not token.endswith("_") and ":" not in token
        if named and before not in {".", "/", "-"} and after not in {".", "/", "-", ":"}:
            found.add(token)
    return found


def loki_fields() -> set[str]:
    """The relay's and the otel-collector's agentwatch.* attributes, as Loki names them."""
    names = set()
    for folder in ("collector", "otel-collector", "loki"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in {".py", ".yaml", ".yml"}:
                names |= set(re.findall(r"\bagentwatch\.([a-z_]+)\b", path.read_text()))
    return {"agentwatch_" + n for n in names}


def runbook_metrics(prefixes: tuple[str, ...] = METRIC_PREFIXES) -> dict[str, set[str]]:
    """Metric name -> the runbooks naming it (LogQL spans and Loki field names left out)."""
    fields = loki_fields()
    out: dict[str, set[str]] = {}
    for name, span in all_code_spans():
        if "{service_name=" in span:
            continue
        for token in metric_tokens(span):
            if token.startswith(prefixes) and token not in fields:
                out.setdefault(token, set()).add(name)
    return out


def test_no_runbook_uses_a_port_the_stack_does_not_publish(tmp_path: Path) -> None:
    """`curl 127.0.0.1:8889` cannot work: the otel-collector's exporter is not published."""
    config = resolved_config(tmp_path)
    published = {
        int(p["published"]) for s in config["services"].values() for p in s.get("ports", [])
    }
    for name, text in runbooks().items():
        assert ":8889" not in text, name
        for port in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", text):
            assert int(port) in published, f"{name}: port {port} is not published on 127.0.0.1"


def test_no_runbook_points_at_a_host_data_directory() -> None:
    """The stack's collector keeps its database in the volume agentwatch_collector-data (at
    /data in a read-only container), not in the checkout's data/."""
    for name, text in runbooks().items():
        assert not re.search(r"(?<![\w/.-])data/", text), f"{name}: names data/"


def test_every_repo_file_a_runbook_names_exists() -> None:
    checked = 0
    for name, text in runbooks().items():
        spans = code_spans(text) + re.findall(r"\]\(([^)#]+)", text)
        for span in spans:
            for path in REPO_PATH.findall(span):
                if path.startswith("../"):
                    path = path[3:]
                if path in GENERATED or path.startswith("/"):
                    continue
                if "/" not in path:  # a bare file name: somewhere in the repository
                    hits = [p for p in REPO.rglob(path) if ".venv" not in p.parts]
                    assert hits or path in {"settings.json"}, f"{name}: {path} is in no folder"
                else:
                    assert list(REPO.glob(path)), f"{name}: {path} does not exist"
                checked += 1
    assert checked >= 20


def test_every_compose_service_and_volume_a_runbook_names_exists(tmp_path: Path) -> None:
    config = resolved_config(tmp_path)
    services, volumes = set(config["services"]), {f"agentwatch_{v}" for v in config["volumes"]}
    verbs = (
        r"(?:exec|logs(?: -f)?(?: --tail=\d+)?|restart|stop|start|up -d|run --rm --no-deps|ps -aq)"
    )
    for name, span in all_code_spans():
        for service in re.findall(rf"{re.escape(COMPOSE)} {verbs} ([\w-]+)", span):
            assert service in services, f"{name}: no compose service {service}: {span}"
        for volume in re.findall(r"\bagentwatch_[a-z-]+-data\b", span):
            assert volume in volumes, f"{name}: no volume {volume}"


def test_every_collector_metric_a_runbook_names_is_exposed(harness: Any) -> None:
    """The collector's own names (its /metrics, from the app factory) and Claude Code's names
    it exposes under (collector/native/metrics.py); recording rules are defined in alerts/."""
    text = harness.client.get("/metrics").text
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    # A labelled metric with no series yet still has its HELP/TYPE lines: the family names it.
    exposed = {
        fam.name + suffix
        for fam in text_string_to_metric_families(text)
        for suffix in suffixes.get(fam.type, [""])
    }
    native = set(
        re.findall(r"claude_code_\w+_total", (REPO / "collector/native/metrics.py").read_text())
    )
    used = runbook_metrics(("agentwatch_", "claude_code_", "process_", "python_"))
    assert "agentwatch_cost_usd_total" in used and "claude_code_cost_usage_USD_total" in used
    missing = {m: sorted(b) for m, b in used.items() if m not in exposed | native}
    assert not missing, f"runbooks name metrics the collector does not expose: {missing}"
    records = {r["record"] for _, g in rule_groups() for r in g["rules"] if "record" in r}
    for name, span in all_code_spans():
        for record in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", span):
            assert record in records, f"{name}: no recording rule {record}"


def test_every_upstream_metric_a_runbook_names_is_a_documented_one() -> None:
    used = runbook_metrics(("otelcol_", "loki_", "tempo_"))
    unknown = {m: sorted(b) for m, b in used.items() if m not in UPSTREAM}
    assert not unknown, f"not a documented otel-collector/Loki/Tempo metric: {unknown}"


@pytest.mark.e2e
def test_every_prometheus_and_alertmanager_metric_a_runbook_names_exists(tmp_path: Path) -> None:
    """Debian's Prometheus (with the repo's rules) and Alertmanager, their /metrics read."""
    used = runbook_metrics(("prometheus_", "alertmanager_"))
    assert "prometheus_tsdb_head_series" in used
    exposed = prometheus_and_alertmanager_metric_names(tmp_path)
    # Histograms and summaries are named by their _sum/_count/_bucket series.
    missing = sorted(m for m in used if m not in exposed)
    assert not missing, f"runbooks name metrics Prometheus/Alertmanager do not expose: {missing}"


def test_check_commands_in_runbooks_run(tmp_path: Path) -> None:
    """Every promtool/amtool command a runbook gives for the repo's files is run as written
    (from the checkout; the rendered Alertmanager config made from an empty .env); every check
    run inside a container names a config that its mounts hold."""
    config = resolved_config(tmp_path)
    out = tmp_path / "secrets" / "alertmanager"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "init_env.py"), "--env", str(tmp_path / "none.env"),
         "--example", str(REPO / ".env.example"), "--out", str(out)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    host, inside = 0, 0
    for name, span in all_code_spans():
        found = re.match(rf"{re.escape(COMPOSE)} (?:exec|run --rm --no-deps) ([\w-]+) (.+)$", span)
        if found and re.search(r"\b(amtool check-config|promtool check|validate)\b", span):
            service, command = found.groups()
            path = re.search(r"(/etc/\S+)", command)
            assert path, f"{name}: {span}"
            source = host_path(config, service, path.group(1).removeprefix("--config="))
            assert source is not None, f"{name}: {path.group(1)} is not mounted in {service}"
            if source.name == "alertmanager.yml" and "secrets" in source.parts:
                source = REPO / "alerts" / "alertmanager.yml"
            assert source.is_file(), f"{name}: {source}"
            inside += 1
        elif span.split()[0] in {"promtool", "amtool"} and "check" in span:
            argv = span.replace(
                "alerts/secrets/alertmanager/alertmanager.yml", str(out / "alertmanager.yml")
            ).split()
            # The shell would expand alerts/*.rules.yml: so does the test.
            globbed = [
                a
                for arg in argv[1:]
                for a in (sorted(str(p) for p in REPO.glob(arg)) if "*" in arg else [arg])
            ]
            argv = [require_binary(argv[0]), *globbed]
            result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (
                f"{name}: `{span}` fails:\n{result.stdout}{result.stderr}"
            )
            host += 1
    assert host >= 1 and inside >= 1
