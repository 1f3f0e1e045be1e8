"""A session's tokens and cost by model, and what each event adds to the counters.

Two sources, never added together:
- live: the usage the hook read from the transcript since its last read (each message once),
  priced from the table: `estimated`;
- settled: Claude Code's own running totals (a `cost-state` line, read at SessionEnd), which
  replace the session's figures: `exact`. They cover subagents, compaction and side calls that
  the transcript does not show, and they carry over a resume, so each settlement replaces the
  previous one.
Counters only go up: a settlement adds what it finds beyond what was already counted. (Were the
table ever to overprice, the counters would keep the overshoot; the session's own figures, in
the query API, are exact all the same.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.pricing import PriceTable
from collector.vocabulary import TOKEN_TYPES

ESTIMATED, EXACT = "estimated", "exact"
COST_SOURCES = (EXACT, ESTIMATED)

Usage = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Increment:
    """What one event adds to agentwatch_tokens_total and agentwatch_cost_usd_total."""

    model: str
    tokens: dict[str, int]
    cost_usd: float
    cost_source: str


@dataclass
class SessionCost:
    """The session's figures: per model, token counts by type and "cost_usd"."""

    models: dict[str, dict[str, Any]]
    cost_source: str = ESTIMATED

    @classmethod
    def load(cls, models_json: dict[str, Any] | None, cost_source: str | None) -> SessionCost:
        return cls(dict(models_json or {}), cost_source or ESTIMATED)

    @property
    def tokens(self) -> int:
        return sum(int(m.get(k, 0)) for m in self.models.values() for k in TOKEN_TYPES)

    @property
    def cost_usd(self) -> float:
        return sum(float(m.get("cost_usd", 0.0)) for m in self.models.values())

    def usage(self) -> Usage:
        return {
            model: {k: int(m.get(k, 0)) for k in TOKEN_TYPES} for model, m in self.models.items()
        }

    def add_live(self, usage: Usage, prices: PriceTable) -> list[Increment]:
        out = []
        for model, counts in usage.items():
            cost = prices.cost_usd(model, counts)
            m = self.models.setdefault(model, {k: 0 for k in TOKEN_TYPES} | {"cost_usd": 0.0})
            for kind, n in counts.items():
                m[kind] = int(m.get(kind, 0)) + n
            m["cost_usd"] = float(m.get("cost_usd", 0.0)) + cost
            out.append(Increment(model, dict(counts), cost, ESTIMATED))
        if usage:
            self.cost_source = ESTIMATED
        return out

    def settle(self, cost_state: dict[str, Any]) -> list[Increment]:
        """Replace the figures with Claude Code's own totals; the growth goes to the counters."""
        out = []
        models: dict[str, dict[str, Any]] = cost_state["models"]
        for model, exact in models.items():
            before = self.models.get(model, {})
            growth = {k: max(int(exact.get(k, 0)) - int(before.get(k, 0)), 0) for k in TOKEN_TYPES}
            cost = max(float(exact["cost_usd"]) - float(before.get("cost_usd", 0.0)), 0.0)
            if any(growth.values()) or cost:
                out.append(Increment(model, growth, cost, EXACT))
        self.models = {model: dict(exact) for model, exact in models.items()}
        self.cost_source = EXACT
        return out
