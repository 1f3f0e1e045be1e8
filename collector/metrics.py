"""Prometheus metrics of the collector, built on a registry that the caller passes in.

Label values come from bounded sets only. Values that can grow (tool, source_app, model,
agent_type, alertname) go through a LabelCap: the first N distinct values are kept, the rest
become "other", so a misbehaving client cannot blow up the series count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collector import __version__

# standby: another collector sharing the PostgreSQL store exports (collector/otlp/relay.py).
RELAY_STATES = ("ok", "delayed", "circuit_open", "standby", "disabled")
REJECT_REASONS = (
    "malformed_json",
    "malformed_body",  # not protobuf, JSON or gzip of the kind it says (OTLP routes)
    "invalid_event",
    "too_large",
    "unsupported_media_type",
    "unauthorized",
    "body_timeout",
    "store_unavailable",
    "client_disconnected",
)
# Tool calls last from milliseconds (Read) to many minutes (a test suite via Bash).
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
SESSION_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class LabelCap:
    """Keeps the first `limit` distinct values of a label; later ones map to "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        value = value or "unknown"
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return "other"


class _FunctionCollector(Collector):
    """A gauge family whose samples are computed at scrape time."""

    def __init__(
        self,
        name: str,
        doc: str,
        labels: list[str],
        fn: Callable[[], Iterable[tuple[list[str], float]]],
    ) -> None:
        self._name, self._doc, self._labels, self._fn = name, doc, labels, fn

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        for values, value in self._fn():
            family.add_metric(values, value)
        yield family


@dataclass
class Metrics:
    registry: CollectorRegistry
    cap_tool: LabelCap
    cap_hook: LabelCap
    cap_app: LabelCap
    cap_model: LabelCap
    cap_user: LabelCap
    cap_agent_type: LabelCap
    cap_alertname: LabelCap
    events: Counter
    rejected: Counter
    duplicates: Counter
    tool_calls: Counter
    tool_duration: Histogram
    session_duration: Histogram
    subagents: Counter
    prompts: Counter
    tokens: Counter
    cost: Counter
    loops: Counter
    http_duration: Histogram
    store_write: Histogram
    store_errors: Counter
    store_queue_depth: Gauge
    store_queue_capacity: Gauge
    store_size: Gauge
    ready: Gauge
    relay_state: Gauge
    relay_exported: Counter
    relay_failures: Counter
    relay_backlog: Gauge
    relay_lag: Gauge
    alert_notifications: Counter
    spool_dropped: Counter

    def set_relay_state(self, state: str) -> None:
        for s in RELAY_STATES:
            self.relay_state.labels(state=s).set(1 if s == state else 0)

    def add_function_gauge(
        self,
        name: str,
        doc: str,
        labels: list[str],
        fn: Callable[[], Iterable[tuple[list[str], float]]],
    ) -> None:
        self.registry.register(_FunctionCollector(name, doc, labels, fn))


