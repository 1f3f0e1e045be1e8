"""The hook: stdin JSON -> redacted envelope -> spool -> detached flusher. Never the network."""

from __future__ import annotations

import os
import sys
import time

from . import fastjson, redact
from .config import Config, load
from .log import log
from .spool import Spool, try_lock

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional

    from .transcript import Usage


MAX_STDIN_BYTES = 32 * 1024 * 1024


def main(argv: List[str]) -> None:
    cfg = load(os.environ)
    spool = Spool(cfg.spool_dir)
    spool.ensure()
    if "--flush" in argv:
        from .flusher import flush_foreground

        flush_foreground(cfg, spool)
        return
    raw = sys.stdin.buffer.read(MAX_STDIN_BYTES).decode("utf-8", "replace")
    try:
        payload = fastjson.loads(raw)
    except ValueError as exc:
        log(cfg.spool_dir, f"ignoring hook input that is not JSON: {exc}")
        return
    if not isinstance(payload, dict):
        log(cfg.spool_dir, "ignoring hook input that is not a JSON object")
        return
    envelope = build_envelope(cfg, spool, payload, redact.needs_redaction(raw.lower()))
    spool.write(fastjson.dumps(envelope).encode("ascii"))
    spool.enforce_bound(cfg.max_events)
    if spool.due(time.time()):
        spawn_flusher(cfg, spool)


def build_envelope(
    cfg: Config, spool: Spool, payload: Dict[str, Any], needs_redaction: bool
) -> Dict[str, Any]:
    session_id = str(payload.get("session_id") or "unknown")
    hook_event = str(payload.get("hook_event_name") or "Unknown")
    sub_id = payload.get("agent_id")
    if sub_id:  # inside a subagent, or SubagentStart/SubagentStop about one
        agent_id, parent, agent_type = str(sub_id), session_id, payload.get("agent_type")
    else:
        agent_id, parent, agent_type = session_id, None, payload.get("agent_type")
    # The project, even after the agent has `cd`ed elsewhere: Claude Code gives its hooks
    # CLAUDE_PROJECT_DIR; the payload's cwd follows the agent.
    project = os.environ.get("CLAUDE_PROJECT_DIR") or payload.get("cwd")
    project = project if isinstance(project, str) and project.strip("/") else os.getcwd()
    envelope: Dict[str, Any] = {
        "event_id": _uuid4(),
        "ts": cfg.replay_ts_ms if cfg.replay_ts_ms is not None else time.time_ns() // 1_000_000,
        "source_app": cfg.source_app or os.path.basename(project.rstrip("/")) or "unknown",
        "machine_id": spool.machine_id(),
        "session_id": session_id,
        "agent_id": agent_id,
        "parent_agent_id": parent,
        "agent_type": agent_type if isinstance(agent_type, str) else None,
        "hook_event": hook_event,
        "tool_name": _str_or_none(payload.get("tool_name")),
        "tool_use_id": _str_or_none(payload.get("tool_use_id")),
        "usage": _usage(hook_event, payload, spool),
        "payload": redact.clean(payload, needs_redaction),
    }
    if hook_event == "SessionEnd":
        cost_state = _cost_state(payload)
        if cost_state:
            envelope["cost_state"] = cost_state
    if hook_event in USER_EVENTS:
        user = claude_user_id(os.environ)
        if user:
            envelope["user"] = user
    dropped = spool.take_dropped()
    if dropped:
        envelope["spool_dropped"] = dropped
    return envelope


# Events that can close a turn or a session: the transcript is read at each, so the last turn
# of a headless run (not yet written when Stop runs) and an interrupted turn are counted.
# A subagent's own transcript is read when it stops.
USAGE_EVENTS = {
    "Stop": "transcript_path",
    "StopFailure": "transcript_path",
    "SessionEnd": "transcript_path",
    "UserPromptSubmit": "transcript_path",
    "SubagentStop": "agent_transcript_path",
}


def _usage(hook_event: str, payload: Dict[str, Any], spool: Spool) -> Optional[Usage]:
    key = USAGE_EVENTS.get(hook_event)
    path = payload.get(key) if key else None
    if not isinstance(path, str) or not path:
        return None
    from .transcript import read_usage

    try:
        return read_usage(os.path.expanduser(path), spool.state)
    except (OSError, ValueError) as exc:
        log(spool.root, f"no usage from {path}: {exc}")
        return None


def _cost_state(payload: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    path = payload.get("transcript_path")
    if not isinstance(path, str) or not path:
        return None
    from .transcript import read_cost_state

    return read_cost_state(os.path.expanduser(path))


# Where the session's user is named: its start, each prompt (before the usage it brings is
# counted) and its end (a first-ever session may start before Claude Code saved its id).
USER_EVENTS = {"SessionStart", "UserPromptSubmit", "SessionEnd"}


def claude_user_id(env: Mapping[str, str]) -> Optional[str]:
    """Claude Code's own user id (the hash its telemetry calls user.id), from its config file:
    the session's tokens and cost then belong to the same user whichever source counts them."""
    config_dir = env.get("CLAUDE_CONFIG_DIR")
    path = (
        os.path.join(config_dir, ".claude.json")
        if config_dir
        else os.path.join(os.path.expanduser("~"), ".claude.json")
    )
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024)
    except OSError:
        return None
    at = data.find(b'"userID"')  # not parsed whole: the file also holds every project's history
    if at < 0:
        return None
    start = data.find(b'"', data.find(b":", at) + 1) + 1
    end = data.find(b'"', start)
    value = data[start:end]
    if start <= 0 or not 8 <= len(value) <= 128 or not value.isalnum():
        return None
    return value.decode("ascii")


def spawn_flusher(cfg: Config, spool: Spool) -> None:
    """Double-fork a flusher that holds flush.lock; return at once.

    The lock is taken here, before forking, so a hook finding a flusher already running does
    not fork at all: that flusher re-checks the spool after releasing the lock. The grandchild
    inherits the locked descriptor; the parent closes its copy without unlocking.
    The child lets go of every other descriptor before forking (flusher.detach), so when the
    hook has reaped it no flusher holds a pipe that Claude Code waits on.
    """
    lock_fd = try_lock(spool.lock_path("flush.lock"))
    if lock_fd is None:
        return
    pid = os.fork()
    if pid == 0:  # child: new session, drop our descriptors, fork again, exit (re-parenting)
        try:
            os.setsid()
            from .flusher import detach

            detach(lock_fd)
            if os.fork() == 0:
                _become_flusher(cfg, spool, lock_fd)
        finally:
            os._exit(0)
    os.close(lock_fd)
    os.waitpid(pid, 0)


def _become_flusher(cfg: Config, spool: Spool, lock_fd: int) -> None:
    try:  # its descriptors were let go of by its parent (flusher.detach)
        from .flusher import run_detached

        run_detached(cfg, spool, lock_fd)
    except BaseException as exc:  # a detached process has nowhere else to report
        log(spool.root, f"flusher crashed: {type(exc).__name__}: {exc}")
    finally:
        os._exit(0)


def _uuid4() -> str:
    # uuid4 by hand: `import uuid` costs more than the rest of the hook.
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None
