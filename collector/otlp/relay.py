"""The OTLP relay: stored events out as OpenTelemetry logs and a trace per session, at least once.

The store is the outbox. One thread reads committed events after the cursor in seq order, in
pages of AGENTWATCH_RELAY_BATCH_EVENTS, turns each page into one logs request and one traces
request, sends them, and only then moves the cursor (meta "relay_cursor", written by the store's
writer). A failed page is kept as built and sent again after the breaker's delay, so memory holds
at most one page whatever the outage; the backlog stays in SQLite. A crash re-sends the page in
flight: the same log records and spans with the same ids (otlp/ids.py), hence "at least once".

Ingest never waits on the relay: the store's commit listener only sets an Event.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

from collector import __version__
from collector.events import now_ms
from collector.metrics import Metrics
from collector.otlp.breaker import Breaker
from collector.otlp.export import Exporter, RelayConfig, build_exporter, targets_from_env
from collector.otlp.logs import add_log_record, put_attrs
from collector.otlp.spans import Decoded, OpenSpan, SpanBuilder, add_span
from collector.payloads import EVENT_SELECT
from collector.settings import Settings
from collector.store import EventStore
from collector.store.sql import dict_rows

log = logging.getLogger("collector.otlp.relay")

CURSOR_KEY = "relay_cursor"
STANDBY = "standby"  # another collector on the same PostgreSQL store exports
RESOURCE = {
    "service.name": "agentwatch",
    "service.namespace": "agentwatch",
    "service.version": __version__,
}
SCOPE = "agentwatch.relay"


def relay_config_from(settings: Settings, env: Mapping[str, str] | None = None) -> RelayConfig:
    """The relay's config: its knobs from `settings` (AGENTWATCH_RELAY_*, owned and validated
    there), where to send from the standard OTEL_EXPORTER_OTLP_* variables of `env` (default
    os.environ), which the exporter module reads. No endpoint for a signal, or
    AGENTWATCH_RELAY_<SIGNAL>=off, means that signal is not relayed; neither, the relay is off.
    A bad OTEL_* value raises SettingsError (otlp.export.ConfigError is one)."""
    env = os.environ if env is None else env
    logs, traces = targets_from_env(env)
    return RelayConfig(
        logs=logs if settings.relay_logs else None,
        traces=traces if settings.relay_traces else None,
        timeout_seconds=settings.relay_timeout_seconds,
        batch_events=settings.relay_batch_events,
        span_timeout_seconds=settings.relay_span_timeout_seconds,
        max_sessions=settings.relay_max_sessions,
        backoff_base_seconds=settings.relay_backoff_base_seconds,
        backoff_max_seconds=settings.relay_backoff_max_seconds,
        breaker_failures=settings.relay_breaker_failures,
        breaker_cooldown_seconds=settings.relay_breaker_cooldown_seconds,
    )


@dataclass
class _Batch:
    """One page, built once and sent until both signals are accepted."""

    advance_to: int | None  # the cursor after this batch; None for timed-out spans only
    logs: ExportLogsServiceRequest | None
    traces: ExportTraceServiceRequest | None
    log_count: int = 0
    span_count: int = 0


def _decode(row: dict[str, Any]) -> Decoded:
    payload = orjson.loads(row["payload"]) if row["payload"] else {}
    usage = orjson.loads(row["usage"]) if row["usage"] else None
    return row, payload if isinstance(payload, dict) else {}, usage


class Relay:
    """Satisfies collector.context.RelayStatus: `state` and `status()` for /readyz."""

    def __init__(self, store: EventStore, metrics: Metrics, config: RelayConfig) -> None:
        self.store = store
        self.metrics = metrics
        self.config = config
        self.cursor = 0
        self._exporters: dict[str, Exporter] = {}
        self._breaker = Breaker(
            config.breaker_failures,
            config.breaker_cooldown_seconds,
            config.backoff_base_seconds,
            config.backoff_max_seconds,
            on_state=self._on_state,
        )
        self._spans = self._span_builder()
        self._leading = False
        self._pending: _Batch | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backlog = 0
        self._lag = 0.0
        self._resource = Resource()
        put_attrs(self._resource.attributes, RESOURCE)
        self._scope = InstrumentationScope(name=SCOPE, version=__version__)

    # -- RelayStatus -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        if not self.config.enabled:
            return "disabled"
        return self._breaker.state if self._leading else STANDBY

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if not self.config.enabled:
            return out
        for signal in ("logs", "traces"):
            target = getattr(self.config, signal)
            out[signal] = None if target is None else f"{target.protocol} {target.endpoint}"
        out |= {
            "cursor": self.cursor,
            "backlog_events": self._backlog,
            "lag_seconds": round(self._lag, 3),
            "consecutive_failures": self._breaker.consecutive,
            "last_error": self._breaker.last_error,
            "open_sessions": len(self._spans.sessions),
        }
        return out

    def _span_builder(self) -> SpanBuilder:
        return SpanBuilder(
            self._history, self.config.max_sessions, int(self.config.span_timeout_seconds * 1000)
        )

    def _on_state(self, state: str) -> None:
        self.metrics.set_relay_state(state)
        log.warning(
            "relay state changed", extra={"state": state, "error": self._breaker.last_error}
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """After store.open(): load the cursor, rebuild quiet sessions' open spans, start."""
        if not self.config.enabled:
            self.metrics.set_relay_state("disabled")
            return
        for signal in ("logs", "traces"):
            target = getattr(self.config, signal)
            if target is not None:
                self._exporters[signal] = build_exporter(
                    signal, target, self.config.timeout_seconds
                )
        self.metrics.set_relay_state(STANDBY)
        self.store.add_listener(lambda _events: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="otlp-relay", daemon=True)
        self._thread.start()
        log.info("relay started", extra=self.status())

    def stop(self, timeout: float = 15.0) -> None:
        """Before store.close(): finish the export in flight (its cursor write included)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        for exporter in self._exporters.values():
            exporter.shutdown()

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._lead():
                self._wake.wait(self.config.poll_seconds)
                self._wake.clear()
                continue
            wait = self._breaker.wait_seconds()
            if wait > 0:
                self._stop.wait(wait)
                continue
            try:
                busy = self._step()
            except Exception:
                log.exception("relay step failed")
                busy = False
            self._update_gauges()
            if not busy:
                self._wake.wait(self.config.poll_seconds)
                self._wake.clear()

    def _lead(self) -> bool:
        """Whether this collector exports now (collectors sharing a PostgreSQL store elect
        one). A new leader starts from the cursor in the store: what its predecessor exported
        but did not record yet goes out again (at least once, never lost)."""
        leading = self.store.relay_leader()
        if leading and not self._leading:
            self.cursor = int(self.store.get_meta(CURSOR_KEY) or 0)
            self._pending = None
            self._spans = self._span_builder()
            if "traces" in self._exporters:
                self._rebuild_open_sessions()
            self.metrics.set_relay_state(self._breaker.state)
            log.info("relay leading", extra=self.status())
        elif self._leading and not leading:
            self._pending = None
            self.metrics.set_relay_state(STANDBY)
            self.metrics.relay_backlog.set(0)  # the leader reports the backlog
            self.metrics.relay_lag.set(0)
            log.warning("relay lock lost: another collector exports")
        self._leading = leading
        return leading

    def _step(self) -> bool:
        """Build (if needed) and send one batch; False when there was nothing to do."""
        if self._pending is None:
            self._pending = self._next_batch()
            if self._pending is None:
                return False
        batch = self._pending
        for signal in ("logs", "traces"):
            request = getattr(batch, signal)
            if request is None:
                continue
            error = self._exporters[signal].send(request)
            if error is not None:
                self.metrics.relay_failures.labels(signal=signal).inc()
                self._breaker.failure(f"{signal}: {error}")
                return True
            setattr(batch, signal, None)  # accepted: a retry of this batch skips it
            count = batch.log_count if signal == "logs" else batch.span_count
            self.metrics.relay_exported.labels(signal=signal).inc(count)
        if batch.advance_to is not None:
            self.store.set_meta(CURSOR_KEY, str(batch.advance_to)).result(30)
            self.cursor = batch.advance_to
        self._pending = None
        self._breaker.success()
        return True

    def _next_batch(self) -> _Batch | None:
        with self.store.reader() as conn:
            rows = dict_rows(
                conn.execute(
                    f"SELECT {EVENT_SELECT} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (self.cursor, self.config.batch_events),
                )
            )
        if not rows:
            if "traces" not in self._exporters:
                return None
            # Caught up: close what no event has touched for the span timeout.
            quiet = self._spans.sweep(now_ms())
            if not quiet:
                return None
            return _Batch(None, None, self._traces_request(quiet), 0, len(quiet))
        logs_req, scope_logs = self._logs_request() if "logs" in self._exporters else (None, None)
        finished: list[tuple[bytes, OpenSpan]] = []
        tracing = "traces" in self._exporters
        for raw in rows:
            row, payload, usage = _decode(raw)
            if scope_logs is not None:
                add_log_record(scope_logs, row, payload, usage)
            if tracing:
                spans = self._spans.process(row, payload, usage)
                if spans:
                    trace = self._spans.sessions[row["session_id"]].trace_id
                    finished += [(trace, s) for s in spans]
        traces_req = self._traces_request(finished) if finished else None
        return _Batch(rows[-1]["seq"], logs_req, traces_req, len(rows), len(finished))

    def _logs_request(self) -> tuple[ExportLogsServiceRequest, ScopeLogs]:
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        rl.resource.CopyFrom(self._resource)
        scope = rl.scope_logs.add()
        scope.scope.CopyFrom(self._scope)
        return req, scope

    def _traces_request(self, spans: list[tuple[bytes, OpenSpan]]) -> ExportTraceServiceRequest:
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.CopyFrom(self._resource)
        scope: ScopeSpans = rs.scope_spans.add()
        scope.scope.CopyFrom(self._scope)
        for trace, span in spans:
            add_span(scope, trace, span)
        return req

    # -- state rebuilt from the store ------------------------------------------------------
    def _history(self, session_id: str, before_seq: int) -> Iterator[Decoded]:
        with self.store.reader() as conn:
            rows = dict_rows(
                conn.execute(
                    f"SELECT {EVENT_SELECT} FROM events WHERE session_id = ? AND seq < ? ORDER BY seq",
                    (session_id, before_seq),
                )
            )
        return (_decode(r) for r in rows)

    def _rebuild_open_sessions(self) -> None:
        """Sessions that may have open spans (not ended, recently active) get their trees back,
        so their spans are closed by the timeout even if no new event comes."""
        since = now_ms() - int(2 * self.config.span_timeout_seconds * 1000)
        with self.store.reader() as conn:
            sessions = [
                r[0]
                for r in conn.execute(
                    "SELECT session_id FROM sessions WHERE ended_ts IS NULL AND last_ts > ? "
                    "ORDER BY last_ts DESC LIMIT ?",
                    (since, self.config.max_sessions),
                )
            ]
        for sid in sessions:
            self._spans.tree(sid, self.cursor + 1)

    def _update_gauges(self) -> None:
        with self.store.reader() as conn:
            top = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            oldest = conn.execute(
                "SELECT received_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (self.cursor,)
            ).fetchone()
        self._backlog = max(0, top - self.cursor)
        self._lag = 0.0 if oldest is None else max(0.0, time.time() - oldest[0] / 1000)
        self.metrics.relay_backlog.set(self._backlog)
        self.metrics.relay_lag.set(self._lag)
