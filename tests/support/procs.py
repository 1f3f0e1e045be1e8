"""Start and stop the real processes the e2e tests use: uvicorn, Prometheus, Alertmanager.

Every process listens on 127.0.0.1 on an ephemeral port and is killed when the test ends.
Under CI=true a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Path of a binary; skip locally, fail under CI when it is missing."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found (apt-get install prometheus prometheus-alertmanager)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


@dataclass
class Proc:
    """A started process with its base URL and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def _spawn(
    args: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ), cwd=REPO
        )


def start_collector(
    tmp: Path, env: Mapping[str, str] | None = None, port: int | None = None, db: Path | None = None
) -> Proc:
    """A real uvicorn serving collector.app:create_app on 127.0.0.1; waits for /readyz."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
    full_env.update(
        AGENTWATCH_HOST="127.0.0.1",
        AGENTWATCH_PORT=str(port),
        AGENTWATCH_DB=str(db or tmp / "agentwatch.db"),
    )
    full_env.update(env or {})
    log = tmp / f"collector-{port}.log"
    proc = _spawn([sys.executable, "-m", "collector"], log, full_env)
    p = Proc(proc, f"http://127.0.0.1:{port}", port, log, full_env)
    try:
        wait_until(lambda: _http_ok(p.url + "/readyz"), 30, "collector /readyz")
    except TimeoutError:
        p.kill()
        raise AssertionError("collector did not become ready:\n" + p.logs()) from None
    return p


@contextmanager
def collector(tmp: Path, env: Mapping[str, str] | None = None, **kw: object) -> Iterator[Proc]:
    p = start_collector(tmp, env, **kw)  # type: ignore[arg-type]
    try:
        yield p
    finally:
        p.stop()


def start_prometheus(tmp: Path, config_yaml: str, extra_args: list[str] | None = None) -> Proc:
    """Debian's Prometheus with the given config; waits for /-/ready."""
    binary = require_binary("prometheus")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(config_yaml)
    args = [
        binary,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={tmp / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *(extra_args or []),
    ]
    p = Proc(
        _spawn(args, tmp / "prometheus.log"),
        f"http://127.0.0.1:{port}",
        port,
        tmp / "prometheus.log",
    )
    try:
        wait_until(lambda: _http_ok(p.url + "/-/ready"), 30, "prometheus /-/ready")
    except TimeoutError:
        p.kill()
        raise AssertionError("prometheus did not start:\n" + p.logs()) from None
    return p


def start_alertmanager(tmp: Path, config_yaml: str) -> Proc:
    """Debian's Alertmanager (binary prometheus-alertmanager), no clustering; waits for /-/ready."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    cfg = tmp / "alertmanager.yml"
    cfg.write_text(config_yaml)
    args = [
        binary,
        f"--config.file={cfg}",
        f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    p = Proc(
        _spawn(args, tmp / "alertmanager.log"),
        f"http://127.0.0.1:{port}",
        port,
        tmp / "alertmanager.log",
    )
    try:
        wait_until(lambda: _http_ok(p.url + "/-/ready"), 30, "alertmanager /-/ready")
    except TimeoutError:
        p.kill()
        raise AssertionError("alertmanager did not start:\n" + p.logs()) from None
    return p
