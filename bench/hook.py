"""What a synchronous hook adds to each event (collector up, down, hanging), beside bare start-up.

Claude Code runs a command hook with the event's JSON on stdin and waits until the hook has
exited and its stdout/stderr pipes have closed, so that is what is timed here: a detached flusher
that kept a pipe open would show up in these figures. Every hook run is paired with a bare
`<interpreter> -S -c pass` run right before it, timed the same way, so both see the same machine
load. The interpreter is the real binary (no pyenv shim, no venv wrapper), as Claude Code would
find it on PATH. The cases:
- up: a live collector; the flusher delivers.
- down: nothing listens on the port (connection refused); the flusher backs off.
- hanging: a socket that accepts and never answers; the flusher blocks until its read timeout.
Target: hook p95 <= 2x bare p95 in every case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path

from bench.common import Figure, percentile, say
from tests.support.hanging import HangingServer
from tests.support.procs import free_port, wait_until
from tests.support.spool import lock_free

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "hooks" / "agentwatch_hook.py"
PAYLOAD = (REPO / "tests" / "fixtures" / "hooks" / "03_pre_tool_use_bash.json").read_bytes()
PYTHON = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
TARGET_RATIO = 2.0


def _timed(args: list[str], stdin: bytes, env: dict[str, str]) -> float:
    """Milliseconds until the process has exited and both its pipes are closed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.communicate(stdin, timeout=60)  # reads both pipes to EOF, then waits for the exit
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
    yield f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused


@contextmanager
def _hanging(tmp: Path) -> Iterator[str]:
    with HangingServer() as server:  # closes its connections on exit: the flushers give up
        yield server.url


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
            spool = tmp / case
            with server(spool) as url:
                env = {**base_env, "AGENTWATCH_URL": url, "AGENTWATCH_SPOOL_DIR": str(spool)}
                hook = [PYTHON, "-S", str(HOOK)]
                _timed(hook, PAYLOAD, env)  # first run creates the spool and byte-compiles
                bare: list[float] = []
                times: list[float] = []
                for _ in range(runs):
                    bare.append(_timed([PYTHON, "-S", "-c", "pass"], b"", env))
                    times.append(_timed(hook, PAYLOAD, env))
            # The server is gone: let the last flusher give up before the spool is removed.
            wait_until(partial(lock_free, spool / "flush.lock"), 30, f"the {case} flusher to exit")
            b50, b95 = percentile(bare, 50), percentile(bare, 95)
            h50, h95 = percentile(times, 50), percentile(times, 95)
            ratio = h95 / b95
            say(
                f"hook ({case}): p50 {h50:.1f} ms, p95 {h95:.1f} ms, max {max(times):.1f} ms; "
                f"bare start-up p50 {b50:.1f} ms, p95 {b95:.1f} ms; p95 ratio {ratio:.2f} "
                f"({runs} runs each)"
            )
            figures += [
                Figure(f"hook_{case}_p50_ms", round(h50, 2), "ms", "report", True),
                Figure(f"hook_{case}_p95_ms", round(h95, 2), "ms", "report", True),
                Figure(f"hook_{case}_bare_startup_p50_ms", round(b50, 2), "ms", "report", True),
                Figure(f"hook_{case}_bare_startup_p95_ms", round(b95, 2), "ms", "report", True),
                Figure(
                    f"hook_{case}_p95_vs_bare",
                    round(ratio, 2),
                    "ratio",
                    f"<= {TARGET_RATIO:g}",
                    ratio <= TARGET_RATIO,
                ),
            ]
    say(f"hook bench interpreter: {PYTHON}")
    return figures
