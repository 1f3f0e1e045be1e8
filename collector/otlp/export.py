"""Relay configuration (OTEL_EXPORTER_OTLP_* and AGENTWATCH_RELAY_*) and a small OTLP client.

The relay builds its ExportLogsServiceRequest / ExportTraceServiceRequest itself, so sending one
is all that is left, on public interfaces only: over OTLP/gRPC with the service stubs generated in
opentelemetry-proto (grpcio's public API), over OTLP/HTTP (binary protobuf) with the stdlib's
urllib. Each send() is one attempt: the relay's loop and circuit breaker decide when to retry,
and the data stays in the store meanwhile.

The standard variables, each read per signal first (OTEL_EXPORTER_OTLP_LOGS_HEADERS), then
general (OTEL_EXPORTER_OTLP_HEADERS): ENDPOINT, PROTOCOL, HEADERS, COMPRESSION (none, gzip;
deflate over HTTP), INSECURE (gRPC), CERTIFICATE, CLIENT_KEY, CLIENT_CERTIFICATE. The timeout of
one attempt is AGENTWATCH_RELAY_TIMEOUT_SECONDS; OTEL_EXPORTER_OTLP_TIMEOUT is not read (the
spec's unit is milliseconds, the Python SDK's seconds: one knob of ours avoids the ambiguity).

A failure is classified as the OTLP specification does, and its message says which it is:
retryable (HTTP 429/502/503/504 or no answer; gRPC UNAVAILABLE, DEADLINE_EXCEEDED, ...) or
permanent (any other status or code). The relay retries both alike (dropping a page would lose
its events); the word tells an operator reading /readyz whether waiting will help. A partial
success (the receiver took the request but rejected some items) must not be retried: it counts
as sent and is logged.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import re
import ssl
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from collector import __version__
from collector.settings import SettingsError

log = logging.getLogger("collector.otlp.export")

PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = {"grpc": ("none", "gzip"), "http/protobuf": ("none", "gzip", "deflate")}
Request = ExportLogsServiceRequest | ExportTraceServiceRequest
USER_AGENT = f"agentwatch-collector/{__version__}"


class ConfigError(SettingsError):
    """A relay variable has a value the collector cannot use."""


@dataclass(frozen=True)
class SignalTarget:
    """Where and how one signal goes. Unset options keep their defaults (an insecure gRPC
    channel for an http:// endpoint, the system's CA certificates, no compression)."""

    endpoint: str
    protocol: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    compression: str = "none"
    insecure: bool | None = None  # gRPC: None = decided by the endpoint's scheme
    certificate: str = ""  # CA file(s) to trust instead of the system's
    client_key: str = ""
    client_certificate: str = ""


@dataclass(frozen=True)
class RelayConfig:
    """Where the relay sends (None: that signal is off) and its knobs, which Settings owns and
    defaults (relay.relay_config_from builds this)."""

    logs: SignalTarget | None
    traces: SignalTarget | None
    timeout_seconds: float
    batch_events: int
    span_timeout_seconds: float
    max_sessions: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    breaker_failures: int
    breaker_cooldown_seconds: float
    poll_seconds: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.logs is not None or self.traces is not None


def targets_from_env(
    env: Mapping[str, str] | None = None,
) -> tuple[SignalTarget | None, SignalTarget | None]:
    """Where logs and traces go, from the standard OTEL_EXPORTER_OTLP_* variables (default
    os.environ): None for a signal with no endpoint. A bad value raises ConfigError."""
    env = os.environ if env is None else env

    def get(name: str) -> str:
        return env.get(name, "").strip()

    base = get("OTEL_EXPORTER_OTLP_ENDPOINT")

    def target(signal: str) -> SignalTarget | None:
        upper = signal.upper()
        variable = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
        if not get(variable):
            variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = get(variable) or "grpc"
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{variable} must be one of {PROTOCOLS}")
        own = get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
        if own:  # a signal endpoint is used as given (the spec)
            endpoint = own
        elif not base:
            return None
        elif protocol == "grpc":
            endpoint = base
        else:
            endpoint = base.rstrip("/") + f"/v1/{signal}"
        return _options(signal, endpoint, protocol, get)

    return target("logs"), target("traces")


def _options(signal: str, endpoint: str, protocol: str, get: Callable[[str], str]) -> SignalTarget:
    """The per-signal variable if set, else the general one (the spec's precedence)."""

    def pick(option: str) -> tuple[str, str]:
        own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_{option}"
        if get(own):
            return own, get(own)
        return f"OTEL_EXPORTER_OTLP_{option}", get(f"OTEL_EXPORTER_OTLP_{option}")

    if protocol == "http/protobuf":
        url = urlsplit(endpoint)
        if url.scheme not in {"http", "https"} or not url.netloc:
            raise ConfigError(f"{endpoint!r} is not an http:// or https:// URL for OTLP/HTTP")
    var, raw = pick("COMPRESSION")
    compression = raw.lower() or "none"
    if compression not in COMPRESSIONS[protocol]:
        raise ConfigError(f"{var}={raw!r}: {protocol} takes one of {COMPRESSIONS[protocol]}")
    _, insecure = pick("INSECURE")
    return SignalTarget(
        endpoint,
        protocol,
        headers=parse_headers(*pick("HEADERS")),
        compression=compression,
        insecure=None if not insecure else insecure.lower() == "true",
        certificate=pick("CERTIFICATE")[1],
        client_key=pick("CLIENT_KEY")[1],
        client_certificate=pick("CLIENT_CERTIFICATE")[1],
    )


# OTEL_EXPORTER_OTLP_HEADERS: comma-separated key=value pairs, percent-encoded (the W3C
# Baggage format). Like the OpenTelemetry SDKs, an unencoded value (one with spaces, say
# "Authorization=Basic abc") is taken as written.
_OWS = r"[\x09\x20]*"
_KEY = r"[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+"
_ENCODED = re.compile(
    rf"{_OWS}{_KEY}{_OWS}={_OWS}[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*{_OWS}"
)
_LITERAL = re.compile(
    rf"{_OWS}{_KEY}{_OWS}={_OWS}[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*{_OWS}"
)


def parse_headers(var: str, raw: str) -> tuple[tuple[str, str], ...]:
    """Header names lower-cased (gRPC metadata requires it); a later duplicate wins."""
    out: dict[str, str] = {}
    for n, item in enumerate(re.split(r"[ \t]*,[ \t]*", raw), 1):
        item = item.strip()
        if not item:
            continue
        encoded = _ENCODED.fullmatch(item)
        if not encoded and not _LITERAL.fullmatch(item):  # never echoed: it may be a credential
            raise ConfigError(f"{var}: entry {n} is not a key=value header")
        key, _, value = item.partition("=")
        if encoded:
            key, value = unquote(key), unquote(value)
        out[key.strip().lower()] = value.strip()
    return tuple(out.items())


class Exporter(Protocol):
    def send(self, request: Request) -> str | None:
        """Send one request once; None on success, else why it failed."""

    def shutdown(self) -> None: ...


# -- failure classification (OTLP specification, "Failures" and "Retryable Response Codes") ---
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


def grpc_retryable(code: grpc.StatusCode, trailing: Any = ()) -> bool:
    """RESOURCE_EXHAUSTED is retryable only when the server says when to retry (RetryInfo)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return any(key == RETRY_INFO_KEY for key, _ in trailing or ())
    return code in RETRYABLE_GRPC


def _failure(reason: str, retryable: bool) -> str:
    return f"{reason} ({'retryable' if retryable else 'permanent'})"


_SIGNALS: dict[str, tuple[Any, Any, str]] = {
    # signal: (gRPC stub, response message, its partial_success field of rejected items)
    "logs": (LogsServiceStub, ExportLogsServiceResponse, "rejected_log_records"),
    "traces": (TraceServiceStub, ExportTraceServiceResponse, "rejected_spans"),
}


def _partial_success(signal: str, response: Any) -> None:
    """The receiver took the request but not all of it: retrying would not help (the spec)."""
    partial = response.partial_success
    rejected = getattr(partial, _SIGNALS[signal][2])
    if rejected or partial.error_message:
        log.warning(
            "OTLP receiver rejected part of an export",
            extra={"signal": signal, "rejected": rejected, "error": partial.error_message},
        )


class _FileError(Exception):
    """A certificate or key file the client cannot use (an operator must fix it)."""


def _read(path: str, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _FileError(f"cannot read the {what} {path}: {exc.strerror}") from None


class GrpcExporter:
    """OTLP/gRPC through the generated LogsService / TraceService stubs.

    The channel is made at the first send (certificate files are read then; a send reports a
    file it cannot read) and made again after UNAVAILABLE, so that the next attempt connects at
    once to a receiver that came back instead of waiting out grpc's reconnect backoff.
    """

    def __init__(self, signal: str, target: SignalTarget, timeout: float) -> None:
        self.signal = signal
        self.target = target
        self.timeout = timeout
        self._channel: Any = None
        self._stub: Any = None
        url = urlsplit(target.endpoint)
        # "http://host:4317" and "https://host:4317" name host:4317; anything else is a gRPC
        # target as given ("host:4317", "dns:///host:4317").
        self.address = url.netloc or target.endpoint
        if url.scheme == "https":
            self.insecure = False
        elif target.insecure is not None:
            self.insecure = target.insecure
        else:
            self.insecure = url.scheme == "http"

    def _connect(self) -> Any:
        options = [("grpc.primary_user_agent", USER_AGENT)]
        compression = grpc.Compression.Gzip if self.target.compression == "gzip" else None
        if self.insecure:
            channel = grpc.insecure_channel(self.address, options, compression)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(self.target.certificate, "CA certificate"),
                private_key=_read(self.target.client_key, "client key"),
                certificate_chain=_read(self.target.client_certificate, "client certificate"),
            )
            channel = grpc.secure_channel(self.address, credentials, options, compression)
        self._channel = channel
        return _SIGNALS[self.signal][0](channel)

    def send(self, request: Request) -> str | None:
        try:
            if self._stub is None:
                self._stub = self._connect()
            response = self._stub.Export(
                request, timeout=self.timeout, metadata=self.target.headers or None
            )
        except _FileError as exc:
            return _failure(f"gRPC export failed: {exc}", False)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            trailing = exc.trailing_metadata() if isinstance(exc, grpc.Call) else ()
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.UNAVAILABLE:
                self._close()
            retryable = grpc_retryable(code, trailing)
            return _failure(f"gRPC export failed: {code.name}: {details}", retryable)
        _partial_success(self.signal, response)
        return None

    def _close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def shutdown(self) -> None:
        self._close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as a failure (HTTPError with its 3xx), never followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpExporter:
    """OTLP/HTTP with binary protobuf: one POST of the serialized request per send.

    urllib keeps no connection between requests; a new one per page of events costs nothing
    next to the page. Proxies come from the usual https_proxy / no_proxy variables.
    """

    def __init__(self, signal: str, target: SignalTarget, timeout: float) -> None:
        self.signal = signal
        self.target = target
        self.timeout = timeout
        self._opener: urllib.request.OpenerDirector | None = None
        headers = {"content-type": "application/x-protobuf", "user-agent": USER_AGENT}
        headers |= dict(target.headers)
        if target.compression != "none":
            headers.setdefault("content-encoding", target.compression)
        self.headers = headers

    def _build_opener(self) -> urllib.request.OpenerDirector:
        target = self.target
        if urlsplit(target.endpoint).scheme != "https":
            return urllib.request.build_opener(_NoRedirect())
        # Read first for a clear message about a missing file; ssl then loads them.
        _read(target.certificate, "CA certificate")
        _read(target.client_certificate, "client certificate")
        _read(target.client_key, "client key")
        context = ssl.create_default_context(cafile=target.certificate or None)
        if target.client_certificate:  # one PEM file with both, or the key apart
            context.load_cert_chain(target.client_certificate, target.client_key or None)
        return urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirect()
        )

    def _compress(self, body: bytes) -> bytes:
        if self.target.compression == "gzip":
            return gzip.compress(body, mtime=0)
        if self.target.compression == "deflate":
            return zlib.compress(body)
        return body

    def send(self, request: Request) -> str | None:
        try:
            if self._opener is None:
                self._opener = self._build_opener()
        except _FileError as exc:
            return _failure(f"HTTP export failed: {exc}", False)
        except (OSError, ValueError) as exc:  # not a certificate or key (ssl.SSLError)
            return _failure(f"HTTP export failed: unusable TLS files: {exc}", False)
        body = self._compress(request.SerializeToString())
        req = urllib.request.Request(
            self.target.endpoint, data=body, headers=self.headers, method="POST"
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                content_type = resp.headers.get("Content-Type", "")
                answer = resp.read()
        except urllib.error.HTTPError as exc:  # an answer, not 2xx
            with exc:
                status = exc.code
                return _failure(f"HTTP {status} {exc.reason}", status in RETRYABLE_HTTP)
        except (OSError, http.client.HTTPException) as exc:
            # No answer: refused, reset, timed out, TLS handshake failed (URLError is an OSError).
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return _failure(f"HTTP export failed: {reason or type(exc).__name__}", True)
        if answer and content_type.startswith("application/x-protobuf"):
            response = _SIGNALS[self.signal][1]()
            try:
                response.ParseFromString(answer)
            except Exception:  # protobuf's DecodeError; the answer was taken all the same
                log.warning(
                    "OTLP receiver answered an unreadable body", extra={"signal": self.signal}
                )
            else:
                _partial_success(self.signal, response)
        return None

    def shutdown(self) -> None:
        self._opener = None


def build_exporter(signal: str, target: SignalTarget, timeout: float) -> Exporter:
    if target.protocol == "grpc":
        return GrpcExporter(signal, target, timeout)
    return HttpExporter(signal, target, timeout)
