"""Token usage and Claude Code's own session totals, read from a transcript (JSONL).

Usage is read incrementally. Each transcript file has a state file with the byte offset read so
far and, for the assistant messages seen recently (key: message.id + requestId), the usage
already counted. Streaming writes one message on several lines, the first ones with partial
output counts, and the last line of a turn may not be written yet when Stop runs; so a message
seen again with larger counts yields only the difference. Every message counts once, with its
final usage, whichever event reads it. Only complete lines are consumed. A missing or
unreadable transcript yields nothing.

`cost-state` lines are Claude Code's own running totals for the session (cost and tokens per
model, subagents, compaction and side calls included; they carry over a resume). The last one
is written before SessionEnd hooks run.
"""

from __future__ import annotations

import fcntl
import os

from . import fastjson

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    Usage = Dict[str, Dict[str, int]]


MAX_SEEN = 2_000  # messages remembered per file (a message streams within one turn)
MAX_READ = 64 * 1024 * 1024  # bytes consumed per run; the rest waits for the next event
COST_STATE_TAIL = 1024 * 1024  # where the last cost-state line is looked for
FIELDS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cache_read"),
    ("cache_creation_input_tokens", "cache_creation"),
)
COST_STATE_FIELDS = (
    ("inputTokens", "input"),
    ("outputTokens", "output"),
    ("cacheReadInputTokens", "cache_read"),
    ("cacheCreationInputTokens", "cache_creation"),
)


def _state_path(state_dir: str, transcript: str) -> str:
    import hashlib

    digest = hashlib.sha256(os.path.realpath(transcript).encode("utf-8", "replace")).hexdigest()
    return os.path.join(state_dir, "transcripts", digest[:32] + ".json")


def read_usage(transcript: str, state_dir: str) -> Optional[Usage]:
    """Usage by model of what the assistant messages added since the last call, or None."""
    try:
        f = open(transcript, "rb")  # noqa: SIM115 - only this OSError means "no transcript"
    except OSError:
        return None
    with f:
        path = _state_path(state_dir, transcript)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as sf:
            # Two hooks reading one transcript at once (parallel subagents) must not count twice.
            fcntl.flock(sf.fileno(), fcntl.LOCK_EX)
            try:
                state = fastjson.loads(sf.read() or "{}")
            except ValueError:
                state = {}
            offset = state.get("offset", 0)
            counted = state.get("counted")
            if not isinstance(offset, int) or not isinstance(counted, dict):
                offset, counted = 0, {}
            if os.fstat(f.fileno()).st_size < offset:  # truncated or replaced: start over
                offset, counted = 0, {}
            f.seek(offset)
            data = f.read(MAX_READ)
            end = data.rfind(b"\n")
            if end < 0:
                return None
            usage = _add(data[: end + 1], counted)
            while len(counted) > MAX_SEEN:
                del counted[next(iter(counted))]
            sf.seek(0)
            sf.truncate()
            sf.write(fastjson.dumps({"offset": offset + end + 1, "counted": counted}))
    return usage or None


def _add(chunk: bytes, counted: Dict[str, List[int]]) -> Usage:
    """Count each message's growth beyond what `counted` holds; update `counted`."""
    totals: Usage = {}
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
        now = [_int(usage.get(field)) for field, _ in FIELDS]
        before = counted.pop(key, None) or [0, 0, 0, 0]
        growth = [max(now[i] - before[i], 0) for i in range(len(FIELDS))]
        counted[key] = [max(now[i], before[i]) for i in range(len(FIELDS))]  # now the newest
        if not any(growth):
            continue
        bucket = totals.setdefault(str(msg.get("model") or "unknown"), {n: 0 for _, n in FIELDS})
        for i, (_, name) in enumerate(FIELDS):
            bucket[name] += growth[i]
    return totals


def read_cost_state(transcript: str) -> Optional[Dict[str, Any]]:
    """Claude Code's own totals from the transcript's last cost-state line, or None.

    {"total_cost_usd": float, "models": {model: {input, output, cache_read, cache_creation,
    cost_usd}}}: the shape the collector's envelope takes.
    """
    try:
        with open(transcript, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - COST_STATE_TAIL))
            tail = f.read()
    except OSError:
        return None
    at = tail.rfind(b'"type":"cost-state"')
    if at < 0:
        return None
    start = tail.rfind(b"\n", 0, at) + 1
    stop = tail.find(b"\n", at)
    try:
        obj = fastjson.loads(tail[start : stop if stop >= 0 else len(tail)].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    models = obj.get("modelUsage") if isinstance(obj, dict) else None
    total = obj.get("totalCostUSD") if isinstance(obj, dict) else None
    if not isinstance(models, dict) or not isinstance(total, (int, float)):
        return None
    out: Dict[str, Any] = {}
    for model, m in models.items():
        if not isinstance(m, dict):
            continue
        counts: Dict[str, Any] = {name: _int(m.get(field)) for field, name in COST_STATE_FIELDS}
        cost = m.get("costUSD")
        counts["cost_usd"] = float(cost) if isinstance(cost, (int, float)) and cost > 0 else 0.0
        out[str(model)] = counts
    return {"total_cost_usd": float(total), "models": out}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
