"""runbooks/: one per alert and no other, each with the same sections, and the PromQL and LogQL
they tell a newcomer to run actually parse (promtool, Grafana's LogQL grammar). Every alert links
its runbook through one base URL, RUNBOOK_BASE_URL, whose default (the stack's Prometheus) really
serves the runbooks."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.procs import IN_CI, REPO, require_binary, start_prometheus, wait_until
from tests.support.promconfig import REPO_PROMETHEUS_YML, derive_config
from tests.support.stack import host_path, raw_compose, resolved_config
from tests.test_alert_rules import RULE_FILES, alert_names, alert_rules, runbook_url

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
