"""Relay throughput: events/s exported to a local OTLP/gRPC receiver, beside ingest throughput.

The same N events are ingested over HTTP (batches of 500, 4 clients) while the receiver is down,
so they all wait in the store; then the receiver comes up and the time for the relay to drain the
backlog (every event's log record received, backlog 0) gives the relay's rate. Both run in the
same collector process on the same machine, so the ratio is the figure that matters.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Figure, say
from bench.ingest import http_batch_rate
from bench.workload import events as make_events
from tests.support.otlp_receiver import GrpcReceiver
from tests.support.procs import start_collector

TARGET = 20_000  # events/s: the relay keeps up with ingest


def _backlog(url: str) -> int:
    return int(httpx.get(url + "/readyz", timeout=10).json()["relay"]["backlog_events"])


def run(quick: bool) -> list[Figure]:
    total = 20_000 if quick else 100_000
    envelopes = make_events(total)
    ids = {e["event_id"] for e in envelopes}
    with tempfile.TemporaryDirectory() as d:
        rx = GrpcReceiver()  # not started: ingest fills the outbox
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "AGENTWATCH_RELAY_BREAKER_FAILURES": "1000",
            "AGENTWATCH_RELAY_BACKOFF_MAX_SECONDS": "0.05",
        }
        proc = start_collector(Path(d), env)
        try:
            ingest = http_batch_rate(proc.port, envelopes)
            say(f"relay bench: HTTP batch ingest {ingest:,.0f} events/s ({total} events)")
            rx.start()
            started = time.perf_counter()
            while not (len(rx.rec.logs) >= total and _backlog(proc.url) == 0):
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            proc.stop()
            rx.stop()
    missing = ids - rx.rec.event_ids()
    if missing:
        raise RuntimeError(f"relay lost {len(missing)} events")
    relay = total / elapsed
    say(
        f"relay bench: drained {total} events in {elapsed:.2f} s = {relay:,.0f} events/s "
        f"({len(rx.rec.spans)} spans), {relay / ingest:.2f}x ingest"
    )
    return [
        Figure(
            "relay_export_events_per_second",
            round(relay),
            "events/s",
            f">= {TARGET}",
            relay >= TARGET,
        ),
        Figure("relay_ingest_events_per_second", round(ingest), "events/s", "baseline", True),
        Figure(
            "relay_to_ingest_ratio",
            round(relay / ingest, 2),
            "ratio",
            ">= 1 (keeps up)",
            relay >= ingest,
        ),
    ]
