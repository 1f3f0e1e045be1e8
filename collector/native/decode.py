"""OTLP/HTTP bodies, as the OTLP specification has them: requests in binary protobuf
(application/x-protobuf) or OTLP JSON (application/json: lowerCamelCase names, 64-bit integers
as strings, trace and span ids in hex), gzip-compressed or not; answers in the request's own
encoding, errors as a google.rpc.Status.

A compressed body is inflated no further than the limit the raw body has
(AGENTWATCH_MAX_BODY_BYTES): a small gzip bomb is refused with 413 after inflating that much.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Iterator
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from starlette.requests import Request
from starlette.responses import Response

from collector.body import BadRequest, parse_json

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
OTLP_TYPES = (PROTOBUF, JSON)
ENCODINGS = ("gzip", "identity")

Req = TypeVar("Req", ExportLogsServiceRequest, ExportMetricsServiceRequest)

# google.rpc.Code for the statuses we answer (the specification lets a server omit it).
_RPC_CODES = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 422: 3, 503: 14}
_HEX_ID = {"traceId": 32, "spanId": 16}
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")


def content_encoding(request: Request) -> str:
    """gzip or identity; 415 for any other Content-Encoding."""
    value = request.headers.get("content-encoding", "").strip().lower() or "identity"
    if value not in ENCODINGS:
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"content encoding {value!r} not supported; use gzip or none",
        )
    return value


def gunzip(data: bytes, limit: int) -> bytes:
    """The inflated gzip body (all its members), or 413 once it passes `limit` bytes."""
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # At most one byte past the limit: enough to know it is too big, never more.
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(400, "malformed_body", f"malformed gzip body: {exc}") from None
        if len(out) > limit:
            raise BadRequest(413, "too_large", f"body larger than {limit} bytes once inflated")
        if not inflater.eof:
            raise BadRequest(400, "malformed_body", "malformed gzip body: cut short")
        data = inflater.unused_data
        if not data:
            return bytes(out)


def decode(body: bytes, kind: str, encoding: str, message: type[Req], limit: int) -> Req:
    """The Export*ServiceRequest a body holds; 400 (or 413) for one that holds none."""
    if encoding == "gzip":
        body = gunzip(body, limit)
    request = message()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(400, "malformed_body", f"malformed protobuf: {exc}") from None
        return request
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise BadRequest(400, "malformed_body", "an OTLP JSON body is an object")
    _hex_ids_to_base64(doc)
    try:
        # The specification: receivers MUST ignore fields they do not know.
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise BadRequest(400, "malformed_body", f"not an OTLP {message.__name__}: {exc}") from None
    return request


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """OTLP JSON writes trace and span ids in hex; protobuf's JSON mapping reads bytes as base64."""
    holders = list(_objects(doc, "resourceLogs", "scopeLogs", "logRecords"))
    for metric in _objects(doc, "resourceMetrics", "scopeMetrics", "metrics"):
        for kind in _METRIC_KINDS:
            holders += _objects(metric, kind, "dataPoints", "exemplars")
    for obj in holders:
        for key, size in _HEX_ID.items():
            for name in (key, _snake(key)):
                value = obj.get(name)
                if isinstance(value, str) and len(value) == size and _is_hex(value):
                    obj[name] = base64.b64encode(bytes.fromhex(value)).decode()


def _objects(node: Any, *path: str) -> Iterator[dict[str, Any]]:
    """The objects at `path` below node (through lists; camelCase or snake_case names)."""
    if isinstance(node, list):
        for item in node:
            yield from _objects(item, *path)
    elif isinstance(node, dict):
        if not path:
            yield node
            return
        child = node.get(path[0], node.get(_snake(path[0])))
        if child is not None:
            yield from _objects(child, *path[1:])


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in value)


def answer(message: Any, kind: str) -> Response:
    """A 200 with an Export*ServiceResponse, in the request's encoding."""
    if kind == PROTOBUF:
        return Response(message.SerializeToString(), media_type=PROTOBUF)
    return Response(orjson.dumps(json_format.MessageToDict(message)), media_type=JSON)


def status_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> Response:
    """An error as the specification wants it: a google.rpc.Status (code, message) in the
    request's encoding (JSON when the request's own was not one we read)."""
    code = _RPC_CODES.get(status, 13 if status >= 500 else 2)
    if kind == PROTOBUF:
        text = message.encode()
        # Status{int32 code = 1; string message = 2}: two fields, encoded by hand (the message
        # type lives in googleapis-common-protos, which the collector does not otherwise need).
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
        return Response(body, status_code=status, media_type=PROTOBUF, headers=headers)
    body = orjson.dumps({"code": code, "message": message})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
