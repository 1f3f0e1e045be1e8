"""Wall time of one hook run (collector up, down, hanging) beside the bare interpreter start-up.

Every hook run is paired with a bare `<interpreter> -S -c pass` run right before it, so both
see the same machine load. The interpreter is the real binary (no pyenv shim), as Claude Code
would find it on PATH. Target: hook p95 <= 2x bare p95 in every case.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from bench.common import Figure, percentile, say

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "hooks" / "agentwatch_hook.py"
PAYLOAD = (REPO / "tests" / "fixtures" / "hooks" / "03_pre_tool_use_bash.json").read_bytes()
PYTHON = os.path.realpath(sys.executable)
TARGET_RATIO = 2.0


def _timed(args: list[str], stdin: bytes, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, input=stdin, env=env, stdout=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - start) * 1000


@contextmanager
def _up(tmp: Path) -> Iterator[str]:
    from tests.support.procs import start_collector

    proc = start_collector(tmp)
    try:
        yield proc.url
    finally:
        proc.stop()


@contextmanager
def _down(tmp: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


@contextmanager
def _hanging(tmp: Path) -> Iterator[str]:
    with socket.socket() as s:  # accepts (kernel backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


CASES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "up": _up,
    "down": _down,
    "hanging": _hanging,
}


def run(quick: bool) -> list[Figure]:
    runs = 40 if quick else 300
    figures: list[Figure] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTWATCH_")}
    with tempfile.TemporaryDirectory(prefix="aw-bench-hook-") as tmpdir:
        tmp = Path(tmpdir)
        for case, server in CASES.items():
            with server(tmp / case) as url:
                env = {**base_env, "AGENTWATCH_URL": url, "AGENTWATCH_SPOOL_DIR": str(tmp / case)}
                hook = [PYTHON, "-S", str(HOOK)]
                _timed(hook, PAYLOAD, env)  # first run creates the spool and byte-compiles
                bare: list[float] = []
                times: list[float] = []
                for _ in range(runs):
                    bare.append(_timed([PYTHON, "-S", "-c", "pass"], b"", env))
                    times.append(_timed(hook, PAYLOAD, env))
            b95, h50, h95 = percentile(bare, 95), percentile(times, 50), percentile(times, 95)
            ratio = h95 / b95
            met = ratio <= TARGET_RATIO
            say(
                f"hook ({case}): p50 {h50:.1f} ms, p95 {h95:.1f} ms; bare start-up p50 "
                f"{percentile(bare, 50):.1f} ms, p95 {b95:.1f} ms; p95 ratio {ratio:.2f}"
            )
            figures += [
                Figure(f"hook_{case}_p50_ms", round(h50, 2), "ms", "", True),
                Figure(f"hook_{case}_p95_ms", round(h95, 2), "ms", "", True),
                Figure(f"hook_{case}_bare_startup_p95_ms", round(b95, 2), "ms", "", True),
                Figure(f"hook_{case}_p95_vs_bare", round(ratio, 2), "x", "<= 2.0", met),
            ]
    return figures
