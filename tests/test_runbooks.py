"""runbooks/: one per alert and no other, each with the same sections, and the PromQL and LogQL
they tell a newcomer to run actually parse (promtool, Grafana's LogQL grammar)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.procs import IN_CI, REPO, require_binary
from tests.test_alert_rules import alert_names

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
