"""Settings of the hook, read from the environment (the variables: README.md, "Hooks")."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only

if TYPE_CHECKING:
    from typing import Mapping, Optional, TypeVar, Union

    _Default = TypeVar("_Default", int, None)

DEFAULT_URL = "http://127.0.0.1:4000"
DEFAULT_MAX_EVENTS = 10_000


class Config:
    """Plain class, not a NamedTuple/dataclass: those import `typing`/`dataclasses`."""

    __slots__ = (
        "hmac_secret",
        "max_events",
        "replay_ts_ms",
        "source_app",
        "spool_dir",
        "token",
        "url",
    )

    def __init__(self, env: Mapping[str, str]) -> None:
        self.url = (env.get("AGENTWATCH_URL") or DEFAULT_URL).rstrip("/")
        self.token = env.get("AGENTWATCH_TOKEN", "")
        self.hmac_secret = env.get("AGENTWATCH_HMAC_SECRET", "")
        self.source_app = env.get("AGENTWATCH_SOURCE_APP", "")
        self.spool_dir = env.get("AGENTWATCH_SPOOL_DIR") or default_spool_dir(env)
        self.max_events = max(1, _int(env.get("AGENTWATCH_SPOOL_MAX_EVENTS"), DEFAULT_MAX_EVENTS))
        self.replay_ts_ms: Optional[int] = _int(env.get("AGENTWATCH_REPLAY_TS_MS"), None)


def default_spool_dir(env: Mapping[str, str]) -> str:
    # A state directory, not /tmp: the spool must survive reboots.
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "agentwatch", "spool")


def _int(value: Optional[str], default: _Default) -> Union[int, _Default]:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def load(env: Mapping[str, str]) -> Config:
    return Config(env)
