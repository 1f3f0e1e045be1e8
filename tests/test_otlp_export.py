"""The relay's OTLP client (collector/otlp/export.py) against real receivers on real sockets.

OTLP/gRPC through grpcio servers, OTLP/HTTP through http.server, TLS with certificates that
openssl makes for the test: what goes on the wire (headers, compression, protobuf), and how every
answer is classified the way the OTLP specification says (retryable or permanent, partial
success).
"""

from __future__ import annotations

import gzip
import logging
import ssl
import subprocess
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from collector.otlp.export import (
    RETRY_INFO_KEY,
    USER_AGENT,
    ConfigError,
    Exporter,
    SignalTarget,
    build_exporter,
    grpc_retryable,
    targets_from_env,
)
from collector.settings import SettingsError
from tests.support.procs import free_port


def logs_request(n: int = 3) -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for i in range(n):
        scope.log_records.add().body.string_value = f"event {i}"
    return req


def traces_request() -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "execute_tool Bash", b"t" * 16, b"s" * 8
    return req


def exporter(signal: str, env: dict[str, str], timeout: float = 5) -> Exporter:
    logs, traces = targets_from_env(env)
    target = logs if signal == "logs" else traces
    assert target is not None
    return build_exporter(signal, target, timeout)


# -- configuration ---------------------------------------------------------------------------
def test_options_come_per_signal_first_then_general() -> None:
    logs, traces = targets_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel:4317",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-team = shop",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=t1",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "none",
            "OTEL_EXPORTER_OTLP_INSECURE": "false",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem",
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE": "/logs-ca.pem",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/key.pem",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/cert.pem",
        }
    )
    assert logs == SignalTarget(
        "https://otel:4317",
        "grpc",
        headers=(("authorization", "Bearer abc"), ("x-team", "shop")),
        compression="none",
        insecure=False,
        certificate="/logs-ca.pem",
        client_key="/key.pem",
        client_certificate="/cert.pem",
    )
    assert traces is not None
    assert traces.headers == (("x-tenant", "t1"),)  # replaces, as in the SDKs
    assert (traces.compression, traces.certificate) == ("gzip", "/ca.pem")
    # Unencoded values are taken as written; credentials never show in a repr.
    literal, _ = targets_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a b%20c"}
    )
    assert literal is not None and literal.headers == (("api-key", "a b%20c"),)
    assert "a b" not in repr(literal)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_HEADERS": "s3cr3t"}, "OTEL_EXPORTER_OTLP_HEADERS: entry 1 is"),
        ({"OTEL_EXPORTER_OTLP_LOGS_HEADERS": "a=1,=s3cr3t"}, "_LOGS_HEADERS: entry 2 is"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION='zstd'"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, "grpc takes one of"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "is not an http:// or https:// URL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must"),
    ],
)
def test_unusable_options_stop_the_collector_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:  # __main__ prints it on one line and exits 2
        targets_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4317", **env})
    assert isinstance(info.value, ConfigError)
    assert message in str(info.value) and "s3cr3t" not in str(info.value)


def test_grpc_codes_are_classified_as_the_spec_says() -> None:
    retryable = {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE"}
    retryable.add("DATA_LOSS")
    for code in grpc.StatusCode:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED):
            assert grpc_retryable(code) == (code.name in retryable), code
    # RESOURCE_EXHAUSTED only when the server says when to come back.
    assert not grpc_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, ())
    assert grpc_retryable(
        grpc.StatusCode.RESOURCE_EXHAUSTED, ((RETRY_INFO_KEY, b"\n\x02\x08\x01"),)
    )


