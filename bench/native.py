"""Ingest of Claude Code's own OpenTelemetry log events (OTLP/HTTP protobuf to /v1/logs), beside
hook-envelope ingest (/v1/events) of as many events on a fresh collector in the same run.

The records look like Claude Code 2.1.328's (every attribute a string, as it sends them): an
api_request and a tool_result per turn, 50 sessions; batches of 500 records, 4 client threads,
each request acknowledged after commit. Rounds alternate the two kinds; figures are medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from bench.common import Figure, say
from bench.ingest import BATCH, http_batch_rate, post_all
from bench.workload import events as make_events
from tests.support.procs import start_collector

ROUNDS = 3


def _attrs(kvs: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        kv: KeyValue = kvs.add()
        kv.key = key
        kv.value.string_value = value


def log_requests(total: int) -> list[bytes]:
    """Serialized ExportLogsServiceRequests of BATCH records each, `total` records in all."""
    bodies = []
    now = time.time()
    run = uuid.uuid4().hex[:8]
    for first in range(0, total, BATCH):
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        _attrs(
            rl.resource.attributes, {"service.name": "claude-code", "service.version": "2.1.328"}
        )
        scope = rl.scope_logs.add()
        scope.scope.name = "com.anthropic.claude_code.events"
        for i in range(first, min(first + BATCH, total)):
            turn, kind = divmod(i, 2)
            name = "api_request" if kind == 0 else "tool_result"
            record = scope.log_records.add()
            record.body.string_value = f"claude_code.{name}"
            ts = now - 3600 + i / 1000
            record.time_unix_nano = int(ts * 1e9)
            common = {
                "session.id": f"bench-{run}-{turn % 50:02d}",
                "user.id": "9f" * 32,
                "terminal.type": "xterm",
                "event.name": name,
                "event.timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
                + f".{int(ts * 1000) % 1000:03d}Z",
                "event.sequence": str(i),
                "prompt.id": f"prompt-{turn}",
            }
            if name == "api_request":
                common |= {
                    "model": "claude-opus-5-5",
                    "input_tokens": "1200",
                    "output_tokens": "80",
                    "cache_read_tokens": "3000",
                    "cache_creation_tokens": "0",
                    "cost_usd": "0.0070",
                    "duration_ms": "2100",
                    "ttft_ms": "400",
                    "request_id": f"req_{i:08d}",
                }
            else:
                common |= {
                    "tool_name": "Bash",
                    "tool_use_id": f"toolu_{run}{i:08d}",
                    "success": "true",
                    "duration_ms": "35",
                    "tool_result_size_bytes": "120",
                }
            _attrs(record.attributes, common)
        bodies.append(req.SerializeToString())
    return bodies


def otlp_rate(port: int, bodies: list[bytes], total: int) -> float:
    seconds = post_all(
        port, "/v1/logs", bodies, "application/x-protobuf", lambda status, _: status == 200
    )
    return total / seconds


def run(quick: bool) -> list[Figure]:
    total = 10_000 if quick else 50_000
    envelopes = make_events(total)
    hooks: list[float] = []
    otlp: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(ROUNDS):
            for kind in ("hook", "otlp"):
                proc = start_collector(tmp / f"{kind}-{i}")
                try:
                    if kind == "hook":
                        hooks.append(http_batch_rate(proc.port, envelopes))
                        say(f"hook envelopes: {hooks[-1]:,.0f} events/s ({total} events)")
                    else:
                        otlp.append(otlp_rate(proc.port, log_requests(total), total))
                        say(f"OTLP log records: {otlp[-1]:,.0f} events/s ({total} records)")
                finally:
                    proc.stop()
    hook, native = statistics.median(hooks), statistics.median(otlp)
    say(f"medians of {ROUNDS}: OTLP logs {native:,.0f}/s, hook envelopes {hook:,.0f}/s")
    return [
        Figure("native_hook_envelope_ingest_rate", round(hook), "events/s", "baseline", True),
        Figure("native_otlp_log_ingest_rate", round(native), "events/s", "report", True),
        Figure(
            "native_otlp_to_hook_ingest_ratio", round(native / hook, 3), "ratio", "report", True
        ),
    ]
