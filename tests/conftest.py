"""Shared fixtures: collectors built from the app factory with isolated settings and registries."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from collector.app import create_app
from collector.settings import Settings
from tests.support.postgres import PostgresCluster, database_name, start_postgres


def envelope(**overrides: Any) -> dict[str, Any]:
    """A valid hook envelope (a PreToolUse of Bash) with a fresh event_id."""
    session = overrides.pop("session_id", "sess-" + uuid.uuid4().hex[:8])
    payload = {
        "session_id": session,
        "hook_event_name": overrides.get("hook_event", "PreToolUse"),
        "cwd": "/home/dev/shop",
        "tool_name": "Bash",
        "tool_input": {"command": "pytest -q"},
        "tool_use_id": "toolu_" + uuid.uuid4().hex[:20],
    }
    extra = overrides.pop("payload", {})
    if isinstance(extra, dict):
        payload.update(extra)
    else:
        payload = extra  # a deliberately wrong type
    env = {
        "event_id": str(uuid.uuid4()),
        "ts": int(time.time() * 1000) - 60_000,
        "source_app": "shop",
        "machine_id": "m-test",
        "session_id": session,
        "hook_event": overrides.get("hook_event", "PreToolUse"),
        "tool_name": "Bash",
        "tool_use_id": payload["tool_use_id"] if isinstance(payload, dict) else None,
        "payload": payload,
    }
    env.update(overrides)
    return env


class Harness:
    """A TestClient over a fresh app plus its registry, for reading metrics."""

    def __init__(self, client: TestClient, registry: CollectorRegistry, settings: Settings) -> None:
        self.client = client
        self.registry = registry
        self.settings = settings

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def post(self, path: str, body: Any, **headers: str) -> Any:
        import json  # not orjson: tests send integers beyond 64 bits on purpose

        headers.setdefault("content-type", "application/json")
        return self.client.post(path, content=json.dumps(body).encode(), headers=headers)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of sql (`?` placeholders) read through the app's own store, either backend."""
        with self.client.app.state.ctx.store.reader() as conn:  # type: ignore[attr-defined]
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]


@pytest.fixture
def db_backend() -> str:
    """The store the harness uses: a module overrides this fixture with params=BACKENDS to run
    its tests on both (the store's suite, the API tests that touch the store)."""
    return "sqlite"


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def make_harness(
    tmp_path: Path, db_backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Harness]]:
    opened: list[TestClient] = []
    db: Path | str = tmp_path / "agentwatch.db"
    if db_backend == "postgres":
        db = request.getfixturevalue("pg_dsn")

    def make(**settings: Any) -> Harness:
        s = dataclasses.replace(Settings(db=db), **settings).validated()
        registry = CollectorRegistry()
        client = TestClient(create_app(s, registry))
        client.__enter__()
        opened.append(client)
        return Harness(client, registry, s)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster for the session (skips, or fails under CI=true, when the
    server is not installed)."""
    cluster = start_postgres()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A `postgresql://` DSN of a fresh, empty database for this test alone."""
    return pg_cluster.create_database(database_name(request.node.name))
