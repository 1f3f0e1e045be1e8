"""What one event adds to its session's counters: the one rule behind both the sessions table
(collector/store.py) and the live metrics (collector/tracker.py), so the two never disagree.

- a prompt: UserPromptSubmit;
- tool calls: each end event (TOOL_END_EVENTS), with its outcome; and each call a PostToolBatch
  lists that has not ended by then, as blocked (it never ran: events.batch_calls);
- a subagent: once, at the first of its SubagentStart or SubagentStop (older Claude Code versions
  send no SubagentStart);
- an error: an event whose outcome is error.
The store works it out as it commits, from what it holds (`Seen`), and hands it on with the
event; the tracker counts exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import orjson

from collector.events import Event, batch_calls
from collector.vocabulary import BLOCKED, ERROR, SOURCE_HOOK, TOOL_END_EVENTS, HookEvent


class Seen(Protocol):
    def subagent_counted(self, session_id: str, agent_id: str) -> bool: ...
    def call_ended(self, session_id: str, tool_use_id: str) -> bool: ...


@dataclass(slots=True)
class Counted:
    prompt: bool = False
    subagent: bool = False
    error: bool = False
    # (tool name, outcome) of each tool call the event ends
    tool_calls: list[tuple[str | None, str]] = field(default_factory=list)


def count(e: Event, seen: Seen) -> Counted:
    hook = e.hook_event
    # Claude Code's own events repeat what the hooks report (a failed tool_result beside its
    # PostToolUseFailure): only hook events count.
    if e.source != SOURCE_HOOK:
        return Counted()
    out = Counted(prompt=hook == HookEvent.USER_PROMPT_SUBMIT, error=e.outcome == ERROR)
    if hook in TOOL_END_EVENTS:
        out.tool_calls.append((e.tool_name, e.outcome))
    elif hook == HookEvent.POST_TOOL_BATCH:
        out.tool_calls += [
            (tool, BLOCKED)
            for tool_use_id, tool in batch_calls(orjson.loads(e.payload))
            if not seen.call_ended(e.session_id, tool_use_id)
        ]
    elif hook in (HookEvent.SUBAGENT_START, HookEvent.SUBAGENT_STOP) and e.agent_id:
        out.subagent = not seen.subagent_counted(e.session_id, e.agent_id)
    return out
