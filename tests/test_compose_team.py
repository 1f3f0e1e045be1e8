"""`make up TEAM=1`: docker-compose.team.yml over the stack, checked by the real Compose binary.

PostgreSQL (pinned, healthy before the collectors start, data on a volume, a generated password
that no file in the repo holds) and two collector replicas on one database; Prometheus finds
every replica by the service name.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.stack import COMPOSE_FILE, REPO, TEST_ENV, compose_binary

TEAM_FILE = REPO / "docker-compose.team.yml"


def team_config(tmp: Path, env: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp / "team.env"
    env_file.write_text(env)
    cmd = [str(compose_binary()), "-f", str(COMPOSE_FILE), "-f", str(TEAM_FILE)]
    cmd += ["--env-file", str(env_file), "config", "--format", "json"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, env={})


def test_team_stack_runs_two_collectors_on_one_postgres(tmp_path: Path) -> None:
    result = team_config(tmp_path, TEST_ENV + "POSTGRES_PASSWORD=test-only-pg\n")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    pg, collector = config["services"]["postgres"], config["services"]["collector"]
    assert ":" in pg["image"] and not pg["image"].endswith(":latest")
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert [v["source"] for v in pg["volumes"]] == ["postgres-data"]
    assert "ports" not in pg  # only the collectors reach it
    assert collector["deploy"]["replicas"] == 2
    assert collector["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert collector["environment"]["AGENTWATCH_DB"].startswith("postgresql://")
    assert "test-only-pg" not in collector["environment"]["AGENTWATCH_DB"]  # not in the URL
    assert collector["environment"]["PGPASSWORD"] == "test-only-pg"
    ports = collector["ports"]
    assert len(ports) == 1 and ports[0]["host_ip"] == "127.0.0.1"
    assert ports[0]["published"] == "4000-4001"


def test_team_stack_refuses_to_start_without_its_password(tmp_path: Path) -> None:
    result = team_config(tmp_path, TEST_ENV)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_prometheus_scrapes_every_collector_replica() -> None:
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "agentwatch-collector")
    assert job["dns_sd_configs"] == [{"names": ["collector"], "type": "A", "port": 4000}]
    assert "static_configs" not in job
