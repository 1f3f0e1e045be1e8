"""otel-collector/config.yaml, loki/config.yaml and tempo/config.yaml against each other and the
compose stack: pipelines use defined components, every endpoint is a port some compose service
serves, and no metrics leave the otel-collector (Claude Code's metrics reach Prometheus through the
collector's /metrics only: a second path would count them twice)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.stack import REPO, resolved_config, served_ports

OTEL = REPO / "otel-collector" / "config.yaml"
SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")
ENV_REF = re.compile(r"\$\{env:(\w+)(?::-([^}]*))?\}")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.fixture(scope="module")
def otel() -> dict[str, Any]:
    return load(OTEL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved_config(tmp_path_factory.mktemp("compose"))


def pipelines(otel: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    result: dict[str, dict[str, list[str]]] = otel["service"]["pipelines"]
    return result


def resolve(value: str, env: dict[str, str]) -> str:
    """${env:VAR:-default} as the collector expands it, with `env` as its environment."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) in env:
            return env[m.group(1)]
        assert m.group(2) is not None, f"${{env:{m.group(1)}}} has no default and is not set"
        return m.group(2)

    return ENV_REF.sub(one, value)


def host_port(endpoint: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:\w+://)?([\w.-]+):(\d+)(/.*)?", endpoint)
    assert match, f"not host:port: {endpoint}"
    return match.group(1), int(match.group(2))


# --- pipelines ----------------------------------------------------------------------------


def test_pipelines_use_only_defined_components_and_every_component_is_used(
    otel: dict[str, Any],
) -> None:
    used: dict[str, set[str]] = {s: set() for s in SECTIONS}
    for name, pipeline in pipelines(otel).items():
        assert pipeline["receivers"] and pipeline["exporters"], name
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in (otel.get(section) or {}), f"{name}: undefined {component}"
                used[section].add(component)
    for extension in otel["service"].get("extensions", []):
        assert extension in otel["extensions"], f"undefined extension {extension}"
        used["extensions"].add(extension)
    for section in SECTIONS:
        unused = set(otel.get(section) or {}) - used[section]
        assert not unused, f"{section} defined but unused: {unused}"
    assert set(pipelines(otel)) == {"logs", "traces"}


def test_every_pipeline_starts_with_memory_limiter_and_ends_with_batch(
    otel: dict[str, Any],
) -> None:
    for name, pipeline in pipelines(otel).items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name


def test_no_second_path_for_claude_code_metrics(otel: dict[str, Any]) -> None:
    """Claude Code sends its OTLP to the collector, which exposes claude_code_* on its own
    /metrics (job agentwatch-collector). A metrics pipeline or a Prometheus exporter here would
    be a second copy of the same figures: sum() over both jobs would double every cost."""
    assert not any(name.split("/")[0] == "metrics" for name in pipelines(otel))
    kinds = {name.split("/")[0] for name in otel["exporters"]}
    assert not kinds & {"prometheus", "prometheusremotewrite"}, kinds
    assert "deltatocumulative" not in (otel.get("processors") or {})
    assert pipelines(otel)["logs"]["exporters"] == ["otlphttp/loki"]
    assert pipelines(otel)["traces"]["exporters"] == ["otlp/tempo"]


def test_health_check_extension_and_debug_exporter_only_commented(otel: dict[str, Any]) -> None:
    assert "health_check" in otel["service"]["extensions"]
    assert "debug" not in otel["exporters"]
    assert re.search(r"^\s*#\s*debug:", OTEL.read_text(), re.M), "commented debug exporter"


# --- endpoints against the compose stack --------------------------------------------------


def exporter_endpoints(otel: dict[str, Any]) -> dict[str, str]:
    return {name: cfg["endpoint"] for name, cfg in otel["exporters"].items()}


def listen_endpoints(otel: dict[str, Any]) -> list[str]:
    protocols = otel["receivers"]["otlp"]["protocols"]
    telemetry = otel["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    prom = telemetry["prometheus"]
    return [
        protocols["grpc"]["endpoint"],
        protocols["http"]["endpoint"],
        otel["extensions"]["health_check"]["endpoint"],
        f"{prom['host']}:{prom['port']}",
    ]


def test_backend_endpoints_come_from_env_with_defaults(otel: dict[str, Any]) -> None:
    for name, endpoint in exporter_endpoints(otel).items():
        assert ENV_REF.search(endpoint), f"{name}: endpoint {endpoint} is not from ${{env:...}}"


@pytest.mark.parametrize("source", ["default", "compose"])
def test_each_exporter_endpoint_names_a_compose_service_and_a_port_it_serves(
    otel: dict[str, Any], stack: dict[str, Any], source: str
) -> None:
    env = stack["services"]["otel-collector"].get("environment", {}) if source == "compose" else {}
    for name, endpoint in exporter_endpoints(otel).items():
        host, port = host_port(resolve(endpoint, env))
        assert host in stack["services"], f"{name}: {host} is not a compose service"
        assert port in served_ports(stack, host), f"{name}: {host} does not serve {port}"
    loki = resolve(otel["exporters"]["otlphttp/loki"]["endpoint"], env)
    assert loki.startswith("http://") and loki.endswith("/otlp"), loki


def test_the_collector_listens_on_the_ports_compose_gives_it(
    otel: dict[str, Any], stack: dict[str, Any]
) -> None:
    ports = served_ports(stack, "otel-collector")
    for endpoint in listen_endpoints(otel):
        host, port = host_port(endpoint)
        assert host == "0.0.0.0", f"{endpoint}: unreachable from other containers"
        assert port in ports, f"compose does not publish or expose {port}"
    assert {4317, 4318, 13133, 8888} <= ports
    assert 8889 not in ports, "no Prometheus exporter of Claude Code's metrics any more"


def test_the_collector_relay_points_at_the_otel_collector(stack: dict[str, Any]) -> None:
    env = stack["services"]["collector"]["environment"]
    host, port = host_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert host == "otel-collector" and port in served_ports(stack, host)


# --- Loki and Tempo -----------------------------------------------------------------------


def test_loki_single_binary_with_retention_and_otlp(stack: dict[str, Any]) -> None:
    loki = load(REPO / "loki" / "config.yaml")
    assert loki["server"]["http_listen_port"] in served_ports(stack, "loki")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["compactor"]["retention_enabled"] is True
    assert loki["limits_config"]["retention_period"]
    assert loki["compactor"]["delete_request_store"] == "filesystem"
    (schema,) = loki["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == (
        "tsdb",
        "v13",
        "filesystem",
    )
    data_dir = next(
        m["target"]
        for m in stack["services"]["loki"]["volumes"]
        if m["type"] == "volume" and m["source"] == "loki-data"
    )
    assert loki["common"]["path_prefix"] == data_dir


def test_tempo_local_storage_and_otlp_receivers(stack: dict[str, Any]) -> None:
    tempo = load(REPO / "tempo" / "config.yaml")
    ports = served_ports(stack, "tempo")
    assert tempo["server"]["http_listen_port"] in ports
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    for proto in ("grpc", "http"):
        host, port = host_port(protocols[proto]["endpoint"])
        assert host == "0.0.0.0" and port in ports, proto
    assert tempo["storage"]["trace"]["backend"] == "local"
    data_dir = next(
        m["target"] for m in stack["services"]["tempo"]["volumes"] if m["source"] == "tempo-data"
    )
    for path in (
        tempo["storage"]["trace"]["wal"]["path"],
        tempo["storage"]["trace"]["local"]["path"],
    ):
        assert path.startswith(data_dir + "/"), f"{path} is not on the tempo-data volume"
    (remote_write,) = tempo["metrics_generator"]["storage"]["remote_write"]
    host, port = host_port(remote_write["url"])
    assert host == "prometheus" and port in served_ports(stack, "prometheus")
    assert "--web.enable-remote-write-receiver" in stack["services"]["prometheus"]["command"]
