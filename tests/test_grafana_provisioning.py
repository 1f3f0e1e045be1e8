"""grafana/provisioning: the four datasources with fixed uids and their cross-links, the dashboard
provider, and every datasource a dashboard in grafana/dashboards/ refers to."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.support.promconfig import REPO_PROMETHEUS_YML
from tests.support.stack import REPO, host_path, resolved_config, served_ports

PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARDS = REPO / "grafana" / "dashboards"
UIDS = {
    "prometheus": "prometheus",
    "loki": "loki",
    "tempo": "tempo",
    "alertmanager": "alertmanager",
}
# Datasource references that are not provisioned datasources.
BUILTIN = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"}


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["apiVersion"] == 1, path
        for ds in doc["datasources"]:
            assert ds["uid"] not in found, f"uid {ds['uid']} provisioned twice"
            found[ds["uid"]] = ds
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved_config(tmp_path_factory.mktemp("compose"))


def test_the_four_datasources_are_provisioned_with_fixed_uids(
    datasources: dict[str, dict[str, Any]],
) -> None:
    assert {uid: ds["type"] for uid, ds in datasources.items()} == UIDS
    assert [uid for uid, ds in datasources.items() if ds.get("isDefault")] == ["prometheus"]
    am = datasources["alertmanager"]["jsonData"]
    assert am["implementation"] == "prometheus"


def test_datasource_urls_are_compose_services_on_ports_they_serve(
    datasources: dict[str, dict[str, Any]], stack: dict[str, Any]
) -> None:
    for uid, ds in datasources.items():
        match = re.fullmatch(r"http://([\w-]+):(\d+)", ds["url"])
        assert match, f"{uid}: {ds['url']}"
        service, port = match.group(1), int(match.group(2))
        assert service == uid and port in served_ports(stack, service), ds["url"]


def test_prometheus_time_interval_is_the_scrape_interval(
    datasources: dict[str, dict[str, Any]],
) -> None:
    scrape_interval = yaml.safe_load(REPO_PROMETHEUS_YML.read_text())["global"]["scrape_interval"]
    assert datasources["prometheus"]["jsonData"]["timeInterval"] == scrape_interval


def test_loki_links_trace_ids_to_tempo_and_tempo_links_spans_to_loki(
    datasources: dict[str, dict[str, Any]],
) -> None:
    (field,) = datasources["loki"]["jsonData"]["derivedFields"]
    assert (field["matcherType"], field["matcherRegex"], field["datasourceUid"]) == (
        "label",
        "trace_id",
        "tempo",
    )
    to_logs = datasources["tempo"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    assert "trace_id=" in to_logs["query"] and "__trace.traceId" in to_logs["query"]


def test_every_datasource_uid_a_datasource_links_to_is_provisioned(
    datasources: dict[str, dict[str, Any]],
) -> None:
    linked = set(re.findall(r"'datasourceUid': '([^']+)'", repr(datasources)))
    assert linked >= {"tempo", "loki", "prometheus"}
    assert linked <= set(datasources)


def test_literal_dollars_are_escaped_from_grafanas_env_expansion() -> None:
    """Grafana expands $VAR and ${VAR} in provisioning files; $$ is a literal $."""
    for path in PROVISIONING.rglob("*.y*ml"):
        text = path.read_text()
        unescaped = re.findall(r"(?<!\$)\$\{(?!\$)", text.replace("$${", ""))
        assert not unescaped, f"{path}: unescaped ${{...}} would be replaced by an env var"


def test_dashboard_provider_loads_the_mounted_dashboards_into_a_folder(
    stack: dict[str, Any],
) -> None:
    (path,) = sorted((PROVISIONING / "dashboards").glob("*.y*ml"))
    (provider,) = yaml.safe_load(path.read_text())["providers"]
    assert (provider["folder"], provider["folderUid"], provider["type"]) == (
        "Agentwatch",
        "agentwatch",
        "file",
    )
    assert host_path(stack, "grafana", provider["options"]["path"]) == DASHBOARDS
    assert host_path(stack, "grafana", "/etc/grafana/provisioning") == PROVISIONING


def datasource_refs(node: Any) -> list[Any]:
    """Every `datasource` value in a dashboard (panels, targets, annotations, variables)."""
    refs = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                refs.append(value)
            refs.extend(datasource_refs(value))
    elif isinstance(node, list):
        for item in node:
            refs.extend(datasource_refs(item))
    return refs


def test_every_datasource_uid_a_dashboard_uses_is_provisioned(
    datasources: dict[str, dict[str, Any]],
) -> None:
    """Checked on whatever grafana/dashboards/*.json holds (the compose file mounts the folder)."""
    assert DASHBOARDS.is_dir()
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
        for ref in datasource_refs(dashboard):
            uid = ref.get("uid") if isinstance(ref, dict) else ref
            if uid is None or uid in BUILTIN:
                continue
            variable = re.fullmatch(r"\$\{?(\w+)\}?", str(uid))
            if variable:
                assert variable.group(1) in variables, f"{path.name}: undefined {uid}"
                continue
            assert uid in datasources, f"{path.name}: datasource uid {uid!r} is not provisioned"
            if isinstance(ref, dict) and "type" in ref:
                assert ref["type"] == datasources[uid]["type"], f"{path.name}: {ref}"


def test_exemplars_link_to_tempo_by_the_label_tempo_gives_them(
    datasources: dict[str, dict[str, Any]], stack: dict[str, Any]
) -> None:
    """The only exemplars in Prometheus are those Tempo's metrics-generator remote-writes with
    its span metrics, labelled `traceID`; Prometheus keeps them only with exemplar-storage."""
    tempo = yaml.safe_load((REPO / "tempo" / "config.yaml").read_text())
    writes = tempo["metrics_generator"]["storage"]["remote_write"]
    assert all(w.get("send_exemplars") for w in writes)
    assert "--enable-feature=exemplar-storage" in stack["services"]["prometheus"]["command"]
    (dest,) = datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert (dest["name"], dest["datasourceUid"]) == ("traceID", "tempo")
