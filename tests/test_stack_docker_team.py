"""`make up TEAM=1` with testcontainers where a Docker engine answers: PostgreSQL and two
collector replicas over the stack. Skipped elsewhere with the reason (tests/test_stack_docker.py);
the overlay itself is checked without Docker by tests/test_compose_team.py, and the shared store
by tests/test_postgres_collectors.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.procs import wait_until
from tests.test_stack_docker import (
    COLLECTOR,
    PROMETHEUS,
    compose_stack,
    docker_unavailable,
    send_session,
)

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

REPLICA_2 = "http://127.0.0.1:4001"


@pytest.fixture(scope="module")
def team_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    files = ["docker-compose.monitoring.yml", "docker-compose.team.yml"]
    with compose_stack(tmp_path_factory.mktemp("team"), files) as password:
        yield password


def test_both_replicas_answer_for_one_shared_store(
    team_stack: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sid = send_session(tmp_path_factory.mktemp("hook"))  # to the replica on :4000
    session = httpx.get(f"{REPLICA_2}/v1/sessions/{sid}", timeout=10)
    assert session.status_code == 200, session.text
    assert session.json()["events"] == 6
    states = sorted(
        httpx.get(f"{url}/readyz", timeout=10).json()["relay"]["state"]
        for url in (COLLECTOR, REPLICA_2)
    )
    assert states == ["ok", "standby"]  # one exports, the other stands by


def test_prometheus_scrapes_each_replica(team_stack: str) -> None:
    query = 'count(up{job="agentwatch-collector"} == 1)'

    def two_up() -> bool:
        r = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=5).json()
        result = r["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) == 2

    wait_until(two_up, 90, "both replicas scraped")
