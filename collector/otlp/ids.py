"""Deterministic trace and span ids, and the trace context of a stored event.

Ids are hashes of what identifies a span (session, kind, key), so a re-export after a crash,
or the query API computing them on its own, gives the same ids as the first export.

The span an event belongs to (`trace_context`) is a pure function of the event row:
- PreToolUse / PostToolUse / PostToolUseFailure / PermissionDenied with a tool_use_id: its `execute_tool` span;
- UserPromptSubmit: the prompt turn it opens (keyed by its event_id);
- any other event of a subagent: that subagent's `invoke_agent` span;
- any other event of the main agent (Stop included: which turn a Stop closes depends on
  the events before it, so it is not a pure function of the row): the session's root span.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from collector.vocabulary import TOOL_END_EVENTS, HookEvent

TOOL_EVENTS = frozenset({HookEvent.PRE_TOOL_USE, *TOOL_END_EVENTS})


# Cached: the same session and agent ids come back for every event of a session.
@lru_cache(maxsize=16384)
def trace_id(session_id: str) -> bytes:
    """A session is one trace: the first 16 bytes of sha256(session id)."""
    return _nonzero(hashlib.sha256(b"agentwatch/trace/" + session_id.encode()).digest()[:16])


@lru_cache(maxsize=65536)
def span_id(session_id: str, kind: str, key: str) -> bytes:
    """kind is agent (key: agent id; the main agent's id is the session id), turn or tool."""
    raw = f"agentwatch/span/{session_id}/{kind}/{key}".encode()
    return _nonzero(hashlib.sha256(raw).digest()[:8])


def _nonzero(b: bytes) -> bytes:
    # An all-zero id is invalid in OTLP; a hash hitting it is practically impossible but cheap to rule out.
    return b if any(b) else b[:-1] + b"\x01"


def event_span(row: Mapping[str, Any]) -> tuple[bytes, bytes] | None:
    """(trace id, span id) of the span the event belongs to; None for events without a session."""
    session = row["session_id"]
    if not session:
        return None
    hook = row["hook_event"]
    tool_use_id = row["tool_use_id"]
    if tool_use_id and hook in TOOL_EVENTS:
        span = span_id(session, "tool", tool_use_id)
    elif hook == HookEvent.USER_PROMPT_SUBMIT and (row["agent_id"] or session) == session:
        span = span_id(session, "turn", row["event_id"])
    else:
        span = span_id(session, "agent", row["agent_id"] or session)
    return trace_id(session), span


def trace_context(row: Mapping[str, Any]) -> tuple[str, str]:
    """(trace_id_hex, span_id_hex) of a stored event row (a mapping with the events columns
    session_id, agent_id, hook_event, tool_use_id, event_id); ("", "") when it has no session."""
    ids = event_span(row)
    if ids is None:
        return "", ""
    return ids[0].hex(), ids[1].hex()
