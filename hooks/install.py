#!/usr/bin/env python3
"""Add (or remove) the Agentwatch hook for every Claude Code hook event in a settings.json.

    python3 hooks/install.py --project PATH      # PATH/.claude/settings.json
    python3 hooks/install.py --user              # ~/.claude/settings.json
    python3 hooks/install.py --project PATH --http      # type "http" hooks to $AGENTWATCH_URL/v1/hooks
    python3 hooks/install.py --project PATH --uninstall # remove only ours
    python3 hooks/install.py --plugin-manifest          # regenerate hooks/hooks/hooks.json

Idempotent; every other setting and hook is kept; the previous file is saved as
settings.json.bak; a settings.json that is not valid JSON is left untouched (exit 2).
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

HOOK_SCRIPT = Path(__file__).resolve().with_name("agentwatch_hook.py")
MARKER = "agentwatch_hook.py"  # how we recognise our command hooks
HTTP_PATH = "/v1/hooks"  # ... and our http hooks
# Every hook event Claude Code 2.1.328 runs but WorktreeCreate and WorktreeRemove (a hook there
# replaces Claude Code's own `git worktree` handling): collector/vocabulary.py's HOOKED_EVENTS,
# checked by a test (this script is stdlib-only and cannot import it). Unknown newer events are
# stored as they come when a user adds them by hand.
EVENTS = (
    "Setup",
    "SessionStart",
    "InstructionsLoaded",
    "UserPromptSubmit",
    "UserPromptExpansion",
    "PreToolUse",
    "PermissionRequest",
    "PermissionDenied",
    "PostToolUse",
    "PostToolUseFailure",
    "PostToolBatch",
    "Notification",
    "Elicitation",
    "ElicitationResult",
    "SubagentStart",
    "SubagentStop",
    "TaskCreated",
    "TaskCompleted",
    "TeammateIdle",
    "Stop",
    "StopFailure",
    "PreCompact",
    "PostCompact",
    "PreModelSwitch",
    "PostModelSwitch",
    "ConfigChange",
    "CwdChanged",
    "FileChanged",
    "DirectoryAdded",
    "MessageDisplay",
    "SessionEnd",
)
# Events whose matcher is the tool name: "*" makes the match-all explicit.
TOOL_EVENTS = {
    "PreToolUse",
    "PermissionRequest",
    "PermissionDenied",
    "PostToolUse",
    "PostToolUseFailure",
}
# http mode keeps the command hook where an http hook cannot do the job: Claude Code runs
# SessionStart and Setup hooks only as commands (an http hook there never fires), and at
# SessionEnd the script reads Claude Code's own session totals from the transcript.
COMMAND_EVENTS_IN_HTTP_MODE = {"Setup", "SessionStart", "SessionEnd"}
# Synchronous: Claude Code waits for the hook, which only writes its spool (~10-20 ms). An
# `async` hook is lost in headless runs (`claude -p`, CI, the Agent SDK): Claude Code exits
# before it runs.
COMMAND_TIMEOUT_S = 10
HTTP_TIMEOUT_S = 5
PLUGIN_COMMAND = 'python3 -S "${CLAUDE_PLUGIN_ROOT}/agentwatch_hook.py"'
PLUGIN_MANIFEST = Path(__file__).resolve().parent / "hooks" / "hooks.json"


class SettingsError(Exception):
    pass


def command_hook(command: str) -> dict[str, Any]:
    return {"type": "command", "command": command, "timeout": COMMAND_TIMEOUT_S}


def script_command(python: str) -> str:
    return f"{shlex.quote(python)} -S {shlex.quote(str(HOOK_SCRIPT))}"


def http_hook(url: str) -> dict[str, Any]:
    return {
        "type": "http",
        "url": url.rstrip("/") + HTTP_PATH,
        "timeout": HTTP_TIMEOUT_S,
        # Claude Code fills $VARS in headers only from allowedEnvVars; empty when unset.
        "headers": {"Authorization": "Bearer $AGENTWATCH_TOKEN"},
        "allowedEnvVars": ["AGENTWATCH_TOKEN"],
    }


def is_ours(hook: Any) -> bool:
    if not isinstance(hook, dict):
        return False
    if hook.get("type") == "command":
        return MARKER in str(hook.get("command", ""))
    if hook.get("type") == "http":
        return str(hook.get("url", "")).rstrip("/").endswith(HTTP_PATH)
    return False


def remove_ours(settings: dict[str, Any]) -> None:
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept = []
        for group in groups:
            if isinstance(group, dict) and isinstance(group.get("hooks"), list):
                inner = [h for h in group["hooks"] if not is_ours(h)]
                if not inner and group["hooks"]:
                    continue  # the group held only our hook
                group = {**group, "hooks": inner}
            kept.append(group)
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if not hooks:
        del settings["hooks"]


def group_for(event: str, command: str, http_url: str | None) -> dict[str, Any]:
    """Our hook group for one event: the http hook where it fires, else the command hook."""
    use_http = http_url is not None and event not in COMMAND_EVENTS_IN_HTTP_MODE
    hook = http_hook(http_url) if use_http and http_url else command_hook(command)
    group: dict[str, Any] = {"hooks": [hook]}
    return {"matcher": "*", **group} if event in TOOL_EVENTS else group


def add_ours(settings: dict[str, Any], http_url: str | None, python: str) -> None:
    remove_ours(settings)  # re-installing replaces ours (e.g. switching command <-> http)
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise SettingsError('"hooks" is not a JSON object')
    for event in EVENTS:
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise SettingsError(f'"hooks.{event}" is not a JSON array')
        groups.append(group_for(event, script_command(python), http_url))


def plugin_manifest() -> dict[str, Any]:
    """hooks/hooks/hooks.json, the plugin's hooks: the same events and hooks as the installer."""
    return {
        "description": "Agentwatch: spool every hook event and deliver it to the collector",
        "hooks": {event: [group_for(event, PLUGIN_COMMAND, None)] for event in EVENTS},
    }


