"""Which Task/Agent tool call started which subagent: the one rule that the agent tree API
(collector/query/tree.py) and the exported trace spans (collector/otlp/spans.py) both follow.

Claude Code does not say. A subagent is started by a tool call named `Task` (newer versions:
`Agent`) whose `tool_input.subagent_type` names the kind of agent; the subagent's own events
carry its `agent_id` and `agent_type`. Since 2.1, Agent-tool subagents run in the background:
the call's PostToolUse, and even the main agent's Stop, can come before the SubagentStart, and
the result comes back as a new prompt turn. So the rule does not assume that a subagent runs
while the call that started it is open.

The rule, over one session's events in store order (seq, the order the relay streams them in,
so no decision waits for an event that has not arrived):
- a subagent is attributed once, when its first event is seen (normally SubagentStart);
- its candidates are the Task/Agent calls seen before that event that no other subagent has
  claimed and that had not already failed (a call whose PostToolUseFailure came first started
  nothing);
- it takes the earliest candidate whose subagent_type names its agent_type (the same string, or
  the same agent name with and without a plugin's `plugin:` prefix), so parallel subagents of one
  type are paired with their calls in launch order; else the earliest candidate that names no
  subagent_type (older versions omit it; the default agent is then used); else, if its own
  agent_type is unknown, the earliest candidate of any type; else none. A subagent is never
  pinned on a call made for another type: that call would be stolen from its own subagent.

A subagent with no call stays under its parent agent (the tree) or the open prompt turn (the
spans).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any, NamedTuple


class Call(NamedTuple):
    """A Task/Agent PreToolUse."""

    seq: int
    tool_use_id: str
    subagent_type: str | None


class Failure(NamedTuple):
    """The PostToolUseFailure of a Task/Agent call."""

    seq: int
    tool_use_id: str


class Sighting(NamedTuple):
    """The first event of a subagent (normally its SubagentStart)."""

    seq: int
    agent_id: str
    agent_type: str | None


def subagent_type(payload: Mapping[str, Any]) -> str | None:
    """The subagent_type a Task/Agent call's hook payload names, if any."""
    tool_input = payload.get("tool_input")
    kind = tool_input.get("subagent_type") if isinstance(tool_input, dict) else None
    return kind if isinstance(kind, str) and kind else None


def _name(agent_type: str | None) -> str | None:
    """The agent name without a plugin prefix (`my-plugin:reviewer` -> `reviewer`)."""
    return agent_type.rpartition(":")[2] if agent_type else None


def _names(call_type: str, agent_type: str) -> bool:
    """Whether a call's subagent_type names a subagent's agent_type, given that both have the same
    _name(): yes unless they carry two different plugin prefixes."""
    return call_type == agent_type or ":" not in call_type or ":" not in agent_type


class Launches:
    """The rule, fed one session's events in store order: call() for each Task/Agent
    PreToolUse, failed() for each Task/Agent PostToolUseFailure, claim() for each event of a
    subagent (only its first counts). The relay keeps one per session; attribute() runs one
    over a whole session."""

    def __init__(self) -> None:
        self.claims: dict[str, str | None] = {}  # agent_id -> tool_use_id, for every subagent seen
        self._open: dict[str, str | None] = {}  # unclaimed calls, oldest first -> _name(type)
        self._by_name: dict[str | None, dict[str, str | None]] = {}  # name -> the same -> type
        self._closed: set[str] = set()  # claimed or failed: no longer a candidate

    def call(self, tool_use_id: str, subagent_type: str | None) -> None:
        if tool_use_id in self._open or tool_use_id in self._closed:
            return
        subagent_type = subagent_type or None
        name = self._open[tool_use_id] = _name(subagent_type)
        self._by_name.setdefault(name, {})[tool_use_id] = subagent_type

    def failed(self, tool_use_id: str) -> None:
        self._take(tool_use_id)
        self._closed.add(tool_use_id)

    def claim(self, agent_id: str, agent_type: str | None) -> str | None:
        """The tool_use_id of the call that started this subagent, decided at its first sighting."""
        if agent_id in self.claims:
            return self.claims[agent_id]
        pick = self._pick(agent_type or None)
        if pick is not None:
            self._take(pick)
            self._closed.add(pick)
        self.claims[agent_id] = pick
        return pick

    def _pick(self, agent_type: str | None) -> str | None:
        if agent_type is None:
            return next(iter(self._open), None)
        for tool_use_id, kind in self._by_name.get(_name(agent_type), {}).items():
            if kind is not None and _names(kind, agent_type):
                return tool_use_id
        return next(iter(self._by_name.get(None, ())), None)

    def _take(self, tool_use_id: str) -> None:
        if tool_use_id in self._open:
            del self._by_name[self._open.pop(tool_use_id)][tool_use_id]


def attribute(
    calls: Iterable[Call], sightings: Iterable[Sighting], failures: Iterable[Failure] = ()
) -> dict[str, str]:
    """subagent agent_id -> tool_use_id of the call that started it, for one session's events
    (in any order: they are put in store order). Subagents that no call started are left out.
    An event that is both a subagent's first and a call (a subagent starting one) is a sighting
    first, as in the relay."""
    steps = [(e.seq, _SIGHTING, e.agent_id, e.agent_type) for e in sightings]
    steps += [(e.seq, _CALL, e.tool_use_id, e.subagent_type) for e in calls]
    steps += [(e.seq, _FAILURE, e.tool_use_id, None) for e in failures]
    steps.sort(key=itemgetter(0, 1))
    launches = Launches()
    for _, step, key, kind in steps:
        if step == _SIGHTING:
            launches.claim(key, kind)
        elif step == _CALL:
            launches.call(key, kind)
        else:
            launches.failed(key)
    return {agent: call for agent, call in launches.claims.items() if call is not None}


_SIGHTING, _CALL, _FAILURE = range(3)  # at one seq, in this order
