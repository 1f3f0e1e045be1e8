"""Estimated cost of tokens from a price table (USD per million tokens), for sessions that never
got Claude Code's own figure (a crash, an older Claude Code, a run still going on).

Claude Code's own `costUSD`/`total_cost_usd` is the truth (collector/accounting.py settles a
session on it); the table only fills in before that. The 5-5 rows were read off Claude Code
2.1.328's own cost figures (one million tokens of each type, one type at a time); the older
rows are the published list prices (cache reads 0.1 x input, 5-minute cache writes 1.25 x).
Prices go stale: AGENTWATCH_PRICES_FILE names a JSON file whose entries are tried first,
{"model substring": {"input": 3, "output": 15, "cache_read": 0.3, "cache_creation": 3.75}}.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import orjson

from collector.settings import SettingsError


class Price(NamedTuple):
    input: float
    output: float
    cache_read: float
    cache_creation: float


# (model-name substring, price per million tokens); the first match wins, so specific first.
DEFAULT_PRICES: list[tuple[str, Price]] = [
    ("opus-5", Price(4.0, 20.0, 0.2, 5.0)),
    ("sonnet-5", Price(2.0, 10.0, 0.1, 2.5)),
    ("haiku-5", Price(0.5, 0.5, 0.05, 0.625)),
    ("opus-4-5", Price(5.0, 25.0, 0.5, 6.25)),
    ("opus-4-6", Price(5.0, 25.0, 0.5, 6.25)),
    ("opus-4-7", Price(5.0, 25.0, 0.5, 6.25)),
    ("opus", Price(15.0, 75.0, 1.5, 18.75)),
    ("sonnet", Price(3.0, 15.0, 0.3, 3.75)),
    ("haiku-4", Price(1.0, 5.0, 0.1, 1.25)),
    ("haiku-3-5", Price(0.8, 4.0, 0.08, 1.0)),
    ("3-5-haiku", Price(0.8, 4.0, 0.08, 1.0)),
    ("haiku", Price(0.25, 1.25, 0.03, 0.3)),
]


class PricesError(SettingsError):
    """The prices file cannot be read or does not have the documented shape."""


class PriceTable:
    """Estimated USD for token counts by model; unknown models cost 0 (their tokens still count)."""

    def __init__(self, entries: list[tuple[str, Price]] | None = None) -> None:
        self.entries = [(k.lower(), p) for k, p in (entries or [])] + DEFAULT_PRICES

    @classmethod
    def from_file(cls, path: Path | None) -> PriceTable:
        if path is None:
            return cls()
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise PricesError(f"AGENTWATCH_PRICES_FILE {path}: {exc}") from None
        if not isinstance(data, dict):
            raise PricesError(f"AGENTWATCH_PRICES_FILE {path}: not a JSON object")
        entries = []
        for model, p in data.items():
            try:
                entries.append((model, Price(**{k: float(p[k]) for k in Price._fields})))
            except (TypeError, KeyError, ValueError):
                raise PricesError(
                    f"AGENTWATCH_PRICES_FILE {path}: {model!r} needs numbers for "
                    f"{', '.join(Price._fields)} (USD per million tokens)"
                ) from None
        return cls(entries)

    def cost_usd(self, model: str, counts: dict[str, int]) -> float:
        name = model.lower()
        for key, price in self.entries:
            if key in name:
                rates: tuple[float, ...] = tuple(price)
                n = tuple(int(counts.get(kind, 0)) for kind in Price._fields)
                return sum(a * b for a, b in zip(n, rates, strict=True)) / 1e6
        return 0.0