def telemetry_env(url: str) -> str:
    """The environment that sends Claude Code's own telemetry to the same collector."""
    lines = [
        "Claude Code's own telemetry (exact cost and tokens, live) goes to the same endpoint:",
        "  export CLAUDE_CODE_ENABLE_TELEMETRY=1",
        "  export OTEL_LOGS_EXPORTER=otlp OTEL_METRICS_EXPORTER=otlp",
        "  export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
        f"  export OTEL_EXPORTER_OTLP_ENDPOINT={url.rstrip('/')}",
    ]
    if os.environ.get("AGENTWATCH_TOKEN"):
        lines.append('  export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer $AGENTWATCH_TOKEN"')
    return "\n".join(lines)


def load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON ({exc}); fix it and run again") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path} does not hold a JSON object")
    return data


def write(path: Path, settings: dict[str, Any]) -> bool:
    """Write settings (backup first, then atomic replace); False when nothing changed."""
    new = json.dumps(settings, indent=2) + "\n"
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old is not None and json.loads(old or "{}") == settings:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if old is not None:
        path.with_name(path.name + ".bak").write_text(old, encoding="utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return True


def precompile() -> None:
    """Byte-compile the hook package now, so no event pays for it (see agentwatch_hook.py)."""
    import compileall

    compileall.compile_dir(str(HOOK_SCRIPT.parent / "awhook"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--project", type=Path, help="project directory (.claude/settings.json)")
    where.add_argument("--user", action="store_true", help="~/.claude/settings.json")
    where.add_argument(
        "--plugin-manifest", action="store_true", help="regenerate the plugin's hooks/hooks.json"
    )
    parser.add_argument("--uninstall", action="store_true", help="remove only Agentwatch's hooks")
    parser.add_argument(
        "--http",
        action="store_true",
        help='type "http" hooks to $AGENTWATCH_URL/v1/hooks (events are lost while the '
        "collector is down; SessionStart, Setup and SessionEnd keep the command hook)",
    )
    parser.add_argument(
        "--python", default="python3", help="interpreter in the hook command (default python3)"
    )
    args = parser.parse_args(argv)
    if args.plugin_manifest:
        PLUGIN_MANIFEST.write_text(json.dumps(plugin_manifest(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {PLUGIN_MANIFEST}")
        return 0
    base = Path.home() if args.user else args.project.expanduser().resolve()
    path = base / ".claude" / "settings.json"
    try:
        settings = load(path)
        if args.uninstall:
            remove_ours(settings)
        else:
            url = os.environ.get("AGENTWATCH_URL", "http://127.0.0.1:4000") if args.http else None
            add_ours(settings, url, args.python)
    except (SettingsError, OSError) as exc:
        print(f"install.py: {exc}", file=sys.stderr)
        return 2
    changed = write(path, settings)
    if not args.uninstall:
        precompile()
    action = "removed from" if args.uninstall else "installed in"
    print(f"agentwatch hooks {action} {path}" + ("" if changed else " (already up to date)"))
    if not args.uninstall:
        print(telemetry_env(os.environ.get("AGENTWATCH_URL", "http://127.0.0.1:4000")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
