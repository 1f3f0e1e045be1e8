"""Reading and decoding request bodies: size limit, read deadline, content type, JSON."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class BadRequest(Exception):
    """A request refused before anything was stored: status, metric reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def media_type(request: Request, allowed: tuple[str, ...]) -> str:
    value = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if value not in allowed:
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"content type {value or '(none)'!r} not supported; use one of {', '.join(allowed)}",
        )
    return value


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, or 413 past `limit` bytes, or 408 when it trickles in too slowly."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise BadRequest(400, "malformed_json", "invalid Content-Length") from None
        if too_big:
            raise BadRequest(413, "too_large", f"body larger than {limit} bytes")

    async def collect() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, "too_large", f"body larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise BadRequest(408, "body_timeout", f"body not received within {timeout:g} s") from None
    except ClientDisconnect:
        # A body cut short is an incomplete (malformed) request, not a server error to log.
        raise BadRequest(400, "client_disconnected", "client disconnected mid-body") from None


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, "malformed_json", f"malformed JSON: {exc}") from None


def parse_ndjson(body: bytes) -> list[Any | BadRequest]:
    """One item per non-empty line; a bad line becomes a BadRequest in its place."""
    items: list[Any | BadRequest] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(BadRequest(400, "malformed_json", f"malformed JSON: {exc}"))
    return items
