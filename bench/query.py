"""Query API latency on a large store: 1,000,000 realistic events in about 5,000 sessions.

The store is built through the collector's own write path (collector.store.SQLiteStore.write_sync,
which also maintains tool_calls and sessions) from events normalised by
collector.events.from_envelope. To build it in seconds rather than minutes, a few template
sessions go through from_envelope (redaction included) and are then cloned with fresh session,
event and tool-use ids and shifted timestamps: the rows are what the collector stores.
Sessions start uniformly over the last 30 days (the default retention), 200 events each, with
two parallel subagents in half of them, across five source apps.

One more session is wide: 1,000 subagents started by Agent calls in the background (Claude
Code 2.1: the call returns before the subagent starts), of three types, four launched at a time,
each with three tool calls (about 10,000 events); its tree answer is most of a megabyte.

Then a real collector (uvicorn) starts on that file and each query is timed over HTTP with a
keep-alive client: p50 and p95 of the session list, a timeline page, a session tree (a typical
one and the wide one), a filtered event page and the tool statistics over 24 h, plus start-up
time (process start to /readyz 200), RSS after the queries, and store bytes per session.

measure() does all this on a Backend: run() on SQLite here, bench/postgres.py on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import Figure, percentile, say
from bench.workload import envelope, session_events
from collector.events import Event, from_envelope
from collector.settings import Settings
from collector.store import EventStore, SQLiteStore
from tests.support.procs import start_collector

EVENTS_PER_SESSION = 200
TEMPLATES = 16
APPS = ["shop", "billing", "docs-site", "infra", "mobile-app"]
DAY_MS = 86_400_000
SPREAD_MS = 30 * DAY_MS
TARGET_MS = 100.0
WIDE_SUBAGENTS = 1000
WIDE_TARGET_MS = 50.0
SUBAGENT_TYPES = ("Explore", "Plan", "general-purpose")


def _subagent_block(session: str, ts: int, app: str) -> list[dict[str, Any]]:
    """Two parallel Explore subagents launched by Task calls, each with two tool calls."""
    out: list[dict[str, Any]] = []

    def add(hook: str, payload: dict[str, Any], **extra: Any) -> None:
        nonlocal ts
        ts += 40
        out.append(envelope(session, hook, ts, app, payload, **extra))

    tasks = [f"toolu_task{i}_{uuid.uuid4().hex[:16]}" for i in range(2)]
    agents = [f"agent-{uuid.uuid4().hex[:16]}" for _ in range(2)]
    task_input = {"subagent_type": "Explore", "description": "find handlers", "prompt": "look"}
    for tid in tasks:
        add(
            "PreToolUse",
            {"tool_name": "Task", "tool_use_id": tid, "tool_input": task_input},
            tool_name="Task",
            tool_use_id=tid,
        )
    sub = {"agent_type": "Explore"}
    for aid in agents:
        add("SubagentStart", {"agent_id": aid, **sub}, agent_id=aid, **sub)
    for aid in agents:
        for tool in ("Grep", "Read"):
            tid = f"toolu_{uuid.uuid4().hex[:24]}"
            call = {"tool_name": tool, "tool_use_id": tid, "tool_input": {"pattern": "def handler"}}
            ids = {"agent_id": aid, "tool_name": tool, "tool_use_id": tid, **sub}
            add("PreToolUse", {"agent_id": aid, **call}, **ids)
            add("PostToolUse", {"agent_id": aid, **call, "tool_response": "src/a.py:1"}, **ids)
        add("SubagentStop", {"agent_id": aid, **sub}, agent_id=aid, **sub)
    for tid in tasks:
        add(
            "PostToolUse",
            {"tool_name": "Task", "tool_use_id": tid, "tool_response": "found 3 handlers"},
            tool_name="Task",
            tool_use_id=tid,
        )
    return out


def wide_session(session: str, ts: int, app: str, subagents: int) -> list[dict[str, Any]]:
    """One session whose main agent starts `subagents` background subagents, four at a time:
    each Agent call's PostToolUse comes before its SubagentStart, and each subagent makes three
    tool calls (Read, Grep, Bash)."""
    out: list[dict[str, Any]] = []

    def add(hook: str, payload: dict[str, Any], **extra: Any) -> None:
        nonlocal ts
        ts += 7
        out.append(envelope(session, hook, ts, app, payload, **extra))

    add("SessionStart", {"source": "startup", "model": "claude-sonnet-4-5"})
    add("UserPromptSubmit", {"prompt": "Survey every module of the repository"})
    for first in range(0, subagents, 4):
        batch = range(first, min(first + 4, subagents))
        for i in batch:
            tid = f"toolu_agent{i:05d}_{uuid.uuid4().hex[:12]}"
            call = {
                "tool_name": "Agent",
                "tool_use_id": tid,
                "tool_input": {
                    "subagent_type": SUBAGENT_TYPES[i % len(SUBAGENT_TYPES)],
                    "description": f"survey module {i}",
                    "prompt": f"Read src/module_{i}.py and summarise what it does",
                },
            }
            ids = {"tool_name": "Agent", "tool_use_id": tid}
            add("PreToolUse", call, **ids)
            add("PostToolUse", {**call, "tool_response": "Agent launched in background"}, **ids)
        for i in batch:
            sub = {"agent_id": f"agent-{i:05d}-{uuid.uuid4().hex[:10]}"}
            sub["agent_type"] = SUBAGENT_TYPES[i % len(SUBAGENT_TYPES)]
            add("SubagentStart", sub, **sub)
            for tool, tool_input in (
                ("Read", {"file_path": f"/home/dev/{app}/src/module_{i}.py"}),
                ("Grep", {"pattern": "def handler", "path": "src"}),
                ("Bash", {"command": f"pytest -q tests/test_module_{i}.py"}),
            ):
                tid = f"toolu_{uuid.uuid4().hex[:24]}"
                call = {**sub, "tool_name": tool, "tool_use_id": tid, "tool_input": tool_input}
                ids = {**sub, "tool_name": tool, "tool_use_id": tid}
                add("PreToolUse", call, **ids)
                add("PostToolUse", {**call, "tool_response": "src/a.py:1: def handler"}, **ids)
            add("SubagentStop", sub, **sub)
        add("UserPromptSubmit", {"prompt": "<task-notification> four subagents finished"})
    add("Stop", {"stop_hook_active": False})
    return out


def _templates(now_ms: int) -> list[tuple[str, list[Event]]]:
    """A few sessions through the real normalisation (redaction, capping, outcomes)."""
    settings = Settings()
    out = []
    for i in range(TEMPLATES):
        sid = f"tmpl{i:02d}-{uuid.uuid4().hex}"
        app = APPS[i % len(APPS)]
        envs = session_events(sid, EVENTS_PER_SESSION - (14 if i % 2 else 0), now_ms - DAY_MS, app)
        if i % 2:
            envs[100:100] = _subagent_block(sid, envs[99]["ts"], app)
        events = [from_envelope(e, now_ms, settings) for e in envs]
        out.append((sid, events))
    return out


def _clone(tmpl_sid: str, events: list[Event], sid: str, start: int) -> list[Event]:
    """The template session under a new session id: fresh ids (of the same lengths, in the
    columns and in the payloads alike), shifted times, same content."""
    shift = start - events[0].ts
    suffix = sid[-12:]
    out = []
    for e in events:
        payload = e.payload.replace(tmpl_sid, sid)
        tool_use_id = e.tool_use_id
        if e.tool_use_id:
            tool_use_id = e.tool_use_id[:-12] + suffix
            payload = payload.replace(e.tool_use_id, tool_use_id)
        out.append(
            dataclasses.replace(
                e,
                event_id=str(uuid.uuid4()),
                ts=e.ts + shift,
                received_at=e.ts + shift + 50,
                session_id=sid,
                agent_id=sid if e.agent_id == tmpl_sid else e.agent_id,
                parent_agent_id=sid if e.parent_agent_id == tmpl_sid else e.parent_agent_id,
                tool_use_id=tool_use_id,
                payload=payload,
            )
        )
    return out


def build_store(stores: Sequence[EventStore], total_events: int) -> tuple[list[str], float]:
    """Fill open stores with the same sessions, about total_events events (every batch goes to
    each store in turn); returns the session ids and seconds taken."""
    started = time.perf_counter()
    now = int(time.time() * 1000)
    rnd = random.Random(1)
    templates = _templates(now)
    sessions: list[str] = []
    batch: list[Event] = []
    count = 0
    n = 0
    while count < total_events:
        tmpl_sid, events = templates[n % TEMPLATES]
        sid = f"{uuid.uuid4()}"
        start = now - rnd.randint(10 * 60_000, SPREAD_MS)
        clone = _clone(tmpl_sid, events, sid, start)
        batch += clone
        count += len(clone)
        sessions.append(sid)
        n += 1
        if len(batch) >= 5000 or count >= total_events:
            for store in stores:
                store.write_sync(batch)
            batch = []
    return sessions, time.perf_counter() - started


def add_wide_session(store: EventStore) -> str:
    """The wide session (see the module docstring), through the real normalisation; its id."""
    now = int(time.time() * 1000)
    sid = f"wide-{uuid.uuid4()}"
    settings = Settings()
    envs = wide_session(sid, now - DAY_MS, APPS[0], WIDE_SUBAGENTS)
    store.write_sync([from_envelope(e, now, settings) for e in envs])
    return sid


@dataclass
class Backend:
    """Where the benchmark's store lives: `store()` makes a (closed) store of the engine,
    `size()` is what its tables and indexes take on disk, and `env` points a collector at it."""

    name: str  # prefixes the figures' names; "" for the default engine, SQLite
    store: Callable[[], EventStore]
    size: Callable[[], int]
    env: dict[str, str]
    size_target_kb: float | None = None  # None: the size per session is reported only
    # After the build, before the queries: what a store that has run for a while has done
    # (PostgreSQL: VACUUM ANALYZE, which autovacuum would otherwise run during the timings).
    settle: Callable[[], None] = lambda: None


def sqlite_backend(db: Path) -> Backend:
    return Backend(
        "",
        lambda: SQLiteStore(db, queue_max_events=1_000_000),
        lambda: sum(p.stat().st_size for p in db.parent.glob(db.name + "*")),
        {"AGENTWATCH_DB": str(db)},
        size_target_kb=100,
    )


def _time(client: httpx.Client, url: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(url)
        samples.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return samples


def run(quick: bool) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="aw-bench-query-") as tmp:
        return measure(sqlite_backend(Path(tmp) / "agentwatch.db"), quick, Path(tmp))


def measure(backend: Backend, quick: bool, tmp: Path, quick_total: int = 100_000) -> list[Figure]:
    """Build the store (quick_total events when quick, else 1,000,000) on the backend, start a
    collector on it, and time each query; tmp holds the collector's log."""
    total = quick_total if quick else 1_000_000
    runs = 30 if quick else 100
    figures: list[Figure] = []
    prefix = f"{backend.name} query" if backend.name else "query"
    label = f" on {backend.name}" if backend.name else ""
    say(f"building a store of {total:,} events{label} ...")
    store = backend.store()
    store.open()
    try:
        sessions, build_s = build_store([store], total)
    finally:
        store.close()
    size = backend.size()
    per_session_kb = size / len(sessions) / 1024
    say(
        f"built {len(sessions):,} sessions in {build_s:.1f}s ({total / build_s:,.0f} events/s); "
        f"store {size / 1e6:.0f} MB, {per_session_kb:.1f} KB per session of "
        f"{EVENTS_PER_SESSION} events"
    )
    store = backend.store()
    store.open()
    try:
        wide = add_wide_session(store)  # after the size per session, which it would skew
    finally:
        store.close()
    backend.settle()
    t = time.perf_counter()
    proc = start_collector(tmp, env={"AGENTWATCH_RETENTION_DAYS": "31", **backend.env})
    startup = time.perf_counter() - t
    say(f"collector ready in {startup:.2f}s (process start to /readyz 200)")
    rnd = random.Random(2)
    picks = [rnd.choice(sessions) for _ in range(runs)]
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            cursor = client.get("/v1/sessions?limit=100").json()["next_cursor"]
            queries: dict[str, Callable[[int], str]] = {
                "session list": lambda i: "/v1/sessions?limit=100",
                "session list, app + errors, page 2": lambda i: (
                    f"/v1/sessions?limit=100&source_app=shop&errors=true&cursor={cursor}"
                ),
                "session timeline page": lambda i: f"/v1/sessions/{picks[i]}/events?limit=100",
                "session tree": lambda i: f"/v1/sessions/{picks[i]}/tree",
                f"session tree, {WIDE_SUBAGENTS} subagents": lambda i: f"/v1/sessions/{wide}/tree",
                "filtered event page": lambda i: (
                    "/v1/events?range=24h&tool=Bash&errors=true&limit=100"
                ),
                "event page, hook filter, 7 d": lambda i: (
                    "/v1/events?range=7d&hook_event=UserPromptSubmit&source_app=shop&limit=100"
                ),
                "free text, 24 h": lambda i: "/v1/events?range=24h&q=exit%20status&limit=100",
                # The worst case: every payload of the day unpacked and none matches.
                "free text, no match, 24 h": lambda i: (
                    "/v1/events?range=24h&q=no%20such%20text&limit=100"
                ),
                "tool stats 24h": lambda i: "/v1/tools/stats?range=24h",
            }
            for name, make in queries.items():
                _time(client, make(0), 3)  # warm the page cache and the connection pool
                samples = []
                for i in range(runs):
                    samples += _time(client, make(i), 1)
                p50, p95 = percentile(samples, 50), percentile(samples, 95)
                say(f"{name:38s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
                target = WIDE_TARGET_MS if "subagents" in name else TARGET_MS
                figures.append(Figure(f"{prefix} {name} p50", p50, "ms", "", True))
                figures.append(
                    Figure(f"{prefix} {name} p95", p95, "ms", f"<= {target:g} ms", p95 <= target)
                )
            wide_kb = len(client.get(f"/v1/sessions/{wide}/tree").content) / 1024
            say(f"the tree of {WIDE_SUBAGENTS} subagents is {wide_kb:.0f} KB")
        rss = psutil.Process(proc.proc.pid).memory_info().rss / 1e6
        say(f"collector RSS after the queries: {rss:.0f} MB")
    finally:
        proc.stop()
    if backend.size_target_kb is None:
        size_target, size_met = "", True
    else:
        size_target = f"<= {backend.size_target_kb:g} KB"
        size_met = per_session_kb <= backend.size_target_kb
    figures += [
        Figure(f"{prefix} store events", float(total), "events", "", True),
        Figure(f"{prefix} session tree {WIDE_SUBAGENTS} subagents size", wide_kb, "KB", "", True),
        Figure(f"{prefix} collector start-up", startup, "s", "<= 2 s", startup <= 2.0),
        Figure(f"{prefix} collector RSS", rss, "MB", "", True),
        Figure(f"{prefix} store size per session", per_session_kb, "KB", size_target, size_met),
    ]
    return figures
