"""Nobody let in: bearer auth on every route (enumerated from the app, so new routes are covered),
HMAC replay protection on a live collector, constant-time comparisons, non-root containers."""

from __future__ import annotations

import ast
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from fastapi.routing import APIRoute

from collector import auth
from collector.app import create_app
from collector.settings import Settings
from tests.conftest import Harness, envelope
from tests.support.procs import REPO, Proc, start_collector

TOKEN = "sec-token-" + "a1" * 16
SECRET = "hmac-secret-" + "b2" * 16
OPEN_ROUTES = {"/healthz", "/readyz"}
# FastAPI's own documentation routes are not part of the schema they serve; they hold no data.
DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _walk(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield from (
                (m, prefix + route.path) for m in sorted(route.methods or ()) if m != "HEAD"
            )
        elif hasattr(route, "original_router"):  # FastAPI >= 0.160 keeps included routers whole
            yield from _walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif hasattr(route, "routes"):  # a Mount
            yield from _walk(route.routes, prefix + route.path)
        else:
            assert getattr(route, "path", None) in DOCS_ROUTES, f"unexpected route {route}"


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route the app factory builds (not only the schema's)."""
    return list(_walk(create_app(Settings(db=Path("/nonexistent/never-opened.db"))).routes))


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-" + uuid.uuid4().hex[:8], path)


def status_of(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> int:
    """The status only: streaming routes answer headers first and are closed at once."""
    body = b"{}" if method in {"POST", "PUT", "PATCH"} else None
    headers = {**headers, "content-type": "application/json"}
    with client.stream(method, concrete(path), content=body, headers=headers) as response:
        return response.status_code


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("secured")
    proc = start_collector(tmp, {"AGENTWATCH_TOKEN": TOKEN, "AGENTWATCH_METRICS_AUTH": "true"})
    yield proc
    proc.stop()


@pytest.mark.e2e
def test_schema_and_app_routes_agree(secured: Proc) -> None:
    """The OpenAPI schema (what fuzzing and clients see) lists every route the app serves."""
    schema = httpx.get(secured.url + "/openapi.json", timeout=5).json()
    in_schema = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert in_schema == set(app_routes())


@pytest.mark.e2e
def test_every_route_but_health_needs_the_token(secured: Proc) -> None:
    routes = app_routes()
    assert ("POST", "/v1/events") in routes and ("GET", "/metrics") in routes
    refused: list[str] = []
    with httpx.Client(base_url=secured.url, timeout=10) as client:
        for method, path in routes:
            for headers in (
                {},
                {"authorization": "Bearer wrong-" + TOKEN},
                {"authorization": TOKEN},  # no scheme
                {"authorization": "Basic " + TOKEN},
                {"authorization": f"Bearer {TOKEN[:-1]}"},  # a prefix of the token
            ):
                got = status_of(client, method, path, headers)
                if path in OPEN_ROUTES:
                    assert got == 200, (method, path, headers, got)
                else:
                    assert got == 401, (method, path, headers, got)
            ok = status_of(client, method, path, {"authorization": f"Bearer {TOKEN}"})
            assert ok != 401 and ok < 500, (method, path, ok)
            refused.append(f"{method} {path}")
        answer = client.post("/v1/events", json=envelope())
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert "token" in answer.json()["error"]
    print(f"checked {len(refused)} routes: {', '.join(refused)}")


def test_metrics_are_open_unless_metrics_auth(make_harness: Any) -> None:
    h: Harness = make_harness(token=TOKEN)
    assert h.client.get("/metrics").status_code == 200
    assert h.client.get("/v1/events").status_code in {401, 405}


def _signed(body: bytes, ts: int, secret: str = SECRET) -> dict[str, str]:
    # Computed here from the contract, not with collector.auth.sign: the test checks the code.
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "authorization": f"Bearer {TOKEN}",
        "content-type": "application/json",
        "x-agentwatch-timestamp": str(ts),
        "x-agentwatch-signature": "sha256=" + mac,
    }


@pytest.mark.e2e
def test_hmac_replays_and_stale_signatures_are_refused_on_a_live_collector(
    tmp_path: Path,
) -> None:
    env = {"AGENTWATCH_TOKEN": TOKEN, "AGENTWATCH_HMAC_SECRET": SECRET}
    proc = start_collector(tmp_path, env)
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as c:
            now = int(time.time())
            body = orjson.dumps(envelope())
            first = c.post("/v1/events", content=body, headers=_signed(body, now))
            assert first.status_code == 200, first.text
            again = c.post("/v1/events", content=body, headers=_signed(body, now))
            assert again.status_code == 401 and "replay" in again.json()["error"]
            # The same signed body on another route is the same signature: also a replay.
            hook = c.post("/v1/hooks", content=body, headers=_signed(body, now))
            assert hook.status_code == 401
            # 30 s past the 300 s window either side: the requests before take time too.
            for ts in (now - 330, now + 330, now - 86_400 * 365):
                fresh = orjson.dumps(envelope())
                stale = c.post("/v1/events", content=fresh, headers=_signed(fresh, ts))
                assert stale.status_code == 401 and "window" in stale.json()["error"]
            other = orjson.dumps(envelope())
            swapped = c.post("/v1/events", content=other, headers=_signed(body, now + 1))
            assert swapped.status_code == 401
            wrong_key = c.post(
                "/v1/events", content=other, headers=_signed(other, now, "not-" + SECRET)
            )
            assert wrong_key.status_code == 401
            no_token = {**_signed(other, now), "authorization": ""}
            assert c.post("/v1/events", content=other, headers=no_token).status_code == 401
            # Inside the window (and made after the collector started), a new body is fine.
            late = c.post("/v1/events", content=other, headers=_signed(other, now))
            assert late.status_code == 200, late.text
            raw = {"session_id": "s-hmac-1", "hook_event_name": "Stop"}
            raw_body = orjson.dumps(raw)
            assert (
                c.post("/v1/hooks", content=raw_body, headers=_signed(raw_body, now)).status_code
                == 204
            )
            alerts = orjson.dumps({"alerts": []})
            assert (
                c.post("/v1/alerts", content=alerts, headers=_signed(alerts, now)).status_code
                == 200
            )
            # Alertmanager cannot sign: /v1/alerts takes the token alone, but never no token.
            bearer = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
            assert c.post("/v1/alerts", content=alerts, headers=bearer).status_code == 200
            no_auth = {"content-type": "application/json"}
            assert c.post("/v1/alerts", content=alerts, headers=no_auth).status_code == 401
            metrics = c.get("/metrics").text
        assert 'agentwatch_events_rejected_total{reason="unauthorized"} 9.0' in metrics
    finally:
        proc.stop()


def test_comparisons_go_through_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behaviour: the token and signature checks call hmac.compare_digest with the secrets."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)

    class FakeRequest:
        headers = {"authorization": "Bearer guess"}

    with pytest.raises(auth.Unauthorized):
        auth.check_token(FakeRequest(), TOKEN)  # type: ignore[arg-type]
    assert (b"guess", TOKEN.encode()) in calls
    verifier = auth.HmacVerifier(SECRET)
    now = str(int(time.time()))
    with pytest.raises(auth.Unauthorized):
        verifier.verify(now, "sha256=" + "0" * 64, b"{}")
    assert any(b == b"sha256=" + b"0" * 64 for _, b in calls[1:])


def _secret_names(node: ast.AST) -> set[str]:
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return {n for n in names if re.search(r"token|secret|signature|digest|password", n, re.I)}


def test_no_secret_is_compared_with_equality_anywhere_in_the_collector() -> None:
    """Source check (a complement to the behaviour test above): no ==/!= on secret values."""
    offenders = []
    for path in sorted((REPO / "collector").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                operands = [node.left, *node.comparators]
                # Comparing against a literal (e.g. `scheme == "bearer"`) leaks nothing secret.
                if any(_secret_names(o) for o in operands) and not any(
                    isinstance(o, ast.Constant) for o in operands
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
    assert "compare_digest" in (REPO / "collector" / "auth.py").read_text()


def test_container_images_run_as_non_root() -> None:
    dockerfiles = [
        p
        for p in REPO.rglob("Dockerfile*")
        if not {".venv", "node_modules", ".git"} & set(p.relative_to(REPO).parts)
    ]
    assert dockerfiles, "no Dockerfile found"
    for path in dockerfiles:
        users = re.findall(r"^\s*USER\s+(\S+)", path.read_text(), re.M)
        assert users, f"{path}: no USER"
        assert users[-1].split(":")[0] not in {"root", "0"}, f"{path}: runs as {users[-1]}"
    compose = yaml.safe_load((REPO / "docker-compose.monitoring.yml").read_text())
    for name, service in compose["services"].items():
        assert not service.get("privileged"), name
        user = str(service.get("user", "")).split(":")[0]
        if user in {"root", "0"}:
            # Only a one-shot init step without a network may run as root (it chowns volumes).
            assert service.get("restart") == "no" and service.get("network_mode") == "none", name
