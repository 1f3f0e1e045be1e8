"""What the collector learns from committed events: counters, tool loops, sessions waiting
for input and active sessions. Called once per commit, in commit order (the app schedules it on
the event loop), so it sees every event exactly once; scrapes read its state under a lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from collector.events import Event
from collector.metrics import Metrics
from collector.store import Committed, Facts
from collector.store.sql import Connection
from collector.vocabulary import SOURCE_HOOK, HookEvent

MAX_TRACKED_SESSIONS = 50_000
# A session none of whose events named its user (hooks only: Claude Code's telemetry is off).
UNKNOWN_USER = "unknown"


@dataclass
class _Session:
    source_app: str
    last_seen: float  # monotonic seconds when an event last arrived
    waiting_since: float | None = None  # a permission prompt not yet followed by anything
    ended: bool = False


@dataclass
class _Run:
    key: str
    count: int = 1


class Tracker:
    def __init__(
        self,
        metrics: Metrics,
        loop_threshold: int = 5,
        waiting_seconds: float = 60,
        session_idle_seconds: float = 1800,
    ) -> None:
        self.m = metrics
        self.loop_threshold = loop_threshold
        self.waiting_seconds = waiting_seconds
        self.idle_seconds = session_idle_seconds
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._runs: OrderedDict[tuple[str, str], _Run] = OrderedDict()
        self._lock = threading.Lock()
        # metric.labels() takes a lock and builds a key on every call; children are cached here
        # (bounded: every label value goes through a LabelCap).
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        metrics.add_function_gauge(
            "agentwatch_sessions_active",
            "Sessions with an event in the last AGENTWATCH_SESSION_IDLE_SECONDS and no SessionEnd.",
            ["source_app"],
            self._active_samples,
        )
        metrics.add_function_gauge(
            "agentwatch_sessions_waiting_for_input",
            "Sessions whose permission prompt is unanswered for more than AGENTWATCH_WAITING_SECONDS.",
            [],
            lambda: [([], float(self.waiting_count()))],
        )

    def restore(self, conn: Connection) -> None:
        """Reload sessions still open at the last shutdown, so the active gauge survives restarts."""
        cutoff_ms = int((time.time() - self.idle_seconds) * 1000)
        rows = conn.execute(
            "SELECT session_id, source_app, last_ts FROM sessions "
            "WHERE ended_ts IS NULL AND last_ts >= ? ORDER BY last_ts LIMIT ?",
            (cutoff_ms, MAX_TRACKED_SESSIONS),
        ).fetchall()
        now_wall, now_mono = time.time(), time.monotonic()
        with self._lock:
            for sid, app, last_ts in rows:
                age = max(now_wall - last_ts / 1000, 0)
                self._sessions[sid] = _Session(self.m.cap_app(app), now_mono - age)

    def _child(self, metric: object, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)  # type: ignore[attr-defined]
        return child

    # -- on commit ---------------------------------------------------------------------------
    def observe(self, committed: list[Committed]) -> None:
        now = time.monotonic()
        m = self.m
        with self._lock:
            for e, facts in committed:
                app = m.cap_app(e.source_app)
                self._child(m.events, m.cap_hook(e.hook_event), app).inc()
                if e.spool_dropped:
                    m.spool_dropped.inc(e.spool_dropped)
                if e.hook_event == HookEvent.ALERT_NOTIFICATION:
                    continue
                self._session(e, facts, app, now)
                self._count(e, facts, app)
                if e.input_hash:
                    self._loop(e, app)

    def _session(self, e: Event, facts: Facts, app: str, now: float) -> None:
        s = self._sessions.get(e.session_id)
        if s is None:
            s = self._sessions[e.session_id] = _Session(app, now)
            if len(self._sessions) > MAX_TRACKED_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(e.session_id)
        s.last_seen = now
        if e.source != SOURCE_HOOK:  # Claude Code's own events come while a prompt waits, too
            return
        # payload is orjson text (no spaces), so a substring test is exact and cheap.
        is_prompt = e.hook_event == HookEvent.PERMISSION_REQUEST or (
            e.hook_event == HookEvent.NOTIFICATION
            and '"notification_type":"permission_prompt"' in e.payload
        )
        if is_prompt:
            s.waiting_since = s.waiting_since or now
        else:
            s.waiting_since = None
        if e.hook_event == HookEvent.SESSION_END:
            s.ended = True
            if facts.session_started_ts is not None:
                duration = max(e.ts - facts.session_started_ts, 0) / 1000
                self.m.session_duration.labels(source_app=app).observe(duration)

    def _count(self, e: Event, facts: Facts, app: str) -> None:
        m = self.m
        c = facts.counted  # worked out by the store as it committed the event (counting.py)
        if c is not None:
            if c.prompt:
                self._child(m.prompts, app).inc()
            for tool, outcome in c.tool_calls:
                self._child(m.tool_calls, m.cap_tool(tool), outcome).inc()
            if c.subagent:
                m.subagents.labels(agent_type=m.cap_agent_type(e.agent_type)).inc()
        if facts.duration_ms is not None:
            self._child(m.tool_duration, m.cap_tool(e.tool_name)).observe(facts.duration_ms / 1000)
        user = m.cap_user(facts.user or UNKNOWN_USER)
        for inc in facts.increments:
            label = m.cap_model(inc.model)
            for kind, n in inc.tokens.items():
                if n:
                    self._child(m.tokens, label, kind, app, user).inc(n)
            self._child(m.cost, label, app, user, inc.cost_source).inc(inc.cost_usd)

    def _loop(self, e: Event, app: str) -> None:
        """The same tool with the same input more than N times in a row, per agent of a session."""
        assert e.input_hash is not None
        key = (e.session_id, e.agent_id or e.session_id)
        run = self._runs.get(key)
        if run is None or run.key != e.input_hash:
            self._runs[key] = _Run(e.input_hash)
            self._runs.move_to_end(key)
            if len(self._runs) > MAX_TRACKED_SESSIONS:
                self._runs.popitem(last=False)
            return
        run.count += 1
        if run.count == self.loop_threshold + 1:  # once per run, when it crosses the threshold
            self._child(self.m.loops, self.m.cap_tool(e.tool_name), app).inc()

    # -- at scrape ---------------------------------------------------------------------------
    def waiting_count(self) -> int:
        now = time.monotonic()
        with self._lock:
            return sum(
                1
                for s in self._sessions.values()
                if s.waiting_since is not None
                and not s.ended
                and now - s.waiting_since > self.waiting_seconds
            )

    def _active_samples(self) -> Iterable[tuple[list[str], float]]:
        now = time.monotonic()
        counts: dict[str, int] = {}
        with self._lock:
            for s in self._sessions.values():
                # Apps seen but idle report 0, so the series does not vanish between sessions.
                active = not s.ended and now - s.last_seen <= self.idle_seconds
                counts[s.source_app] = counts.get(s.source_app, 0) + active
        return [([app], float(n)) for app, n in sorted(counts.items())]
