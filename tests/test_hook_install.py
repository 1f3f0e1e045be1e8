"""hooks/install.py against real settings files, run as `make install-hooks` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from collector.vocabulary import HOOKED_EVENTS
from tests.support.procs import REPO

INSTALL = REPO / "hooks" / "install.py"
PLUGIN = REPO / "hooks"
EVENTS = set(HOOKED_EVENTS)
COMMAND_IN_HTTP_MODE = {"Setup", "SessionStart", "SessionEnd"}
THEIRS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test)"]},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "./guard.sh"}]}
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
}


def install(project: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, str(INSTALL), "--project", str(project), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def settings_of(project: Path) -> dict[str, Any]:
    return json.loads((project / ".claude" / "settings.json").read_text())


def ours(settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event, groups in settings.get("hooks", {}).items():
        for group in groups:
            for hook in group["hooks"]:
                if "agentwatch_hook.py" in hook.get("command", "") or hook.get("url", "").endswith(
                    "/v1/hooks"
                ):
                    found.setdefault(event, []).append(hook)
    return found


def write_theirs(project: Path) -> Path:
    path = project / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(THEIRS, indent=4))
    return path


def test_install_merges_with_existing_settings_and_hooks(tmp_path: Path) -> None:
    path = write_theirs(tmp_path)
    before = path.read_text()
    proc = install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    # ... and it says how Claude Code's own telemetry reaches the same endpoint.
    assert "export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4000" in proc.stdout
    settings = settings_of(tmp_path)
    assert settings["model"] == "opus" and settings["permissions"] == THEIRS["permissions"]
    assert THEIRS["hooks"]["PreToolUse"][0] in settings["hooks"]["PreToolUse"]
    assert THEIRS["hooks"]["Stop"][0] in settings["hooks"]["Stop"]
    found = ours(settings)
    assert set(found) == EVENTS and all(len(h) == 1 for h in found.values())
    hook = found["PreToolUse"][0]
    assert hook["type"] == "command" and hook["timeout"] <= 10
    assert (
        " -S " in hook["command"] and str(REPO / "hooks" / "agentwatch_hook.py") in hook["command"]
    )
    # Synchronous everywhere: `async` hooks are lost when a headless run exits.
    assert not any(h.get("async") for hooks in found.values() for h in hooks)
    assert (path.parent / "settings.json.bak").read_text() == before


def test_install_is_idempotent(tmp_path: Path) -> None:
    write_theirs(tmp_path)
    install(tmp_path)
    first = (tmp_path / ".claude" / "settings.json").read_text()
    proc = install(tmp_path)
    assert proc.returncode == 0 and "already up to date" in proc.stdout
    assert (tmp_path / ".claude" / "settings.json").read_text() == first


def test_uninstall_removes_only_ours(tmp_path: Path) -> None:
    write_theirs(tmp_path)
    install(tmp_path)
    proc = install(tmp_path, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert settings_of(tmp_path) == THEIRS


def test_uninstall_of_a_fresh_install_leaves_no_hooks_key(tmp_path: Path) -> None:
    install(tmp_path)
    assert set(ours(settings_of(tmp_path))) == EVENTS
    install(tmp_path, "--uninstall")
    assert settings_of(tmp_path) == {}


def test_malformed_settings_are_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text('{"hooks": {,}')
    for args in ((), ("--uninstall",), ("--http",)):
        proc = install(tmp_path, *args)
        assert proc.returncode != 0
        assert "settings.json is not valid JSON" in proc.stderr
        assert path.read_text() == '{"hooks": {,}'
    assert not (path.parent / "settings.json.bak").exists()


def test_http_mode_replaces_command_hooks(tmp_path: Path) -> None:
    write_theirs(tmp_path)
    install(tmp_path)
    env = {"AGENTWATCH_URL": "http://127.0.0.1:4999", "PATH": "/usr/bin:/bin"}
    proc = install(tmp_path, "--http", env=env)
    assert proc.returncode == 0, proc.stderr
    found = ours(settings_of(tmp_path))
    assert set(found) == EVENTS
    hook = found["Stop"][0]
    assert hook["type"] == "http" and hook["url"] == "http://127.0.0.1:4999/v1/hooks"
    assert hook["allowedEnvVars"] == ["AGENTWATCH_TOKEN"]
    assert all(len(h) == 1 for h in found.values())
    kinds = {event: hooks[0]["type"] for event, hooks in found.items()}
    assert {e for e, kind in kinds.items() if kind == "command"} == COMMAND_IN_HTTP_MODE
    install(tmp_path, "--uninstall")
    assert settings_of(tmp_path) == THEIRS


def test_plugin_manifest_and_hooks_config(tmp_path: Path) -> None:
    manifest = json.loads((PLUGIN / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["name"] == "agentwatch"
    config = json.loads((PLUGIN / "hooks" / "hooks.json").read_text())
    assert set(config["hooks"]) == EVENTS
    for groups in config["hooks"].values():
        (group,) = groups
        (hook,) = group["hooks"]
        assert hook["command"] == 'python3 -S "${CLAUDE_PLUGIN_ROOT}/agentwatch_hook.py"'
        script = hook["command"].split('"')[1].replace("${CLAUDE_PLUGIN_ROOT}", str(PLUGIN))
        assert Path(script).is_file()
    # The plugin installs the same hooks as install.py (regenerate it with
    # `python3 hooks/install.py --plugin-manifest`).
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        import install as installer
    finally:
        sys.path.remove(str(REPO / "hooks"))
    assert config == installer.plugin_manifest()
    install(tmp_path)
    for event, hooks in ours(settings_of(tmp_path)).items():
        plugin_hook = config["hooks"][event][0]["hooks"][0]
        assert {k: v for k, v in hooks[0].items() if k != "command"} == {
            k: v for k, v in plugin_hook.items() if k != "command"
        }


def test_the_installer_hooks_every_event_of_the_vocabulary() -> None:
    """hooks/install.py is stdlib-only and cannot import the collector: its list is checked
    against collector/vocabulary.py instead, in the same order."""
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        import install as installer
    finally:
        sys.path.remove(str(REPO / "hooks"))
    assert installer.EVENTS == HOOKED_EVENTS
