"""The real Claude Code (npm, pinned in tools/package.json) run against the scripted stand-in.

Each run gets an isolated HOME, a project directory, our hooks installed one of four ways
(project settings, user settings, the plugin, http hooks), and a recorder hook beside ours that
writes down every hook Claude Code ran: the truth the stored events are compared with.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import IN_CI, REPO, wait_until

VERSION = json.loads((REPO / "tools" / "package.json").read_text())["dependencies"][
    "@anthropic-ai/claude-code"
]
INSTALL_MODES = ("project", "user", "plugin", "http")
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
# Records one hook run: its stdin JSON, one file per run (hooks of one turn run in parallel).
_RECORDER = (
    "import os,sys,time;d=sys.argv[1];n='%d-%d.json'%(time.time_ns(),os.getpid());"
    "open(os.path.join(d,n),'w').write(sys.stdin.read())"
)


def claude_binary() -> Path:
    """The platform's binary from the optional dependency npm installed; fail in CI if absent."""
    arch = _ARCH.get(platform.machine().lower(), platform.machine())
    path = (
        REPO / "tools" / "node_modules" / "@anthropic-ai" / f"claude-code-linux-{arch}" / "claude"
    )
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"Claude Code {VERSION} not installed at {path} (make node-deps)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Run:
    """A finished `claude -p --output-format json`."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        try:
            out: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"claude printed no JSON:\n{self.stdout}\n{self.stderr}") from None
        return out

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])


@dataclass
class Claude:
    """Claude Code with an isolated HOME, our hooks installed by `mode`, and a recorder."""

    root: Path
    api_url: str
    collector_url: str
    mode: str = "project"
    env_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.binary = claude_binary()
        self.home = self.root / "home"
        self.project = self.root / f"project-{uuid.uuid4().hex[:8]}"  # its own source_app
        self.spool = self.root / "spool"
        self.recorded = self.root / "recorded"
        for d in (self.home, self.project, self.recorded):
            d.mkdir(parents=True, exist_ok=True)
        # A returning user: Claude Code has saved its user id (a first run saves it meanwhile).
        self.config = {"userID": uuid.uuid4().hex + uuid.uuid4().hex}
        (self.home / ".claude.json").write_text(json.dumps(self.config))
        self._install()

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
        keep = {k: v for k, v in keep.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
        keep.update(
            HOME=str(self.home),
            ANTHROPIC_BASE_URL=self.api_url,
            ANTHROPIC_API_KEY="sk-ant-test-not-a-real-key",
            DISABLE_AUTOUPDATER="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            AGENTWATCH_URL=self.collector_url,
            AGENTWATCH_SPOOL_DIR=str(self.spool),
            **self.env_extra,
        )
        return keep

    def _install(self) -> None:
        installer = [sys.executable, str(REPO / "hooks" / "install.py")]
        python = ["--python", sys.executable]
        if self.mode == "project":
            args = ["--project", str(self.project), *python]
        elif self.mode == "user":
            args = ["--user", *python]
        elif self.mode == "http":
            args = ["--project", str(self.project), "--http", *python]
        else:
            args = []  # the plugin: `--plugin-dir hooks` on each run
        if args:
            subprocess.run([*installer, *args], env=self.env(), check=True, capture_output=True)
        self._add_recorder()

    def _add_recorder(self) -> None:
        """A command hook on every event we install, in the project's local settings."""
        sys.path.insert(0, str(REPO / "hooks"))
        try:
            import install
        finally:
            sys.path.remove(str(REPO / "hooks"))
        command = f'{sys.executable} -S -c "{_RECORDER}" {self.recorded}'
        hooks: dict[str, list[dict[str, Any]]] = {}
        for event in install.EVENTS:
            group: dict[str, Any] = {"hooks": [{"type": "command", "command": command}]}
            if event in install.TOOL_EVENTS:
                group["matcher"] = "*"
            hooks[event] = [group]
        path = self.project / ".claude" / "settings.local.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"hooks": hooks}, indent=1))

    def argv(self, *args: str) -> list[str]:
        plugin = ["--plugin-dir", str(REPO / "hooks")] if self.mode == "plugin" else []
        return [str(self.binary), *plugin, *args]

    def headless(self, prompt: str, *args: str, timeout: float = 180) -> Run:
        proc = subprocess.run(
            self.argv("-p", prompt, "--output-format", "json", *args),
            cwd=self.project,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def interrupted(self, prompt: str, when: Any, *args: str, timeout: float = 180) -> Run:
        """A headless run that gets SIGINT once when() is true (a slow tool is running)."""
        proc = subprocess.Popen(
            self.argv("-p", prompt, "--output-format", "json", *args),
            cwd=self.project,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            wait_until(when, timeout, "the moment to interrupt")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return Run(proc.returncode, out, err)

    @contextmanager
    def interactive(self, *args: str) -> Iterator[Tmux]:
        """Claude Code's terminal UI under tmux, as a person starts it in the project."""
        tmux = shutil.which("tmux")
        if tmux is None:
            message = "tmux not found (apt-get install tmux)"
            pytest.fail(message) if IN_CI else pytest.skip(message)
        key = self.env()["ANTHROPIC_API_KEY"]
        # What the first-run screens would ask: onboarding done, this key approved, project trusted.
        (self.home / ".claude.json").write_text(
            json.dumps(
                self.config
                | {
                    "hasCompletedOnboarding": True,
                    "theme": "dark",
                    "customApiKeyResponses": {"approved": [key[-20:]], "rejected": []},
                    "projects": {str(self.project): {"hasTrustDialogAccepted": True}},
                }
            )
        )
        env = [f"{k}={v}" for k, v in self.env().items()] + ["TERM=xterm-256color"]
        session = Tmux(str(tmux), self.root / "tmux.sock")
        session.run(
            "new-session", "-d", "-x", "160", "-y", "50", "-c", str(self.project),
            "env", "-i", *env, *self.argv(*args),
        )  # fmt: skip
        try:
            yield session
        finally:
            session.run("kill-server", check=False)

    # -- what Claude Code ran ------------------------------------------------------------------
    def hooks_run(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Every hook payload the recorder saw, in the order the hooks started."""
        runs = []
        for path in sorted(self.recorded.glob("*.json"), key=lambda p: int(p.name.split("-")[0])):
            try:
                payload = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue  # still being written
            if session_id is None or payload.get("session_id") == session_id:
                runs.append(payload)
        return runs

    def user_id(self) -> str:
        """Claude Code's own user id for this HOME (what its telemetry calls user.id)."""
        return str(json.loads((self.home / ".claude.json").read_text())["userID"])

    def transcript(self, session_id: str) -> Path:
        found = list((self.home / ".claude" / "projects").glob(f"*/{session_id}.jsonl"))
        assert found, f"no transcript for {session_id}"
        return found[0]


def model_usage(result: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Claude Code's own `modelUsage` in the collector's token types."""
    names = {
        "inputTokens": "input",
        "outputTokens": "output",
        "cacheReadInputTokens": "cache_read",
        "cacheCreationInputTokens": "cache_creation",
    }
    return {
        model: {ours: int(m.get(theirs, 0)) for theirs, ours in names.items()}
        for model, m in result["modelUsage"].items()
    }


@dataclass
class Tmux:
    """One tmux server on a private socket: type into its pane, read its screen."""

    binary: str
    socket: Path

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [self.binary, "-S", str(self.socket), *args], capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {args[0]}: {proc.stderr}")
        return proc.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", check=False)

    def type(self, text: str) -> None:
        self.run("send-keys", "-l", text)
        self.run("send-keys", "Enter")

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        try:
            wait_until(check, timeout, what)
        except TimeoutError:
            raise AssertionError(f"{what} never happened; the screen:\n{self.screen()}") from None
