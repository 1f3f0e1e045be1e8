"""Real OTLP receivers for the relay tests: gRPC (grpcio + opentelemetry-proto) and HTTP/protobuf.

Both record every request they accept, can answer errors or be slow on demand, and can stop and
start again on the same port (an outage). Records are flattened into plain dicts for assertions.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.procs import free_port


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def attrs_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class Recorder:
    """What a receiver accepted, plus the knobs that make it fail or stall.

    Requests are kept as received and flattened into dicts only when `logs`/`spans` are read:
    flattening while answering would make the relay wait on this test process's Python, and
    the relay benchmark would measure the receiver instead of the relay.
    """

    _logs: list[dict[str, Any]] = field(default_factory=list)
    _spans: list[dict[str, Any]] = field(default_factory=list)
    _raw_logs: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    _raw_spans: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    requests: int = 0
    fail: bool = False  # answer every export with an error
    delay: float = 0.0  # seconds to stall before answering
    lock: threading.Lock = field(default_factory=threading.Lock)
    _flat_lock: threading.Lock = field(default_factory=threading.Lock)

    def gate(self) -> bool:
        """Apply the delay; True when this request must fail."""
        if self.delay:
            time.sleep(self.delay)
        return self.fail

    def add_logs(self, req: logs_service_pb2.ExportLogsServiceRequest) -> None:
        with self.lock:
            self.requests += 1
            self._raw_logs.append(req)

    def add_spans(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests += 1
            self._raw_spans.append(req)

    @property
    def logs(self) -> list[dict[str, Any]]:
        with self._flat_lock:  # the receiving threads only wait for the short swap below
            with self.lock:
                raw, self._raw_logs = self._raw_logs, []
            for req in raw:
                self._logs += self._flat_logs(req)
            return self._logs

    @property
    def spans(self) -> list[dict[str, Any]]:
        with self._flat_lock:
            with self.lock:
                raw, self._raw_spans = self._raw_spans, []
            for req in raw:
                self._spans += self._flat_spans(req)
            return self._spans

    @staticmethod
    def _flat_logs(req: logs_service_pb2.ExportLogsServiceRequest) -> list[dict[str, Any]]:
        out = []
        for rl in req.resource_logs:
            resource = attrs_of(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    out.append(
                        {
                            "resource": resource,
                            "scope": sl.scope.name,
                            "time_unix_nano": r.time_unix_nano,
                            "observed_time_unix_nano": r.observed_time_unix_nano,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "body": value_of(r.body),
                            "attributes": attrs_of(r.attributes),
                            "trace_id": r.trace_id.hex(),
                            "span_id": r.span_id.hex(),
                        }
                    )
        return out

    @staticmethod
    def _flat_spans(req: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
        out = []
        for rs in req.resource_spans:
            resource = attrs_of(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        {
                            "resource": resource,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "start_ms": s.start_time_unix_nano // 1_000_000,
                            "end_ms": s.end_time_unix_nano // 1_000_000,
                            "status_code": s.status.code,
                            "status_message": s.status.message,
                            "attributes": attrs_of(s.attributes),
                        }
                    )
        return out

    def event_ids(self) -> set[str]:
        return {r["attributes"]["agentwatch.event_id"] for r in self.logs}


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def Export(self, request: Any, context: Any) -> Any:
        if self.rec.gate():
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver told to fail")
        self.rec.add_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def Export(self, request: Any, context: Any) -> Any:
        if self.rec.gate():
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver told to fail")
        self.rec.add_spans(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    """OTLP/gRPC on 127.0.0.1:<port>; endpoint is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.rec = Recorder()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self.rec), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self.rec), server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None


class HttpReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1:<port>: POST /v1/logs and /v1/traces."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.rec = Recorder()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpReceiver:
        rec = self.rec

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    return self._answer(415)
                if rec.gate():
                    return self._answer(503)
                if self.path == "/v1/logs":
                    req = logs_service_pb2.ExportLogsServiceRequest()
                    req.ParseFromString(body)
                    rec.add_logs(req)
                elif self.path == "/v1/traces":
                    treq = trace_service_pb2.ExportTraceServiceRequest()
                    treq.ParseFromString(body)
                    rec.add_spans(treq)
                else:
                    return self._answer(404)
                self._answer(200)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
