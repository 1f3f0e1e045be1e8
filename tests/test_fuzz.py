"""Schemathesis (its CLI) against a live collector's own OpenAPI schema: every operation, with
and without the token. Checks: never a 5xx, documented status codes and content types, bodies
that match the schema. Bounded here (AGENTWATCH_FUZZ_EXAMPLES per operation, default 10);
`make fuzz` runs many more."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import Proc, start_collector

TOKEN = "fuzz-token-" + "c3" * 12
EXAMPLES = os.environ.get("AGENTWATCH_FUZZ_EXAMPLES", "10")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
ALL_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
# /v1/stream never ends (a live feed): its auth is covered in test_security, not fuzzed here.
SPLITS = {"api": (["--exclude-path", "/v1/stream"], ALL_CHECKS)}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        "AGENTWATCH_TOKEN": TOKEN,
        "AGENTWATCH_METRICS_AUTH": "true",
        "AGENTWATCH_BODY_TIMEOUT_SECONDS": "2",
    }
    proc = start_collector(tmp, env)
    yield proc
    proc.stop()
    assert "Traceback" not in proc.logs(), "the collector logged an unhandled exception"


@pytest.mark.e2e
@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("authorized", [True, False], ids=["token", "no-token"])
def test_schemathesis_finds_no_failure(
    live: Proc, tmp_path: Path, split: str, authorized: bool
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail(f"schemathesis is not installed in {SCHEMATHESIS.parent} (pip install it)")
    selection, checks = SPLITS[split]
    args = [
        str(SCHEMATHESIS),
        "run",
        live.url + "/openapi.json",
        "--max-examples",
        EXAMPLES,
        "--checks",
        checks,
        "--request-timeout",
        "15",
        "--seed",
        "20261122",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *selection,
    ]
    if authorized:
        args += ["--header", f"Authorization: Bearer {TOKEN}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    summary = done.stdout[-6000:]
    print(summary)
    assert done.returncode == 0, summary
    assert " passed" in summary and "generated" in summary
    assert "Traceback" not in live.logs()
    assert httpx.get(live.url + "/readyz", timeout=5).status_code == 200
