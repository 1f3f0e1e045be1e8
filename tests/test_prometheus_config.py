"""prometheus/prometheus.yml: promtool accepts it, its targets match the compose stack, and
Debian's Prometheus, started on a config derived from it, scrapes a real collector."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import (
    Proc,
    free_port,
    require_binary,
    start_collector,
    start_prometheus,
    wait_until,
)
from tests.support.promconfig import REPO_ALERTS_DIR, REPO_PROMETHEUS_YML, derive_config
from tests.support.stack import REPO, host_path, resolved_config, served_ports

# Claude Code's own metrics (claude_code_*) come from the collector's job: the otel-collector's
# job scrapes only its own telemetry (8888), never a Prometheus exporter of Claude Code's metrics.
JOBS = {
    "agentwatch-collector": "collector:4000",
    "otel-collector": "otel-collector:8888",
    "prometheus": "localhost:9090",
    "alertmanager": "alertmanager:9093",
    "loki": "loki:3100",
    "tempo": "tempo:3200",
    "grafana": "grafana:3000",
}


def repo_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(REPO_PROMETHEUS_YML.read_text())
    return config


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


# --- static checks ------------------------------------------------------------------------


def test_promtool_accepts_the_repo_file() -> None:
    result = promtool("check", "config", str(REPO_PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_it_with_the_repo_rule_files(tmp_path: Path) -> None:
    """The rule_files glob, pointed at the repo's alerts/: promtool also checks each rule file.

    A glob that matches nothing is valid (alerts/ may be empty while its rules are written).
    """
    glob = str(REPO_ALERTS_DIR / "*.rules.yml")
    targets = {job: "127.0.0.1:9" for job in JOBS}
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        derive_config(REPO_PROMETHEUS_YML.read_text(), targets, "127.0.0.1:9", rule_files=[glob])
    )
    result = promtool("check", "config", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    for rule_file in REPO_ALERTS_DIR.glob("*.rules.yml"):
        assert str(rule_file) in result.stdout, f"promtool did not check {rule_file}"


def job_targets(job: dict[str, Any]) -> list[str]:
    """A job's targets: static ones, and host:port of each name it finds by DNS (the collector,
    one address per replica under `make up TEAM=1`)."""
    targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    for sd in job.get("dns_sd_configs", []):
        assert sd["type"] == "A", sd
        targets += [f"{name}:{sd['port']}" for name in sd["names"]]
    return targets


def test_jobs_and_targets_match_the_contract() -> None:
    jobs = {job["job_name"]: job_targets(job) for job in repo_config()["scrape_configs"]}
    assert jobs == {name: [target] for name, target in JOBS.items()}


def test_every_target_is_a_port_its_compose_service_serves(tmp_path: Path) -> None:
    stack = resolved_config(tmp_path)
    config = repo_config()
    targets = [t for j in config["scrape_configs"] for t in job_targets(j)]
    targets += [
        t
        for am in config["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    for target in targets:
        host, _, port = target.rpartition(":")
        service = "prometheus" if host == "localhost" else host
        assert service in stack["services"], f"{target}: no compose service {service}"
        assert int(port) in served_ports(stack, service), f"{target}: {service} serves no {port}"


def test_rules_alerting_and_labels() -> None:
    config = repo_config()
    assert config["rule_files"] == ["/etc/prometheus/alerts/*.rules.yml"]
    assert config["global"]["external_labels"], "no external labels"
    assert config["global"]["scrape_interval"] == "15s"


def test_compose_mounts_what_prometheus_reads(tmp_path: Path) -> None:
    stack = resolved_config(tmp_path)
    command = stack["services"]["prometheus"]["command"]
    (config_flag,) = [a for a in command if a.startswith("--config.file=")]
    config_path = config_flag.split("=", 1)[1]
    assert host_path(stack, "prometheus", config_path) == REPO_PROMETHEUS_YML
    rules_dir = repo_config()["rule_files"][0].rsplit("/", 1)[0]
    assert host_path(stack, "prometheus", rules_dir) == REPO / "alerts"


# --- derive_config ------------------------------------------------------------------------


def test_derive_config_keeps_only_the_given_jobs_and_rewrites_their_targets() -> None:
    derived = yaml.safe_load(
        derive_config(
            REPO_PROMETHEUS_YML.read_text(),
            {"agentwatch-collector": "127.0.0.1:1234"},
            alertmanager=None,
            rule_files=[],
            scrape_interval="1s",
            evaluation_interval="1s",
        )
    )
    assert [j["job_name"] for j in derived["scrape_configs"]] == ["agentwatch-collector"]
    assert derived["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:1234"]}]
    assert "alerting" not in derived and "rule_files" not in derived
    assert derived["global"]["scrape_interval"] == "1s"
    assert derived["global"]["evaluation_interval"] == "1s"
    assert derived["global"]["external_labels"] == repo_config()["global"]["external_labels"]


def test_derive_config_defaults_to_the_repo_rule_files_and_rejects_unknown_jobs() -> None:
    derived = yaml.safe_load(
        derive_config(REPO_PROMETHEUS_YML.read_text(), {"loki": "127.0.0.1:1"}, "127.0.0.1:2")
    )
    expected = [str(p) for p in sorted(REPO_ALERTS_DIR.glob("*.rules.yml"))]
    assert derived.get("rule_files", []) == expected
    assert derived["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:2"]}
    ]
    with pytest.raises(KeyError, match="no-such-job"):
        derive_config(REPO_PROMETHEUS_YML.read_text(), {"no-such-job": "127.0.0.1:1"})


# --- Debian's Prometheus scraping the real collector --------------------------------------


@pytest.fixture(scope="module")
def scraping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("scrape")
    coll = start_collector(tmp)
    try:
        config = derive_config(
            REPO_PROMETHEUS_YML.read_text(),
            {"agentwatch-collector": f"127.0.0.1:{coll.port}"},
            alertmanager=None,
            rule_files=[],
            scrape_interval="1s",
            evaluation_interval="1s",
        )
        prom = start_prometheus(tmp, config)
        try:
            yield coll, prom
        finally:
            prom.stop()
    finally:
        coll.stop()


def query(prom: Proc, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prom.url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


@pytest.mark.e2e
def test_prometheus_scrapes_the_collector(scraping: tuple[Proc, Proc]) -> None:
    _, prom = scraping
    wait_until(
        lambda: bool(query(prom, 'up{job="agentwatch-collector"} == 1')), 30, "collector target up"
    )
    targets = httpx.get(f"{prom.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("agentwatch-collector", "up")]
    wait_until(lambda: bool(query(prom, "agentwatch_build_info")), 30, "agentwatch_build_info")
    (build_info,) = query(prom, "agentwatch_build_info")
    assert build_info["metric"]["job"] == "agentwatch-collector"
    assert build_info["metric"]["version"]


@pytest.mark.e2e
def test_stack_status_reports_each_endpoint(scraping: tuple[Proc, Proc]) -> None:
    """scripts/stack_status.py (make status): ok for live endpoints, and exit 1 on a dead one."""
    coll, prom = scraping
    script = [sys.executable, str(REPO / "scripts" / "stack_status.py")]
    live = [f"collector={coll.url}/readyz", f"prometheus={prom.url}/-/ready"]
    ok = subprocess.run([*script, *live], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout
    assert [line.split()[-1] for line in ok.stdout.splitlines()] == ["ok", "ok"]

    dead = f"loki=http://127.0.0.1:{free_port()}/ready"
    bad = subprocess.run([*script, *live, dead], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert "loki" in bad.stdout.splitlines()[-1] and "down" in bad.stdout.splitlines()[-1]


# --- exemplars: Tempo's span metrics carry a traceID exemplar ------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = (
    "# TYPE traces_spanmetrics_latency histogram\n"
    f'traces_spanmetrics_latency_bucket{{le="1.0"}} 1 # {{traceID="{TRACE_ID}"}} 0.4\n'
    'traces_spanmetrics_latency_bucket{le="+Inf"} 1\n'
    "traces_spanmetrics_latency_count 1\n"
    "traces_spanmetrics_latency_sum 0.4\n"
    "# EOF\n"
)


def compose_feature_flags(tmp_path: Path) -> list[str]:
    command = resolved_config(tmp_path)["services"]["prometheus"]["command"]
    return [str(a) for a in command if str(a).startswith("--enable-feature=")]


def test_prometheus_keeps_exemplars_that_tempo_sends(tmp_path: Path) -> None:
    """Tempo's metrics-generator remote-writes span metrics with exemplars (send_exemplars);
    Prometheus stores them only with the exemplar-storage feature."""
    features = {
        f for flag in compose_feature_flags(tmp_path) for f in flag.split("=", 1)[1].split(",")
    }
    assert "exemplar-storage" in features
    tempo = yaml.safe_load((REPO / "tempo" / "config.yaml").read_text())
    (remote_write,) = tempo["metrics_generator"]["storage"]["remote_write"]
    assert remote_write["send_exemplars"] is True


@pytest.mark.e2e
def test_prometheus_with_the_compose_feature_flags_stores_a_traceid_exemplar(
    tmp_path: Path,
) -> None:
    """Debian's Prometheus, with the feature flags compose gives the stack's Prometheus, scrapes
    an OpenMetrics histogram whose bucket carries a `traceID` exemplar (the label Tempo's span
    metrics use) and returns it from /api/v1/query_exemplars: the data Grafana's exemplar link
    to Tempo reads. (Tempo's remote-write path itself cannot run here.)"""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = OPENMETRICS.encode()
            self.send_response(200)
            self.send_header(
                "Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = derive_config(
            REPO_PROMETHEUS_YML.read_text(),
            {"tempo": f"127.0.0.1:{server.server_address[1]}"},
            alertmanager=None,
            rule_files=[],
            scrape_interval="1s",
            evaluation_interval="1s",
        )
        prom = start_prometheus(tmp_path, config, compose_feature_flags(tmp_path))
        try:
            found: list[dict[str, Any]] = []

            def exemplar() -> bool:
                now = time.time()
                response = httpx.get(
                    f"{prom.url}/api/v1/query_exemplars",
                    params={
                        "query": "traces_spanmetrics_latency_bucket",
                        "start": now - 60,
                        "end": now + 1,
                    },
                    timeout=5,
                )
                found[:] = [e["labels"] for s in response.json()["data"] for e in s["exemplars"]]
                return bool(found)

            wait_until(exemplar, 30, "an exemplar in /api/v1/query_exemplars")
            assert found[0] == {"traceID": TRACE_ID}
        finally:
            prom.stop()
    finally:
        server.shutdown()
        server.server_close()