# -- OTLP/HTTP -------------------------------------------------------------------------------
@dataclass
class HttpSink:
    """Records each POST as received and answers what the test sets."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    stall: threading.Event | None = None  # hold the request until it is set, never answer
    port: int = 0

    def url(self, path: str = "/v1/logs", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def serve_http(
    sink: HttpSink, context: ssl.SSLContext | None = None, port: int = 0
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            body = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(encoding, bytes)(raw)
            sink.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if sink.stall is not None:  # the client gives up first: no answer at all
                sink.stall.wait(10)
                self.close_connection = True
                return
            self.send_response(sink.status)
            for key, value in ({"Content-Type": "application/x-protobuf"} | sink.headers).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(sink.body)))
            self.end_headers()
            self.wfile.write(sink.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    sink.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    server = serve_http(sink)
    yield sink
    server.shutdown()
    server.server_close()


def http_env(sink: HttpSink, **more: str) -> dict[str, str]:
    base = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url(""),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    return base | {f"OTEL_EXPORTER_OTLP_{k.upper()}": v for k, v in more.items()}


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_http_posts_the_request_as_protobuf_with_the_headers(
    sink: HttpSink, compression: str
) -> None:
    env = http_env(sink, headers="Authorization=Bearer%20abc", traces_compression=compression)
    assert exporter("traces", env).send(traces_request()) is None
    path, headers, body = sink.seen[-1]
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["authorization"] == "Bearer abc"
    assert headers["user-agent"] == USER_AGENT
    assert headers.get("content-encoding", "none") == compression
    assert trace_service_pb2.ExportTraceServiceRequest.FromString(body) == traces_request()


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "Bad Request", "permanent"),
        (401, "Unauthorized", "permanent"),
        (404, "Not Found", "permanent"),
        (413, "Request Entity Too Large", "permanent"),
        (429, "Too Many Requests", "retryable"),
        (500, "Internal Server Error", "permanent"),
        (502, "Bad Gateway", "retryable"),
        (503, "Service Unavailable", "retryable"),
        (504, "Gateway Timeout", "retryable"),
        (308, "Permanent Redirect", "permanent"),  # never followed
    ],
)
def test_http_failures_are_classified_as_the_spec_says(
    sink: HttpSink, status: int, reason: str, kind: str
) -> None:
    sink.status = status
    sink.headers = {"Location": sink.url("/elsewhere")}
    assert (
        exporter("logs", http_env(sink)).send(logs_request()) == f"HTTP {status} {reason} ({kind})"
    )
    assert [path for path, _, _ in sink.seen] == ["/v1/logs"]


def test_http_without_an_answer_is_retryable_and_recovers() -> None:
    port = free_port()
    env = {
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://127.0.0.1:{port}/v1/logs",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    client = exporter("logs", env)
    error = client.send(logs_request())
    assert error is not None and error.startswith("HTTP export failed: ")
    assert error.endswith("(retryable)") and "refused" in error.lower()
    sink = HttpSink()
    server = serve_http(sink, port=port)  # the endpoint comes up
    try:
        assert client.send(logs_request()) is None
        assert len(sink.seen) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_http_slow_receiver_times_out_as_retryable(sink: HttpSink) -> None:
    sink.stall = threading.Event()
    try:
        error = exporter("logs", http_env(sink), timeout=0.3).send(logs_request())
    finally:
        sink.stall.set()
    assert error is not None and error.endswith("(retryable)") and "timed out" in error


def test_http_partial_success_counts_as_sent_and_is_logged(
    sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    answer = logs_service_pb2.ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 2
    answer.partial_success.error_message = "2 records too old"
    sink.body = answer.SerializeToString()
    with caplog.at_level(logging.WARNING, "collector.otlp.export"):
        assert exporter("logs", http_env(sink)).send(logs_request()) is None  # not retried
    (record,) = caplog.records
    assert record.msg == "OTLP receiver rejected part of an export"
    assert (record.signal, record.rejected, record.error) == ("logs", 2, "2 records too old")  # type: ignore[attr-defined]
    caplog.clear()
    sink.body = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
    with caplog.at_level(logging.WARNING, "collector.otlp.export"):
        assert exporter("logs", http_env(sink)).send(logs_request()) is None
    assert caplog.records == []


# -- OTLP/gRPC -------------------------------------------------------------------------------
@dataclass
class GrpcSink:
    """Records requests and metadata; answers ok, an error code, or a partial success."""

    code: grpc.StatusCode | None = None
    trailing: tuple[tuple[str, bytes], ...] = ()
    rejected: int = 0
    seen: list[tuple[Any, dict[str, str]]] = field(default_factory=list)

    def answer(self, request: Any, context: Any, response: Any) -> Any:
        self.seen.append((request, {k: v for k, v in context.invocation_metadata()}))
        if self.code is not None:
            context.set_trailing_metadata(self.trailing)
            context.abort(self.code, "told to fail")
        if self.rejected:
            partial = response.partial_success
            field_name = (
                "rejected_log_records"
                if hasattr(partial, "rejected_log_records")
                else "rejected_spans"
            )
            setattr(partial, field_name, self.rejected)
            partial.error_message = "rejected some"
        return response


def serve_grpc(sink: GrpcSink, port: int, credentials: Any = None) -> grpc.Server:
    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return sink.answer(request, context, logs_service_pb2.ExportLogsServiceResponse())

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return sink.answer(request, context, trace_service_pb2.ExportTraceServiceResponse())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    if credentials is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    return server


@pytest.fixture
def grpc_sink() -> Iterator[tuple[GrpcSink, int]]:
    sink, port = GrpcSink(), free_port()
    server = serve_grpc(sink, port)
    yield sink, port
    server.stop(grace=None).wait()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_grpc_sends_the_request_with_the_headers_as_metadata(
    grpc_sink: tuple[GrpcSink, int], compression: str
) -> None:
    sink, port = grpc_sink
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "X-Api-Key=k1,x-tenant=t%2C1",
        "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
    }
    client = exporter("logs", env)
    assert client.send(logs_request(5)) is None
    assert exporter("traces", env).send(traces_request()) is None
    (request, metadata), (spans, _) = sink.seen
    assert request == logs_request(5) and spans == traces_request()
    assert metadata["x-api-key"] == "k1" and metadata["x-tenant"] == "t,1"
    assert metadata["user-agent"].startswith(USER_AGENT)
    client.shutdown()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "retryable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "retryable"),
        (grpc.StatusCode.INVALID_ARGUMENT, "permanent"),
        (grpc.StatusCode.UNAUTHENTICATED, "permanent"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "permanent"),
    ],
)
def test_grpc_failures_are_classified_as_the_spec_says(
    grpc_sink: tuple[GrpcSink, int], code: grpc.StatusCode, kind: str
) -> None:
    sink, port = grpc_sink
    sink.code = code
    client = exporter("logs", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert client.send(logs_request()) == f"gRPC export failed: {code.name}: told to fail ({kind})"
    client.shutdown()


def test_grpc_resource_exhausted_with_retry_info_is_retryable(
    grpc_sink: tuple[GrpcSink, int],
) -> None:
    sink, port = grpc_sink
    sink.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    sink.trailing = ((RETRY_INFO_KEY, b"\n\x02\x08\x01"),)  # RetryInfo{retry_delay: 1s}
    client = exporter("logs", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    error = client.send(logs_request())
    assert error == "gRPC export failed: RESOURCE_EXHAUSTED: told to fail (retryable)"


def test_grpc_reaches_a_receiver_that_comes_back_at_once() -> None:
    port = free_port()
    client = exporter("traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    for _ in range(3):  # grpc's own reconnect backoff would now be seconds
        error = client.send(traces_request())
        assert error is not None and error.startswith("gRPC export failed: UNAVAILABLE")
        assert error.endswith("(retryable)")
    sink = GrpcSink()
    server = serve_grpc(sink, port)
    try:
        assert client.send(traces_request()) is None
        assert len(sink.seen) == 1
    finally:
        server.stop(grace=None).wait()
        client.shutdown()


def test_grpc_partial_success_counts_as_sent_and_is_logged(
    grpc_sink: tuple[GrpcSink, int], caplog: pytest.LogCaptureFixture
) -> None:
    sink, port = grpc_sink
    sink.rejected = 1
    client = exporter("traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    with caplog.at_level(logging.WARNING, "collector.otlp.export"):
        assert client.send(traces_request()) is None
    (record,) = caplog.records
    assert (record.signal, record.rejected, record.error) == ("traces", 1, "rejected some")  # type: ignore[attr-defined]
    client.shutdown()


# -- TLS -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    return Pki(*self_signed(directory, "receiver"), *self_signed(directory, "relay"))


def test_https_with_a_private_ca_and_a_client_certificate(pki: Pki) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.client_cert)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    sink = HttpSink()
    server = serve_http(sink, context)
    try:
        endpoint = sink.url("/v1/logs", "https")
        env = {
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
        untrusted = exporter("logs", env).send(logs_request())
        assert untrusted is not None and "CERTIFICATE_VERIFY_FAILED" in untrusted
        assert untrusted.endswith("(retryable)")
        trusted = env | {
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.server_cert),
            "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE": str(pki.client_cert),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki.client_key),
        }
        assert exporter("logs", trusted).send(logs_request()) is None
        assert len(sink.seen) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_grpc_tls_with_a_private_ca_and_a_client_certificate(pki: Pki) -> None:
    port = free_port()
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.client_cert.read_bytes(),
        require_client_auth=True,
    )
    sink = GrpcSink()
    server = serve_grpc(sink, port, credentials)
    try:
        # https:// (or no scheme and INSECURE unset) means TLS; the system CAs do not know ours.
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{port}"}
        untrusted = exporter("logs", env)
        error = untrusted.send(logs_request())
        assert error is not None and error.startswith("gRPC export failed: UNAVAILABLE")
        untrusted.shutdown()
        env |= {
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE": str(pki.server_cert),
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki.client_cert),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki.client_key),
        }
        trusted = exporter("logs", env)
        assert trusted.send(logs_request()) is None
        assert len(sink.seen) == 1
        trusted.shutdown()
        # INSECURE=true on an endpoint without a scheme: plain text, which a TLS port refuses.
        plain = exporter("logs", env | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1:{port}",
                                        "OTEL_EXPORTER_OTLP_INSECURE": "true"})  # fmt: skip
        error = plain.send(logs_request())
        assert error is not None and error.startswith("gRPC export failed: UNAVAILABLE")
        plain.shutdown()
    finally:
        server.stop(grace=None).wait()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_unreadable_certificate_fails_each_send_permanently(
    tmp_path: Path, protocol: str
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:1",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "missing.pem"),
    }
    client = exporter("logs", env)
    prefix = "gRPC" if protocol == "grpc" else "HTTP"
    for _ in range(2):  # read again at each send: a secret mounted later is picked up
        assert client.send(logs_request()) == (
            f"{prefix} export failed: cannot read the CA certificate {tmp_path}/missing.pem: "
            "No such file or directory (permanent)"
        )
    client.shutdown()
