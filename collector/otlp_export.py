"""Relay configuration (OTEL_EXPORTER_OTLP_* and AGENTWATCH_RELAY_*) and the OTLP exporters.

The exporters are opentelemetry-exporter-otlp's own (gRPC or HTTP/protobuf: endpoint, headers,
TLS, compression and timeout come from the standard variables), given requests that the relay
has already built, and with their internal retries cut to one attempt: the relay's loop and
circuit breaker decide when to retry, and the data stays in the store meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from grpc import StatusCode
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

PROTOCOLS = ("grpc", "http/protobuf")
Request = ExportLogsServiceRequest | ExportTraceServiceRequest


class ConfigError(ValueError):
    """A relay variable has a value the collector cannot use."""


@dataclass(frozen=True)
class SignalTarget:
    endpoint: str
    protocol: str


@dataclass(frozen=True)
class RelayConfig:
    logs: SignalTarget | None = None
    traces: SignalTarget | None = None
    timeout_seconds: float = 10.0
    batch_events: int = 2000
    span_timeout_seconds: float = 1800.0
    max_sessions: int = 5000
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    poll_seconds: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.logs is not None or self.traces is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelayConfig:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip()

        base = get("OTEL_EXPORTER_OTLP_ENDPOINT")
        default_protocol = get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"

        def target(signal: str) -> SignalTarget | None:
            upper = signal.upper()
            if get(f"AGENTWATCH_RELAY_{upper}") in {"0", "false", "off"}:
                return None
            protocol = get(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL") or default_protocol
            if protocol not in PROTOCOLS:
                raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of {PROTOCOLS}")
            own = get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
            if own:  # a signal endpoint is used as given (the spec)
                return SignalTarget(own, protocol)
            if not base:
                return None
            if protocol == "grpc":
                return SignalTarget(base, protocol)
            return SignalTarget(base.rstrip("/") + f"/v1/{signal}", protocol)

        values: dict[str, Any] = {"logs": target("logs"), "traces": target("traces")}
        knobs = {
            "timeout_seconds": "AGENTWATCH_RELAY_TIMEOUT_SECONDS",
            "batch_events": "AGENTWATCH_RELAY_BATCH_EVENTS",
            "span_timeout_seconds": "AGENTWATCH_RELAY_SPAN_TIMEOUT_SECONDS",
            "max_sessions": "AGENTWATCH_RELAY_MAX_SESSIONS",
            "backoff_base_seconds": "AGENTWATCH_RELAY_BACKOFF_BASE_SECONDS",
            "backoff_max_seconds": "AGENTWATCH_RELAY_BACKOFF_MAX_SECONDS",
            "breaker_failures": "AGENTWATCH_RELAY_BREAKER_FAILURES",
            "breaker_cooldown_seconds": "AGENTWATCH_RELAY_BREAKER_COOLDOWN_SECONDS",
        }
        for name, var in knobs.items():
            raw = get(var)
            if not raw:
                continue
            kind = int if name in {"batch_events", "max_sessions", "breaker_failures"} else float
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
            if value <= 0:
                raise ConfigError(f"{var} must be > 0")
            values[name] = value
        return cls(**values)


class Exporter(Protocol):
    def send(self, request: Any) -> str | None:
        """Send one request once; None on success, else why it failed."""

    def shutdown(self) -> None: ...


class _GrpcLogs(GrpcLogExporter):
    def _translate_data(self, data: Any) -> ExportLogsServiceRequest:
        return data  # type: ignore[no-any-return]  # already an ExportLogsServiceRequest

    def _count_data(self, data: Any) -> int:
        return sum(len(s.log_records) for r in data.resource_logs for s in r.scope_logs)


class _GrpcSpans(GrpcSpanExporter):
    def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
        return data  # type: ignore[no-any-return]  # already an ExportTraceServiceRequest

    def _count_data(self, data: Any) -> int:
        return sum(len(s.spans) for r in data.resource_spans for s in r.scope_spans)


# The gRPC exporter retries the codes it is given until its timeout; OK is never an error code,
# so nothing is retried inside it. It still reconnects its channel after UNAVAILABLE, which
# lets the next attempt reach a receiver that came back.
_NO_RETRY = [StatusCode.OK]


class GrpcExporter:
    def __init__(self, signal: str, endpoint: str, timeout: float) -> None:
        cls = _GrpcLogs if signal == "logs" else _GrpcSpans
        self._exporter = cls(endpoint=endpoint, timeout=timeout, retryable_error_codes=_NO_RETRY)

    def send(self, request: Any) -> str | None:
        result = self._exporter._export(request)
        if result in (LogRecordExportResult.SUCCESS, SpanExportResult.SUCCESS):
            return None
        return "gRPC export failed"

    def shutdown(self) -> None:
        self._exporter.shutdown()


class HttpExporter:
    def __init__(self, signal: str, endpoint: str, timeout: float) -> None:
        cls = HttpLogExporter if signal == "logs" else HttpSpanExporter
        self._exporter = cls(endpoint=endpoint, timeout=timeout)

    def send(self, request: Any) -> str | None:
        # One attempt (the client's export() loops with its own backoff up to the timeout);
        # _submit still reconnects once at once on a stale pooled connection.
        client = self._exporter._client
        try:
            result = client._submit(client._compress(request.SerializeToString()), client._timeout)
        except Exception as exc:  # the transport raises on some connection failures
            return f"HTTP export failed: {exc}"
        status = result.status_code
        if status is not None and 200 <= status < 300:
            return None
        return f"HTTP {status}" if status is not None else f"HTTP export failed: {result.error}"

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


def build_exporter(signal: str, target: SignalTarget, timeout: float) -> Exporter:
    if target.protocol == "grpc":
        return GrpcExporter(signal, target.endpoint, timeout)
    return HttpExporter(signal, target.endpoint, timeout)
