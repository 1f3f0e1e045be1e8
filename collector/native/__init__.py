"""Claude Code's own OpenTelemetry (CLAUDE_CODE_ENABLE_TELEMETRY=1), received over OTLP/HTTP.

The data flow, one module a step: `decode` turns a request body (protobuf or JSON, gzip or not)
into an OTLP message and answers in the same encoding; `events` turns each log record into an
Event of its session; metrics go whole to a `MetricsSink` (they are not stored in SQLite).
The routes are collector/routes/otlp.py.
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)


class MetricsSink(Protocol):
    """Where POST /v1/metrics hands each decoded request (on the event loop: keep it quick)."""

    def add(self, request: ExportMetricsServiceRequest, received_ms: int) -> None: ...
