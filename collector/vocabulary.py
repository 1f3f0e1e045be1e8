"""The names Claude Code and Agentwatch agree on, in one place: hook events, outcomes, token
types and the tools that start subagents. Every module takes them from here.

A new hook event is one line in HookEvent (and in hooks/install.py's EVENTS when Claude Code
should run our hook for it: a test keeps the two in step), plus its meaning where it has one.
Events nobody listed are stored and counted all the same, under their own name.
"""

from __future__ import annotations

from typing import Final


class HookEvent:
    """Claude Code's `hook_event_name`s (2.1.328), and the one the collector makes itself.

    Plain strings, not an Enum: they are compared on every ingested event, and a str subclass
    costs three times as much to compare with the str read off a payload."""

    SETUP: Final = "Setup"
    SESSION_START: Final = "SessionStart"
    INSTRUCTIONS_LOADED: Final = "InstructionsLoaded"
    USER_PROMPT_SUBMIT: Final = "UserPromptSubmit"
    USER_PROMPT_EXPANSION: Final = "UserPromptExpansion"
    PRE_TOOL_USE: Final = "PreToolUse"
    PERMISSION_REQUEST: Final = "PermissionRequest"
    PERMISSION_DENIED: Final = "PermissionDenied"
    POST_TOOL_USE: Final = "PostToolUse"
    POST_TOOL_USE_FAILURE: Final = "PostToolUseFailure"
    POST_TOOL_BATCH: Final = "PostToolBatch"
    NOTIFICATION: Final = "Notification"
    ELICITATION: Final = "Elicitation"
    ELICITATION_RESULT: Final = "ElicitationResult"
    SUBAGENT_START: Final = "SubagentStart"
    SUBAGENT_STOP: Final = "SubagentStop"
    TASK_CREATED: Final = "TaskCreated"
    TASK_COMPLETED: Final = "TaskCompleted"
    TEAMMATE_IDLE: Final = "TeammateIdle"
    STOP: Final = "Stop"
    STOP_FAILURE: Final = "StopFailure"
    PRE_COMPACT: Final = "PreCompact"
    POST_COMPACT: Final = "PostCompact"
    PRE_MODEL_SWITCH: Final = "PreModelSwitch"
    POST_MODEL_SWITCH: Final = "PostModelSwitch"
    CONFIG_CHANGE: Final = "ConfigChange"
    CWD_CHANGED: Final = "CwdChanged"
    FILE_CHANGED: Final = "FileChanged"
    DIRECTORY_ADDED: Final = "DirectoryAdded"
    MESSAGE_DISPLAY: Final = "MessageDisplay"
    WORKTREE_CREATE: Final = "WorktreeCreate"
    WORKTREE_REMOVE: Final = "WorktreeRemove"
    SESSION_END: Final = "SessionEnd"
    # Not Claude Code's: an Alertmanager notification stored by POST /v1/alerts.
    ALERT_NOTIFICATION: Final = "AlertNotification"


# Claude Code runs our hook for all of its events but these: a hook on WorktreeCreate or
# WorktreeRemove replaces Claude Code's own `git worktree` handling.
NOT_HOOKED = frozenset({HookEvent.WORKTREE_CREATE, HookEvent.WORKTREE_REMOVE})
ALL_EVENTS: tuple[str, ...] = tuple(v for k, v in vars(HookEvent).items() if k.isupper())
HOOKED_EVENTS = tuple(
    e for e in ALL_EVENTS if e not in NOT_HOOKED and e != HookEvent.ALERT_NOTIFICATION
)

# The end of one tool call: it ran, it failed, or the auto-mode classifier refused it.
TOOL_END_EVENTS = frozenset(
    {HookEvent.POST_TOOL_USE, HookEvent.POST_TOOL_USE_FAILURE, HookEvent.PERMISSION_DENIED}
)
# The end of a turn of the main agent.
TURN_END_EVENTS = frozenset({HookEvent.STOP, HookEvent.STOP_FAILURE})
# Failure comes from the event type, never from grepping output.
FAILURE_EVENTS = frozenset({HookEvent.POST_TOOL_USE_FAILURE, HookEvent.STOP_FAILURE})

# Where an event came from: a hook, or Claude Code's own OpenTelemetry events.
SOURCE_HOOK, SOURCE_OTEL = "hook", "otel"

# A tool call's (or a failed turn's) outcome; "" for events that are not an end.
SUCCESS, ERROR, BLOCKED = "success", "error", "blocked"
OUTCOMES = (SUCCESS, ERROR, BLOCKED)

TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation")

# The tool calls that start a subagent (`Task`, called `Agent` by newer Claude Code).
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