def build_metrics(registry: CollectorRegistry, label_cap: int = 200) -> Metrics:
    # *_created series double the exposition size and no dashboard or alert uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    p = "agentwatch_"
    m = Metrics(
        registry=registry,
        cap_tool=LabelCap(label_cap),
        cap_hook=LabelCap(label_cap),  # clients may send any hook_event name
        cap_app=LabelCap(label_cap),
        cap_model=LabelCap(label_cap),
        cap_user=LabelCap(label_cap),
        cap_agent_type=LabelCap(label_cap),
        cap_alertname=LabelCap(label_cap),
        events=Counter(
            p + "events_total", "Events stored.", ["hook_event", "source_app"], registry=registry
        ),
        rejected=Counter(
            p + "events_rejected_total",
            "Events or requests refused.",
            ["reason"],
            registry=registry,
        ),
        duplicates=Counter(
            p + "events_duplicate_total",
            "Events already stored (same event_id).",
            registry=registry,
        ),
        tool_calls=Counter(
            p + "tool_calls_total", "Finished tool calls.", ["tool", "outcome"], registry=registry
        ),
        tool_duration=Histogram(
            p + "tool_duration_seconds",
            "Tool call duration, PreToolUse to PostToolUse(Failure).",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=registry,
        ),
        session_duration=Histogram(
            p + "session_duration_seconds",
            "Session duration, first event to SessionEnd.",
            ["source_app"],
            buckets=SESSION_BUCKETS,
            registry=registry,
        ),
        subagents=Counter(
            p + "subagents_total", "Subagents started.", ["agent_type"], registry=registry
        ),
        prompts=Counter(
            p + "prompts_total", "User prompts submitted.", ["source_app"], registry=registry
        ),
        tokens=Counter(
            p + "tokens_total",
            "Tokens used: live from transcripts and Claude Code's own api_request events, "
            "settled on its session totals (collector/accounting.py).",
            ["model", "type", "source_app", "user"],
            registry=registry,
        ),
        cost=Counter(
            p + "cost_usd_total",
            "Cost in USD: Claude Code's own figures (cost_source=exact) where it sent them, "
            "else estimated from the price table (collector/accounting.py).",
            ["model", "source_app", "user", "cost_source"],
            registry=registry,
        ),
        loops=Counter(
            p + "agent_loops_total",
            "Runs of the same tool call repeated more than N times in a row.",
            ["tool", "source_app"],
            registry=registry,
        ),
        http_duration=Histogram(
            p + "http_request_duration_seconds",
            "HTTP request latency.",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        ),
        store_write=Histogram(
            p + "store_write_seconds",
            "Duration of one store transaction (group commit).",
            buckets=WRITE_BUCKETS,
            registry=registry,
        ),
        store_errors=Counter(
            p + "store_errors_total", "Failed store transactions.", registry=registry
        ),
        store_queue_depth=Gauge(
            p + "store_queue_depth", "Events waiting for the writer.", registry=registry
        ),
        store_queue_capacity=Gauge(
            p + "store_queue_capacity",
            "Events the writer queue holds before refusing.",
            registry=registry,
        ),
        store_size=Gauge(
            p + "store_size_bytes", "Size of the SQLite files (db, wal, shm).", registry=registry
        ),
        ready=Gauge(p + "ready", "1 when /readyz answers 200.", registry=registry),
        relay_state=Gauge(
            p + "relay_state",
            "OTLP relay state (1 for the current one).",
            ["state"],
            registry=registry,
        ),
        relay_exported=Counter(
            p + "relay_exported_total", "Items exported over OTLP.", ["signal"], registry=registry
        ),
        relay_failures=Counter(
            p + "relay_failures_total", "Failed OTLP exports.", ["signal"], registry=registry
        ),
        relay_backlog=Gauge(
            p + "relay_backlog_events", "Stored events not yet exported.", registry=registry
        ),
        relay_lag=Gauge(
            p + "relay_lag_seconds", "Age of the oldest event not yet exported.", registry=registry
        ),
        alert_notifications=Counter(
            p + "alert_notifications_total",
            "Alertmanager notifications received.",
            ["alertname", "status"],
            registry=registry,
        ),
        spool_dropped=Counter(
            p + "hook_spool_dropped_total",
            "Events the hooks' local spools dropped (spool full).",
            registry=registry,
        ),
    )
    Info(p + "build", "Build information.", registry=registry).info({"version": __version__})
    # process_resident_memory_bytes, process_start_time_seconds, ...: the collector's memory
    # against its container limit and its restarts (alerts/collector.rules.yml). On this
    # registry, not the global one; it reads /proc, so elsewhere it exposes nothing.
    ProcessCollector(registry=registry)
    # Series for the bounded label sets start at 0, so rate() and alerts see them from the start.
    for reason in REJECT_REASONS:
        m.rejected.labels(reason=reason)
    for signal in ("logs", "traces"):
        m.relay_exported.labels(signal=signal)
        m.relay_failures.labels(signal=signal)
    m.set_relay_state("disabled")
    return m
