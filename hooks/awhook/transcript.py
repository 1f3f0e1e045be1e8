"""Token usage from a Claude Code transcript (JSONL), read incrementally.

Each transcript file has a state file holding the byte offset read so far and the keys
(message.id + requestId) of the assistant messages already counted: streaming writes one message
on several lines, so a message counts once. Only complete lines are consumed; a line still being
written is read on the next Stop. A missing or unreadable transcript yields no usage.
"""

from __future__ import annotations

import fcntl
import os

from . import fastjson

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Dict, Optional

    Usage = Dict[str, Dict[str, int]]


MAX_SEEN = 5_000  # remembered message keys per file (messages stream within one turn)
MAX_READ = 64 * 1024 * 1024  # bytes consumed per run; the rest waits for the next Stop
FIELDS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cache_read"),
    ("cache_creation_input_tokens", "cache_creation"),
)


def _state_path(state_dir: str, transcript: str) -> str:
    import hashlib

    digest = hashlib.sha256(os.path.realpath(transcript).encode("utf-8", "replace")).hexdigest()
    return os.path.join(state_dir, "transcripts", digest[:32] + ".json")


def read_usage(transcript: str, state_dir: str) -> Optional[Usage]:
    """Usage by model of the assistant messages added since the last call, or None."""
    try:
        f = open(transcript, "rb")  # noqa: SIM115 - only this OSError means "no transcript"
    except OSError:
        return None
    with f:
        path = _state_path(state_dir, transcript)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as sf:
            # Two Stop hooks of one transcript (async hooks may overlap) must not count twice.
            fcntl.flock(sf.fileno(), fcntl.LOCK_EX)
            try:
                state = fastjson.loads(sf.read() or "{}")
            except ValueError:
                state = {}
            offset = int(state.get("offset", 0))
            seen = list(state.get("seen", []))
            if os.fstat(f.fileno()).st_size < offset:  # truncated or replaced: start over
                offset, seen = 0, []
            f.seek(offset)
            data = f.read(MAX_READ)
            end = data.rfind(b"\n")
            if end < 0:
                return None
            usage = _sum(data[: end + 1], set(seen), seen)
            sf.seek(0)
            sf.truncate()
            sf.write(fastjson.dumps({"offset": offset + end + 1, "seen": seen[-MAX_SEEN:]}))
    return usage or None


def _sum(chunk: bytes, seen_set: set, seen: list) -> Usage:
    best: Dict[str, tuple] = {}  # key -> (model, usage) of the most complete line of a message
    for line in chunk.split(b"\n"):
        if b'"usage"' not in line:  # skip user lines and tool results without parsing them
            continue
        try:
            obj = fastjson.loads(line.decode("utf-8", "replace"))
        except ValueError:
            continue
        msg = obj.get("message") if isinstance(obj, dict) else None
        if not isinstance(msg, dict) or msg.get("role") != "assistant":
            continue
        usage = msg.get("usage")
        if not isinstance(usage, dict):
            continue
        key = f"{msg.get('id')}:{obj.get('requestId')}"
        if key in seen_set:
            continue
        prev = best.get(key)
        # Streamed copies repeat the usage; keep the one with the most output tokens.
        if prev is None or _int(usage.get("output_tokens")) >= _int(prev[1].get("output_tokens")):
            best[key] = (str(msg.get("model") or "unknown"), usage)
    totals: Usage = {}
    for key, (model, usage) in best.items():
        seen_set.add(key)
        seen.append(key)
        counts = {name: _int(usage.get(field)) for field, name in FIELDS}
        if not any(counts.values()):
            continue
        bucket = totals.setdefault(model, {name: 0 for _, name in FIELDS})
        for name, value in counts.items():
            bucket[name] += value
    return totals


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
