"""ASGI middleware: request ids and the HTTP latency histogram (a plain ASGI class; Starlette's
BaseHTTPMiddleware costs more per request than ingest itself)."""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.logs import request_id
from collector.metrics import Metrics

METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}


class ObserveRequests:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _route(scope: Scope) -> str:
        # The matched route's template, never the raw path: paths carry ids and would grow the
        # series. The router leaves the matched route in the scope; unmatched paths are "other".
        route = scope.get("route")
        return str(getattr(route, "path", "other"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")[:64]
                break
        rid = rid or uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id.reset(token)
            self.metrics.http_duration.labels(
                route=self._route(scope),
                method=scope["method"] if scope["method"] in METHODS else "other",
                status=str(status),
            ).observe(time.perf_counter() - started)
