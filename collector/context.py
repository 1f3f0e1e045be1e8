"""The per-app state that routes share, reached through request.app.state.ctx."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from collector.auth import HmacVerifier, check_token
from collector.metrics import Metrics
from collector.native import MetricsSink
from collector.settings import Settings
from collector.store import EventStore
from collector.tracker import Tracker


class RelayStatus(Protocol):
    """What /readyz needs to know of the OTLP relay (collector/otlp/relay.py)."""

    @property
    def state(self) -> str: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class AppContext:
    settings: Settings
    store: EventStore
    metrics: Metrics
    tracker: Tracker
    # Claude Code's own metrics (POST /v1/metrics) go here: collector/native/metrics.py.
    native_metrics: MetricsSink
    hmac: HmacVerifier | None = None
    relay: RelayStatus | None = None
    # Set when the server starts shutting down: long-lived responses (SSE) end early instead of
    # holding up uvicorn's graceful shutdown.
    stopping: threading.Event = field(default_factory=threading.Event)


def ctx(request: Request) -> AppContext:
    context: AppContext = request.app.state.ctx
    return context


def require_token(request: Request) -> None:
    """FastAPI dependency for query routes: the bearer token when AGENTWATCH_TOKEN is set."""
    check_token(request, ctx(request).settings.token)
