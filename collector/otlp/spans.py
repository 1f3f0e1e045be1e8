"""The span tree of a session, built from its events in store order.

A session is one trace. Spans:
- `invoke_agent main`: the session (root), first event -> SessionEnd;
- `prompt_turn`: UserPromptSubmit -> Stop/StopFailure (error status on StopFailure), child of the root;
- `invoke_agent <type>`: a subagent, SubagentStart -> SubagentStop, child of the Task/Agent tool
  call that started it (decided at its first event by collector/launches.py, the rule the tree
  API follows too), else of the open turn;
- `execute_tool <name>`: PreToolUse -> PostToolUse/PostToolUseFailure/PermissionDenied, or the
  PostToolBatch that lists a call that never ran (error status on failure, "blocked" on those),
  child of its agent's span (a main-agent call: the open turn, else the root).

A span is exported once its end arrives. An end seen before its start waits for it. What never
ends is closed when no event of its session has been received for the span timeout, with
agentwatch.span.incomplete=true. State lives in memory per session, bounded (LRU), and is rebuilt
from the store when a session is seen again (its earlier events are replayed, not exported).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from collector.events import batch_calls
from collector.launches import Launches, subagent_type
from collector.otlp.ids import span_id, trace_id
from collector.otlp.logs import agent_name, error_text, put_attrs, usage_attributes
from collector.vocabulary import (
    BLOCKED,
    SUBAGENT_TOOLS,
    TOOL_END_EVENTS,
    TURN_END_EVENTS,
    HookEvent,
)

Usage = Mapping[str, Mapping[str, int]] | None
Decoded = tuple[Any, Mapping[str, Any], Usage]  # events row (sqlite3.Row or dict), payload, usage
History = Callable[[str, int], Iterable[Decoded]]  # (session id, before seq) -> older events


@dataclass(slots=True)
class OpenSpan:
    span_id: bytes
    parent_id: bytes
    name: str
    start_ms: int
    attrs: dict[str, Any]
    end_ms: int | None = None
    error: str | None = None  # None: status unset; else the error status message


@dataclass
class SessionTree:
    session_id: str
    trace_id: bytes = b""
    root: OpenSpan | None = None
    root_closed: bool = False
    turns: dict[bytes, OpenSpan] = field(default_factory=dict)
    agents: dict[str, OpenSpan] = field(default_factory=dict)
    closed_agents: set[str] = field(default_factory=set)
    tools: dict[str, OpenSpan] = field(default_factory=dict)
    early_ends: dict[str, OpenSpan] = field(
        default_factory=dict
    )  # ends whose start is not seen yet
    launches: Launches = field(default_factory=Launches)  # which call started which subagent
    last_ts: int = 0
    last_received: int = 0

    def __post_init__(self) -> None:
        self.trace_id = trace_id(self.session_id)
        self.root_id = span_id(self.session_id, "agent", self.session_id)

    def _base(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "gen_ai.conversation.id": self.session_id,
            "agentwatch.source_app": row["source_app"],
        }

    def process(
        self, row: Mapping[str, Any], payload: Mapping[str, Any], usage: Usage
    ) -> list[OpenSpan]:
        done: list[OpenSpan] = []
        ts: int = row["ts"]
        self.last_ts = max(self.last_ts, ts)
        self.last_received = max(self.last_received, row["received_at"])
        hook = row["hook_event"]
        self._ensure_root(row, payload)
        agent = row["agent_id"] or self.session_id
        sub = None if agent == self.session_id else self._agent(row, agent)
        tool_use_id = row["tool_use_id"]
        if hook == HookEvent.PRE_TOOL_USE and tool_use_id:
            self._tool_start(row, payload, done)
        elif hook in TOOL_END_EVENTS and tool_use_id:
            self._tool_end(row, payload, done)
        elif hook == HookEvent.POST_TOOL_BATCH:
            for unrun, _ in batch_calls(payload):  # still open: it never ran (blocked)
                span = self.tools.pop(unrun, None)
                if span is not None:
                    span.error = BLOCKED
                    done.append(self._close(span, ts))
        elif hook == HookEvent.USER_PROMPT_SUBMIT and sub is None:
            for key in list(self.turns):
                done.append(self._close(self.turns.pop(key), ts, incomplete=True))
            key = span_id(self.session_id, "turn", row["event_id"])
            attrs = self._base(row) | {"agentwatch.prompt_event_id": row["event_id"]}
            self.turns[key] = OpenSpan(key, self.root_id, "prompt_turn", ts, attrs)
        elif hook in TURN_END_EVENTS and sub is None and self.turns:
            turn = self.turns.pop(next(reversed(self.turns)))
            turn.attrs.update(usage_attributes(usage))
            if hook == HookEvent.STOP_FAILURE:
                turn.error = error_text(hook, payload) or HookEvent.STOP_FAILURE
            done.append(self._close(turn, ts))
        elif hook == HookEvent.SUBAGENT_STOP and sub is not None:
            sub.attrs.update(usage_attributes(usage))
            self.agents.pop(agent)
            self.closed_agents.add(agent)
            done.append(self._close(sub, ts))
        elif hook == HookEvent.SESSION_END and self.root is not None and not self.root_closed:
            self.root_closed = True
            self.root.attrs["agentwatch.session_end_reason"] = str(payload.get("reason") or "")
            done.append(self._close(self.root, ts))
        return done

    def _ensure_root(self, row: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        ts = row["ts"]
        if self.root is None:
            attrs = self._base(row) | {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": self.session_id,
                "gen_ai.agent.name": "main",
            }
            self.root = OpenSpan(self.root_id, b"", "invoke_agent main", ts, attrs)
        elif not self.root_closed:
            self.root.start_ms = min(self.root.start_ms, ts)
        model = payload.get("model")
        if row["hook_event"] == HookEvent.SESSION_START and isinstance(model, str) and model:
            self.root.attrs["gen_ai.request.model"] = model

    def _main_parent(self) -> bytes:
        return next(reversed(self.turns)) if self.turns else self.root_id

    def _agent(self, row: Mapping[str, Any], agent: str) -> OpenSpan | None:
        span = self.agents.get(agent)
        ts = row["ts"]
        if span is None:
            if agent in self.closed_agents:
                return None
            launch = self.launches.claim(agent, row["agent_type"])
            parent = span_id(self.session_id, "tool", launch) if launch else self._main_parent()
            attrs = self._base(row) | {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": agent,
                "gen_ai.agent.name": agent_name(row),
            }
            span = OpenSpan(
                span_id(self.session_id, "agent", agent),
                parent,
                f"invoke_agent {agent_name(row)}",
                ts,
                attrs,
            )
            self.agents[agent] = span
        else:
            span.start_ms = min(span.start_ms, ts)
        return span

    def _tool_start(
        self,
        row: Mapping[str, Any],
        payload: Mapping[str, Any],
        done: list[OpenSpan],
    ) -> None:
        tool_use_id: str = row["tool_use_id"]
        tool = row["tool_name"] or "unknown"
        if tool in SUBAGENT_TOOLS:
            self.launches.call(tool_use_id, subagent_type(payload))
        span = self._tool_span(row)
        early = self.early_ends.pop(tool_use_id, None)
        if early is not None:  # the end came first: this start completes the span
            span.attrs["agentwatch.outcome"] = early.attrs["agentwatch.outcome"]
            span.error = early.error
            done.append(self._close(span, max(early.start_ms, span.start_ms)))
            return
        self.tools[tool_use_id] = span

    def _tool_end(
        self,
        row: Mapping[str, Any],
        payload: Mapping[str, Any],
        done: list[OpenSpan],
    ) -> None:
        tool_use_id: str = row["tool_use_id"]
        hook = row["hook_event"]
        error = (
            (error_text(hook, payload) or hook) if hook == HookEvent.POST_TOOL_USE_FAILURE else None
        )
        if hook == HookEvent.PERMISSION_DENIED:
            error = BLOCKED
        span = self.tools.pop(tool_use_id, None)
        if error is not None and row["tool_name"] in SUBAGENT_TOOLS:
            self.launches.failed(tool_use_id)
        if span is None:
            # Keep the end until its start arrives (or the session times out).
            early = self._tool_span(row)
            early.attrs["agentwatch.outcome"] = row["outcome"] or ""
            early.error = error
            self.early_ends[tool_use_id] = early
            return
        span.attrs["agentwatch.outcome"] = row["outcome"] or ""
        span.error = error
        done.append(self._close(span, row["ts"]))

    def _tool_span(self, row: Mapping[str, Any]) -> OpenSpan:
        """The `execute_tool` span of a call, opened at this row (either of its ends)."""
        tool_use_id: str = row["tool_use_id"]
        tool = row["tool_name"] or "unknown"
        agent = row["agent_id"] or self.session_id
        parent = (
            span_id(self.session_id, "agent", agent)
            if agent != self.session_id
            else self._main_parent()
        )
        attrs = self._base(row) | {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": tool_use_id,
            "gen_ai.agent.id": agent,
            "gen_ai.agent.name": agent_name(row),
        }
        key = span_id(self.session_id, "tool", tool_use_id)
        return OpenSpan(key, parent, f"execute_tool {tool}", row["ts"], attrs)

    @staticmethod
    def _close(span: OpenSpan, end_ms: int, incomplete: bool = False) -> OpenSpan:
        span.end_ms = max(end_ms, span.start_ms)
        if incomplete:
            span.attrs["agentwatch.span.incomplete"] = True
        return span

    def close_all(self) -> list[OpenSpan]:
        """Close whatever is still open (the session went quiet): marked incomplete."""
        end = self.last_ts
        spans = [*self.tools.values(), *self.early_ends.values(), *self.agents.values()]
        spans += self.turns.values()
        if self.root is not None and not self.root_closed:
            spans.append(self.root)
            self.root_closed = True
        self.tools, self.early_ends, self.agents, self.turns = {}, {}, {}, {}
        return [self._close(s, end, incomplete=True) for s in spans]


class SpanBuilder:
    """Session trees for the sessions in flight, at most max_sessions (least recently used out)."""

    def __init__(self, history: History, max_sessions: int, timeout_ms: int) -> None:
        self._history = history
        self._max = max_sessions
        self.timeout_ms = timeout_ms
        self.sessions: OrderedDict[str, SessionTree] = OrderedDict()

    def tree(self, session_id: str, before_seq: int) -> SessionTree:
        tree = self.sessions.get(session_id)
        if tree is not None:
            self.sessions.move_to_end(session_id)
            return tree
        tree = SessionTree(session_id)
        for row, payload, usage in self._history(session_id, before_seq):
            tree.process(row, payload, usage)  # rebuilt state; these spans were exported before
        self.sessions[session_id] = tree
        while len(self.sessions) > self._max:
            self.sessions.popitem(last=False)
        return tree

    def process(
        self, row: Mapping[str, Any], payload: Mapping[str, Any], usage: Usage
    ) -> list[OpenSpan]:
        session = row["session_id"]
        if not session or row["hook_event"] == HookEvent.ALERT_NOTIFICATION:
            return []
        return self.tree(session, row["seq"]).process(row, payload, usage)

    def sweep(self, now_ms: int) -> list[tuple[bytes, OpenSpan]]:
        """Close and forget the sessions from which nothing was received for the timeout."""
        out: list[tuple[bytes, OpenSpan]] = []
        for sid in [
            s for s, t in self.sessions.items() if now_ms - t.last_received > self.timeout_ms
        ]:
            tree = self.sessions.pop(sid)
            out += [(tree.trace_id, s) for s in tree.close_all()]
        return out


def add_span(scope: ScopeSpans, trace: bytes, s: OpenSpan) -> None:
    sp = scope.spans.add(
        trace_id=trace,
        span_id=s.span_id,
        parent_span_id=s.parent_id,
        name=s.name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=s.start_ms * 1_000_000,
        end_time_unix_nano=(s.end_ms if s.end_ms is not None else s.start_ms) * 1_000_000,
    )
    put_attrs(sp.attributes, s.attrs)
    if s.error is not None:
        sp.status.code = Status.STATUS_CODE_ERROR
        sp.status.message = s.error
