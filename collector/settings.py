"""Settings from AGENTWATCH_* environment variables, each with a safe default (secrets excepted).

This is the one place that reads AGENTWATCH_* (the relay's knobs included: relay_config_from
in collector/otlp/relay.py builds the relay's config from these) and SettingsError is the one error a
bad value raises, so `python -m collector` can print it on one line and exit 2. The standard
OTEL_EXPORTER_OTLP_* variables (where the relay sends) are not ours: the exporter module
(collector/otlp/export.py) reads them and raises a SettingsError too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CAPTURE_MODES = ("full", "metadata")
# The `user` label and field: Claude Code's hashed user.id, or (opt-in) the signed-in e-mail.
USER_LABELS = ("id", "email")
SYNC_MODES = ("FULL", "NORMAL")
INTEGRITY_MODES = ("quick", "full", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
BOOLS = {"1": True, "true": True, "yes": True, "on": True}
BOOLS |= {"0": False, "false": False, "no": False, "off": False}


class SettingsError(ValueError):
    """An environment variable has a value the collector cannot use."""


def _default_db() -> Path:
    return Path("data") / "agentwatch.db"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 4000
    # A SQLite file, or a postgresql:// URL (a team's shared store, collector/store/postgres.py).
    db: Path | str = field(default_factory=_default_db)
    token: str | None = None
    hmac_secret: str | None = None
    hmac_window_seconds: int = 300
    metrics_auth: bool = False
    retention_days: int = 30
    retention_interval_seconds: int = 3600
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 10_000
    body_timeout_seconds: float = 30.0
    capture: str = "full"
    user_label: str = "id"
    prices_file: Path | None = None
    max_field_chars: int = 8192
    max_payload_bytes: int = 65_536
    queue_max_events: int = 100_000
    sqlite_synchronous: str = "NORMAL"
    integrity_check: str = "quick"
    label_cap: int = 200
    loop_threshold: int = 5
    waiting_seconds: int = 60
    session_idle_seconds: int = 1800
    log_level: str = "INFO"
    # The OTLP relay (on only when an OTEL_EXPORTER_OTLP_* endpoint is set).
    relay_logs: bool = True
    relay_traces: bool = True
    relay_timeout_seconds: float = 10.0
    relay_batch_events: int = 2000
    relay_span_timeout_seconds: float = 1800.0
    relay_max_sessions: int = 5000
    relay_backoff_base_seconds: float = 0.5
    relay_backoff_max_seconds: float = 30.0
    relay_breaker_failures: int = 5
    relay_breaker_cooldown_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read AGENTWATCH_<FIELD> for every field; unset or empty means the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(variable(f.name), "").strip()
            if raw:
                values[f.name] = _convert(f.name, raw, f.type)
        return cls(**values).validated()

    @property
    def postgres_url(self) -> str | None:
        db = self.db
        return db if isinstance(db, str) and db.startswith(POSTGRES_SCHEMES) else None

    @property
    def sqlite_path(self) -> Path:
        return Path(self.db) if self.postgres_url is None else _default_db()

    def validated(self) -> Settings:
        """Self, or SettingsError naming the first variable whose value cannot be used."""
        choices = {
            "capture": CAPTURE_MODES,
            "user_label": USER_LABELS,
            "sqlite_synchronous": SYNC_MODES,
            "integrity_check": INTEGRITY_MODES,
            "log_level": LOG_LEVELS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{variable(name)} must be one of {allowed}")
        if not 0 < self.port < 65536:
            raise SettingsError("AGENTWATCH_PORT must be 1-65535")
        for name, least in _AT_LEAST.items():
            if getattr(self, name) < least:
                raise SettingsError(f"{variable(name)} must be >= {least}")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise SettingsError(f"{variable(name)} must be > 0")
        return self


# Bounds of the numbers: beyond them a value means nothing (or stalls the collector).
_AT_LEAST: dict[str, int] = {
    "hmac_window_seconds": 1,
    "retention_days": 1,
    "retention_interval_seconds": 1,
    "max_body_bytes": 1024,
    "max_batch_events": 1,
    "max_field_chars": 1,
    "max_payload_bytes": 1,
    "queue_max_events": 1000,
    "label_cap": 1,
    "loop_threshold": 1,
    "waiting_seconds": 0,
    "session_idle_seconds": 1,
}
_POSITIVE = (
    "body_timeout_seconds",
    "relay_timeout_seconds",
    "relay_batch_events",
    "relay_span_timeout_seconds",
    "relay_max_sessions",
    "relay_backoff_base_seconds",
    "relay_backoff_max_seconds",
    "relay_breaker_failures",
    "relay_breaker_cooldown_seconds",
)


def variable(name: str) -> str:
    """The environment variable of a Settings field."""
    return f"AGENTWATCH_{name.upper()}"


def _convert(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)  # the annotation as written (postponed evaluation): "int", "Path | None"
    if kind.startswith("bool"):
        if raw.lower() not in BOOLS:
            raise SettingsError(f"{variable(name)}={raw!r} is not one of {', '.join(BOOLS)}")
        return BOOLS[raw.lower()]
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise SettingsError(f"{variable(name)}={raw!r} is not a valid {kind}") from None
    if name == "db" and raw.startswith(POSTGRES_SCHEMES):
        return raw
    if kind.startswith("Path"):
        return Path(raw)
    if name in {"sqlite_synchronous", "log_level"}:
        return raw.upper()
    return raw
