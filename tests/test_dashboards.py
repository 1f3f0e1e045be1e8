"""Static checks of grafana/dashboards/*.json.

Each dashboard must survive a round trip through grafana-foundation-sdk's typed models (Grafana's
own schema, generated from its CUE definitions): a key the SDK does not know is dropped on decode,
so anything lost or changed in the re-encoded JSON is a typo or an invented option. Plus the house
rules: uid = file name, datasource references are {"type", "uid"} pointing at provisioned uids,
links between the dashboards, a refresh and a default time range.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client.parser import text_string_to_metric_families

from demo.replay import replay
from tests.support.otlp_receiver import GrpcReceiver
from tests.support.procs import start_collector, wait_until
from tests.test_runbooks import queries as runbook_queries

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
DATASOURCES_DIR = REPO / "grafana" / "provisioning" / "datasources"
# The fixed datasource uids (each equal to its type, as grafana/provisioning/datasources sets
# them); used when the provisioning files are not there to read.
FIXED_UIDS = {
    "prometheus": "prometheus",
    "loki": "loki",
    "tempo": "tempo",
    "alertmanager": "alertmanager",
}
# Grafana's built-in pseudo datasources (annotations, mixed panels) are not provisioned.
BUILTIN_UIDS = {"-- Grafana --", "-- Mixed --", "-- Dashboard --"}

register_default_plugins()

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TOOLS = REPO / "tools"

# Values for Grafana's variables when a query runs outside Grafana: "All" for the multi-value
# variables (allValue ".*"), empty filters, and fixed intervals for the built-in ones.
VARIABLE_VALUES = {
    "source_app": ".*",
    "user": ".*",
    "model": ".*",
    "tool": ".*",
    "native_model": ".*",
    "outcome": ".*",
    "search": "",
    "session": "",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__auto": "1m",
    "__range": "1h",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")

# The Loki contract (shared with the relay and the otel-collector config): the only index label,
# and the structured metadata the records carry. Every event reaches Loki through the collector's
# relay (collector/otlp/logs.py), Claude Code's own as well as the hooks': Claude Code sends its
# OTLP to the collector, so its api_request, api_error, tool_result, ... events are
# {service_name="agentwatch"} records with agentwatch_hook_event="claude_code.<name>", and carry
# the relay's attributes (dots made underscores), not Claude Code's (no event_name, cost_usd,
# duration_ms; an api_request's cost is the relay's agentwatch_cost_usd). The relay's
# agentwatch.machine_id is a stream label in Loki: the otel-collector moves it to the resource
# (groupbyattrs/machine) and Loki indexes it (tests/test_loki_streams.py).
# test_loki_fields_and_values_are_what_the_relay_sends checks these lists against the real relay.
# Queries may use nothing else.
RESOURCE_LABELS = {"agentwatch_machine_id"}
STREAM_LABELS = {"service_name"} | RESOURCE_LABELS
AGENTWATCH_FIELDS = {
    "gen_ai_conversation_id",
    "gen_ai_agent_id",
    "gen_ai_agent_name",
    "gen_ai_tool_name",
    "gen_ai_tool_call_id",
    "gen_ai_request_model",
    "gen_ai_usage_input_tokens",
    "gen_ai_usage_output_tokens",
    "gen_ai_usage_cache_read_input_tokens",
    "gen_ai_usage_cache_creation_input_tokens",
    "agentwatch_hook_event",
    "agentwatch_source_app",
    "agentwatch_outcome",
    "agentwatch_event_id",
    "agentwatch_error",
    "agentwatch_detail",
    "agentwatch_cost_usd",
}
# What Loki adds to every record: its trace context and severity, and the label a pipeline
# stage sets when it fails (`| unwrap x | __error__=""` drops those samples).
RECORD_FIELDS = {"trace_id", "span_id", "severity_text", "__error__"}
FIELDS_BY_SERVICE = {"agentwatch": AGENTWATCH_FIELDS | RECORD_FIELDS}
# A label a query makes itself (`| label_format ts_ms=...`) may be used after it in that query.
LABEL_FORMAT = re.compile(r"\|\s*label_format\s+(\w+)\s*=")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def provisioned_uids() -> dict[str, str]:
    """uid -> datasource type, from grafana/provisioning/datasources/*.yaml (fixed set without them)."""
    files = sorted(DATASOURCES_DIR.glob("*.y*ml")) if DATASOURCES_DIR.is_dir() else []
    if not files:
        return dict(FIXED_UIDS)
    uids: dict[str, str] = {}
    for f in files:
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            uids[ds["uid"]] = ds["type"]
    return uids


def diff(original: Any, encoded: Any, path: str = "$") -> Iterator[str]:
    """Every place where `original` holds something `encoded` lost or changed.

    Keys the SDK adds with default values are fine; keys it drops are unknown to the schema.
    """
    if isinstance(original, dict):
        if not isinstance(encoded, dict):
            yield f"{path}: became {type(encoded).__name__}"
            return
        for key, value in original.items():
            if key not in encoded:
                yield f"{path}.{key}: unknown key (dropped by the SDK)"
            else:
                yield from diff(value, encoded[key], f"{path}.{key}")
    elif isinstance(original, list):
        if not isinstance(encoded, list) or len(encoded) != len(original):
            yield f"{path}: list changed"
            return
        for i, (a, b) in enumerate(zip(original, encoded, strict=True)):
            yield from diff(a, b, f"{path}[{i}]")
    elif original != encoded:
        yield f"{path}: {original!r} became {encoded!r}"


def datasource_refs(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.datasource", value
            else:
                yield from datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from datasource_refs(item, f"{path}[{i}]")


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def substitute(query: str, values: Mapping[str, str] = VARIABLE_VALUES) -> str:
    """The query as Grafana would send it; an unknown variable is an error, not a guess."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {query!r}")
        return values[name]

    return VARIABLE.sub(one, query)


def targets(datasource_type: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(dashboard file, panel title, target) for every target of that datasource type."""
    for path in DASHBOARDS:
        for panel in all_panels(load(path)):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("type") == datasource_type:
                    yield path.name, panel["title"], target


def logql_check(exprs: list[str]) -> list[dict[str, Any]]:
    """Run tools/logql-check.mjs (npm's @grafana/lezer-logql) on the expressions."""
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        message = "node or tools/node_modules missing (run `make node-deps`)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(
        [node, str(TOOLS / "logql-check.mjs")],
        input=json.dumps(exprs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    results: list[dict[str, Any]] = json.loads(out.stdout)
    return results


ids = [p.name for p in DASHBOARDS]


def test_the_five_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} >= {
        "agentwatch-overview",
        "agentwatch-tools",
        "agentwatch-sessions",
        "claude-code-telemetry",
        "agentwatch-health",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_round_trips_through_grafana_foundation_sdk(path: Path) -> None:
    original = load(path)
    encoded = json.loads(json.dumps(Dashboard.from_json(original), cls=JSONEncoder))
    problems = list(diff(original, encoded))
    assert not problems, f"{path.name} does not round-trip:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_uid_is_the_kebab_case_file_name(path: Path) -> None:
    uid = load(path)["uid"]
    assert uid == path.stem
    assert uid == uid.lower() and " " not in uid and "_" not in uid and len(uid) <= 40


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_datasource_refs_are_provisioned_uids(path: Path) -> None:
    uids = provisioned_uids()
    refs = list(datasource_refs(load(path)))
    assert refs
    for where, ref in refs:
        assert isinstance(ref, dict) and set(ref) == {"type", "uid"}, f"{where}: {ref!r}"
        if ref["uid"] in BUILTIN_UIDS:
            continue
        assert ref["uid"] in uids, (
            f"{where}: uid {ref['uid']!r} is not provisioned ({sorted(uids)})"
        )
        assert ref["type"] == uids[ref["uid"]], (
            f"{where}: type {ref['type']!r} != {uids[ref['uid']]!r}"
        )


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_every_panel_has_a_query_and_a_unique_id(path: Path) -> None:
    uids = provisioned_uids()
    dashboard = load(path)
    seen: set[int] = set()
    for panel in all_panels(dashboard):
        assert panel["id"] not in seen, f"duplicate panel id {panel['id']}"
        seen.add(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("description"), panel
        if panel["type"] == "alertgroups":  # reads Alertmanager directly, by datasource uid
            assert panel["options"]["alertmanager"] in uids
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"panel {panel['title']!r}: duplicate refId"


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_links_refresh_and_time_range(path: Path) -> None:
    dashboard = load(path)
    assert "agentwatch" in dashboard["tags"]
    # A "dashboards" link by tag lists every other Agentwatch dashboard.
    assert any(
        link["type"] == "dashboards" and "agentwatch" in link["tags"] for link in dashboard["links"]
    )
    assert dashboard["refresh"] in {"10s", "30s", "1m"}
    assert dashboard["time"]["from"].startswith("now-") and dashboard["time"]["to"] == "now"


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_every_variable_is_used(path: Path) -> None:
    dashboard = load(path)
    queries = json.dumps([p.get("targets", []) for p in all_panels(dashboard)])
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        assert f"${name}" in queries or f"${{{name}" in queries, f"${name} is never used"


def cell_links(panel: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """The data links a table panel puts on the cells of one field (by its name in the frame)."""
    return [
        link
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        if override["matcher"] == {"id": "byName", "options": field}
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]


def test_sessions_rows_link_to_their_trace() -> None:
    dashboard = load(REPO / "grafana" / "dashboards" / "agentwatch-sessions.json")
    links = [
        link
        for panel in all_panels(dashboard)
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert any(link.get("internal", {}).get("datasourceUid") == "tempo" for link in links)
    names = {v["name"]: v["type"] for v in dashboard["templating"]["list"]}
    assert names == {
        "source_app": "query",
        "outcome": "custom",
        "search": "textbox",
        "session": "textbox",
    }


@pytest.mark.parametrize("title", ["Sessions", "Waiting for input now"])
def test_a_session_cell_links_to_its_trace_its_events_and_the_filtered_dashboard(
    title: str,
) -> None:
    """Prometheus has no session label (the metrics contract forbids it) and Tempo exports a
    session's trace only once it ends: the per-session tables come from Loki, one row per
    (session id, trace_id) -- every relayed event of a session carries the same trace_id."""
    dashboard = load(REPO / "grafana" / "dashboards" / "agentwatch-sessions.json")
    (panel,) = [p for p in all_panels(dashboard) if p["title"] == title]
    assert panel["datasource"]["type"] == "loki"
    for target in panel["targets"]:
        assert "by (gen_ai_conversation_id, trace_id, agentwatch_source_app)" in target["expr"]
    links = cell_links(panel, "gen_ai_conversation_id")
    by_uid = {link.get("internal", {}).get("datasourceUid"): link for link in links}
    assert by_uid["tempo"]["internal"]["query"]["query"] == "${__data.fields.trace_id}"
    assert 'gen_ai_conversation_id="${__value.raw}"' in by_uid["loki"]["internal"]["query"]["expr"]
    assert any("var-session=${__value.raw}" in link["url"] for link in links)


def test_the_sessions_table_has_the_columns_a_person_asks_for() -> None:
    dashboard = load(REPO / "grafana" / "dashboards" / "agentwatch-sessions.json")
    (panel,) = [p for p in all_panels(dashboard) if p["title"] == "Sessions"]
    names = {
        prop["value"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "displayName"
    }
    assert names >= {"Session", "Start", "Duration", "Status", "Model", "Errors", "Cost", "Trace"}


def test_the_session_cost_is_what_claude_code_says_an_api_request_cost() -> None:
    """Per-event cost reaches Loki only on Claude Code's own api_request events (the relay's
    agentwatch.cost_usd); hook events carry none, and the panel says so."""
    panel = find_panel("agentwatch-sessions.json", "Sessions")
    (target,) = [t for t in panel["targets"] if "unwrap agentwatch_cost_usd" in t["expr"]]
    assert target["expr"].startswith("sum by (")
    assert "sum_over_time(" in target["expr"]
    assert 'agentwatch_hook_event="claude_code.api_request"' in target["expr"]
    assert "hook-only" in panel["description"]


# -- numbers that are right (issue 15) --------------------------------------------------------


def prometheus_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) of every PromQL target."""
    return [
        (path.name, panel, target)
        for path in DASHBOARDS
        for panel in all_panels(load(path))
        for target in panel.get("targets", [])
        if (target.get("datasource") or {}).get("type") == "prometheus"
    ]


def find_panel(file: str, title: str) -> dict[str, Any]:
    (panel,) = [
        p for p in all_panels(load(REPO / "grafana" / "dashboards" / file)) if p["title"] == title
    ]
    return panel


def test_no_count_depends_on_the_zoom() -> None:
    """increase() or `offset` over $__rate_interval gives a number that changes with the zoom
    (the window grows with the step): rates per minute, or a recording rule's fixed window."""
    zoomed = re.compile(r"(increase\([^\[]*\[\$__rate_interval\]|offset \$__rate_interval)")
    found = [
        f"{file} / {panel['title']}: {target['expr']}"
        for file, panel, target in prometheus_targets()
        if zoomed.search(target["expr"])
    ]
    assert not found, "\n".join(found)


def test_totals_over_the_range_count_a_series_born_inside_it() -> None:
    """increase(x[$__range]) alone misses the first value of a series born inside the range
    (Claude Code's counters of a developer's first session, a new model): every counter summed
    over the range is counted the way the alerts count (`x unless x offset W or increase`)."""
    bare = re.compile(r"increase\((\w+)(\{[^}]*\})?\[\$__range\]\)")
    problems = []
    for file, panel, target in prometheus_targets():
        for match in bare.finditer(target["expr"]):
            metric = match.group(1)
            if f"{metric} offset $__range" not in target["expr"] and metric not in PRECREATED:
                problems.append(f"{file} / {panel['title']}: increase({metric}) alone")
    assert not problems, "\n".join(problems)


# Counters the collector creates at 0 before their first increment (collector/metrics.py).
PRECREATED = {"agentwatch_hook_spool_dropped_total"}


def test_firing_alerts_leave_the_watchdog_out() -> None:
    (target,) = find_panel("agentwatch-overview.json", "Firing alerts")["targets"]
    assert 'alertname!="Watchdog"' in target["expr"]


@pytest.mark.parametrize("title", ["Relay state", "Build"])
def test_state_and_version_show_their_name_not_1(title: str) -> None:
    panel = find_panel("agentwatch-health.json", title)
    assert panel["options"]["textMode"] == "name"
    (target,) = panel["targets"]
    assert target["legendFormat"] in {"{{state}}", "{{version}}"}


def test_store_errors_are_not_drawn_in_seconds() -> None:
    panel = find_panel("agentwatch-health.json", "Store write time and errors")
    (errors,) = [t for t in panel["targets"] if "store_errors" in t["expr"]]
    units = [
        prop["value"]
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"] == {"id": "byFrameRefID", "options": errors["refId"]}
        for prop in o["properties"]
        if prop["id"] == "unit"
    ]
    assert units and units[-1] != "s"


def test_request_latency_leaves_the_stream_out() -> None:
    for target in find_panel("agentwatch-health.json", "Request latency p50 / p99")["targets"]:
        assert 'route!="/v1/stream"' in target["expr"]


def test_active_time_is_per_developer_not_summed() -> None:
    panel = find_panel("claude-code-telemetry.json", "Active time by developer")
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    (target,) = panel["targets"]
    assert target["expr"].startswith("sum by (user) (rate(claude_code_active_time_seconds_total")


@pytest.mark.parametrize(
    ("file", "title"),
    [
        ("agentwatch-overview.json", "Tool error ratio"),
        ("agentwatch-tools.json", "Tools over the time range"),
        ("agentwatch-tools.json", "Error ratio by tool"),
    ],
)
def test_tool_error_ratios_need_the_alerts_minimum_of_calls(file: str, title: str) -> None:
    ratios = [
        t
        for t in find_panel(file, title)["targets"]
        if ('outcome="error"' in t["expr"] and "/" in t["expr"]) or "errors:ratio" in t["expr"]
    ]
    assert ratios
    for target in ratios:
        assert "agentwatch:threshold:tool_error_min_calls" in target["expr"], target["expr"]


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for path in sorted((REPO / "alerts").glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def test_recording_rules_a_dashboard_reads_exist() -> None:
    recorded = recorded_names()
    used = {
        (file, name)
        for file, _, target in prometheus_targets()
        for name in re.findall(r"\b[a-z_]+:[a-z0-9_:]+\b", target["expr"])
    }
    missing = sorted(f"{file}: {name}" for file, name in used if name not in recorded)
    assert not missing, missing


def test_the_budget_gauge_reads_what_the_budget_alerts_compare() -> None:
    rules = [
        rule
        for group in yaml.safe_load((REPO / "alerts" / "budget.rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    alert_names = {n for r in rules for n in re.findall(r"\b[a-z_]+:[a-z0-9_:]+\b", r["expr"])}
    panel = find_panel("agentwatch-cost.json", "Spend vs daily budget")
    assert panel["type"] == "gauge"
    gauge_names = {
        n for t in panel["targets"] for n in re.findall(r"\b[a-z_]+:[a-z0-9_:]+\b", t["expr"])
    }
    assert gauge_names == alert_names
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 1} in steps  # 100% of the budget: where the alert fires


# The Health row's metrics, as the pinned images name them (docker-compose.monitoring.yml):
# otel-collector-contrib 0.135 (internal telemetry through its Prometheus reader: `_total` on
# counters, the {records} unit dropped), Loki 3.5 (pkg/validation), Tempo 2.8
# (modules/overrides), Prometheus 3.5 and Alertmanager 0.28. Prometheus and Alertmanager run
# in tests/test_dashboards_promql.py; the others have no binary here.
STACK_METRICS = {
    "otelcol_exporter_send_failed_log_records_total",
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_receiver_refused_log_records_total",
    "otelcol_receiver_refused_spans_total",
    "otelcol_exporter_enqueue_failed_log_records_total",
    "otelcol_exporter_enqueue_failed_spans_total",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    "loki_discarded_samples_total",
    "tempo_discarded_spans_total",
    "prometheus_config_last_reload_successful",
    "prometheus_rule_evaluation_failures_total",
    "prometheus_notifications_errors_total",
    "prometheus_notifications_dropped_total",
    "alertmanager_config_last_reload_successful",
    "alertmanager_notifications_failed_total",
}


def test_the_health_row_draws_every_loss_after_the_relay() -> None:
    dashboard = load(REPO / "grafana" / "dashboards" / "agentwatch-health.json")
    exprs = " ".join(t["expr"] for p in all_panels(dashboard) for t in p.get("targets", []))
    used = set(re.findall(r"\b(?:otelcol|loki|tempo|prometheus|alertmanager)_\w+", exprs))
    assert used == STACK_METRICS


LOKI_TARGETS = list(targets("loki"))


def test_there_are_logql_targets() -> None:
    files = {f for f, _, _ in LOKI_TARGETS}
    assert {
        "agentwatch-sessions.json",
        "agentwatch-overview.json",
        "claude-code-telemetry.json",
    } <= files


def test_logql_parses_and_uses_only_contract_labels() -> None:
    exprs = [substitute(t["expr"]) for _, _, t in LOKI_TARGETS]
    results = logql_check(exprs)
    assert len(results) == len(exprs)
    problems = []
    for (file, title, _), result in zip(LOKI_TARGETS, results, strict=True):
        where = f"{file} / {title}: {result['expr']}"
        if not result["ok"]:
            problems.append(f"{where}: syntax error at {result['errors']}")
            continue
        if set(result["stream_labels"]) - STREAM_LABELS:
            problems.append(f"{where}: stream labels {result['stream_labels']} not indexed by Loki")
        services = set(re.findall(r'service_name="([^"]+)"', result["expr"]))
        assert len(services) == 1, f"{where}: select exactly one service_name"
        service = services.pop()
        if service not in FIELDS_BY_SERVICE:
            problems.append(f"{where}: nothing sends service_name={service!r} to Loki")
            continue
        allowed = FIELDS_BY_SERVICE[service] | set(LABEL_FORMAT.findall(result["expr"]))
        unknown = set(result["fields"]) - allowed - STREAM_LABELS
        if unknown:
            problems.append(f"{where}: fields {sorted(unknown)} are not produced for this service")
    assert not problems, "\n".join(problems)


def test_logql_checker_reports_errors_and_fields() -> None:
    """The checker itself: a broken expression fails, fields are reported."""
    bad, good = logql_check(
        ['{service_name="agentwatch" | x', 'sum_over_time({a="b"} | c="d" | unwrap e [1m])']
    )
    assert not bad["ok"] and bad["errors"]
    assert good["ok"] and good["stream_labels"] == ["a"] and {"c", "e"} <= set(good["fields"])


# -- the Loki contract against the real relay -------------------------------------------------

OTEL_FIXTURES = REPO / "tests" / "fixtures" / "otel"
# `| field="value"` filters whose value the recorded sessions do not produce, and why they are
# right all the same.
VALUES_NOT_IN_FIXTURES = {
    ("agentwatch_hook_event", "claude_code.api_error"): (
        "the recorded Claude Code session had no failed API call; the relay names every native "
        "event claude_code.<event.name>, as claude_code.api_request and claude_code.tool_result"
    ),
}
EQUALS = re.compile(r'\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"')


def loki_name(key: str) -> str:
    """An OTLP attribute key as Loki names the structured metadata (dots become underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def logql_queries() -> list[tuple[str, str]]:
    """(where, LogQL) of every dashboard target and every runbook's Diagnosis."""
    found = [(f"{f} / {title}", substitute(t["expr"])) for f, title, t in LOKI_TARGETS]
    return found + [(f"runbooks/{name}.md", q) for name, q in runbook_queries()[1]]


@pytest.mark.e2e
def test_loki_fields_and_values_are_what_the_relay_sends(tmp_path: Path) -> None:
    """The recorded demo session (hooks) and a real Claude Code's own log events (OTLP, the
    fixture) go through the real collector, whose relay exports them to an OTLP receiver: the
    contract's fields are exactly the attributes of those records, and every `| field="value"`
    filter of a dashboard or runbook matches some record (event_name="claude_code.api_request"
    matched nothing: Loki never sees Claude Code's own attributes)."""
    receiver = GrpcReceiver().start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    proc = start_collector(tmp_path, env)
    try:
        counts = replay(proc.url, quiet=True)
        assert counts.pop("__undelivered_spool_files") == 0, proc.logs()
        resp = httpx.post(
            proc.url + "/v1/logs",
            content=(OTEL_FIXTURES / "logs.binpb").read_bytes(),
            headers={"content-type": "application/x-protobuf"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text

        def stored() -> float:
            text = httpx.get(proc.url + "/metrics", timeout=5).text
            return sum(
                s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
                if s.name == "agentwatch_events_total"
            )

        total = stored()
        wait_until(lambda: len(receiver.rec.logs) >= total, 30, f"{total:.0f} events relayed")
    finally:
        proc.stop()
        receiver.stop()

    values: dict[str, set[str]] = {}
    for record in receiver.rec.logs:
        for key, value in record["attributes"].items():
            values.setdefault(loki_name(key), set()).add(str(value))
    assert {"claude_code.api_request", "PostToolUse"} <= values["agentwatch_hook_event"]
    relayed = AGENTWATCH_FIELDS | RESOURCE_LABELS
    assert set(values) == relayed, (
        "the relay's attributes changed: update AGENTWATCH_FIELDS (the Loki contract) and the "
        f"queries; relay-only {sorted(set(values) - relayed)}, "
        f"contract-only {sorted(relayed - set(values))}"
    )
    problems = []
    for where, expr in logql_queries():
        for field, value in EQUALS.findall(expr):
            if field in RECORD_FIELDS | STREAM_LABELS or value in values.get(field, set()):
                continue
            if (field, value) not in VALUES_NOT_IN_FIXTURES:
                problems.append(f'{where}: {field}="{value}" matches no relayed event')
    assert not problems, "\n".join(problems)
