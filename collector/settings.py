"""Settings from AGENTWATCH_* environment variables, each with a safe default (secrets excepted)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CAPTURE_MODES = ("full", "metadata")
SYNC_MODES = ("FULL", "NORMAL")
INTEGRITY_MODES = ("quick", "full", "off")


class SettingsError(ValueError):
    """An environment variable has a value the collector cannot use."""


def _default_db() -> Path:
    return Path("data") / "agentwatch.db"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 4000
    db: Path = field(default_factory=_default_db)
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read AGENTWATCH_<FIELD> for every field; unset or empty means the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"AGENTWATCH_{f.name.upper()}", "").strip()
            if raw:
                values[f.name] = _convert(f.name, raw, f.type)
        return cls(**values).validated()

    def validated(self) -> Settings:
        checks = [
            (self.capture in CAPTURE_MODES, f"AGENTWATCH_CAPTURE must be one of {CAPTURE_MODES}"),
            (
                self.sqlite_synchronous in SYNC_MODES,
                f"AGENTWATCH_SQLITE_SYNCHRONOUS must be one of {SYNC_MODES}",
            ),
            (
                self.integrity_check in INTEGRITY_MODES,
                f"AGENTWATCH_INTEGRITY_CHECK must be one of {INTEGRITY_MODES}",
            ),
            (0 < self.port < 65536, "AGENTWATCH_PORT must be 1-65535"),
            (self.retention_days >= 1, "AGENTWATCH_RETENTION_DAYS must be >= 1"),
            (self.max_body_bytes >= 1024, "AGENTWATCH_MAX_BODY_BYTES must be >= 1024"),
            (self.max_batch_events >= 1, "AGENTWATCH_MAX_BATCH_EVENTS must be >= 1"),
            (self.queue_max_events >= 1000, "AGENTWATCH_QUEUE_MAX_EVENTS must be >= 1000"),
            (self.label_cap >= 1, "AGENTWATCH_LABEL_CAP must be >= 1"),
            (self.loop_threshold >= 1, "AGENTWATCH_LOOP_THRESHOLD must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        return self


def _convert(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if kind.startswith("Path"):
            return Path(raw)
    except ValueError:
        raise SettingsError(f"AGENTWATCH_{name.upper()}={raw!r} is not a valid {kind}") from None
    if name in {"sqlite_synchronous", "log_level"}:
        return raw.upper()
    return raw
