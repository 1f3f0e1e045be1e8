"""Query parameters: time ranges, keyset cursors, pages and the error for a bad one.

Every page is keyset-paginated: the cursor is an opaque base64url token holding the sort key of
the last row served, so a page costs an index seek however deep it is (OFFSET would rescan).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from collector import events

RANGE_PRESETS = {"5m": 300_000, "1h": 3_600_000, "6h": 21_600_000, "24h": 86_400_000}


RANGE_PRESETS.update({"7d": 7 * 86_400_000, "30d": 30 * 86_400_000})


MAX_LIMIT = 10_000


class QueryError(ValueError):
    """An invalid filter or cursor: the message goes back to the client in a 400."""


def parse_time(value: str, name: str) -> int:
    """Epoch milliseconds from an integer string or an ISO 8601 timestamp (naive means UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} must be epoch milliseconds or ISO 8601, not {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def time_range(
    range_: str | None, from_: str | None, to: str | None, now_ms: int | None = None
) -> tuple[int | None, int | None]:
    """[from, to) in epoch ms from a preset (5m, 1h, 6h, 24h, 7d, 30d) or explicit bounds."""
    if range_ is not None:
        if from_ is not None or to is not None:
            raise QueryError("give either range or from/to, not both")
        if range_ not in RANGE_PRESETS:
            raise QueryError(f"range must be one of {', '.join(RANGE_PRESETS)}")
        now = now_ms if now_ms is not None else events.now_ms()
        return now - RANGE_PRESETS[range_], None
    start = parse_time(from_, "from") if from_ is not None else None
    end = parse_time(to, "to") if to is not None else None
    if start is not None and end is not None and end <= start:
        raise QueryError("to must be after from")
    return start, end


def encode_cursor(kind: str, *key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([kind, *key])).decode().rstrip("=")


def decode_cursor(token: str, kind: str, types: Sequence[type]) -> list[Any]:
    """The sort key inside a cursor made by encode_cursor(kind, ...), checked against types."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise QueryError("invalid cursor: not a cursor this API issued") from None
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != kind
        or not all(type(v) is t for v, t in zip(value[1:], types, strict=True))
    ):
        raise QueryError(f"invalid cursor: not a cursor of this {kind} listing")
    return value[1:]


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {**self.extra, "items": self.items, "next_cursor": self.next_cursor}
