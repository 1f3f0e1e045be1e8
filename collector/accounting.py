"""A session's tokens and cost by model, and what each event adds to the counters.

Three sources, never added together:
- transcript: the usage the hook read from the transcript since its last read (each message
  once), priced from the table: estimated;
- native: Claude Code's own `api_request` events (OpenTelemetry), each with its exact tokens
  and `cost_usd`, live as the session runs;
- settled: Claude Code's own running totals (a `cost-state` line, read at SessionEnd): exact,
  and complete (subagents, compaction and side calls included). They carry over a resume.
Per model and token type, the live figure is the larger of transcript and native (the two
count the same requests; native also sees side calls, the transcript is read sooner). Once
settled, the figure is the settlement plus whatever the live sources grew by after it (a
resumed session). So a session never counts the same tokens twice, and its figures agree with
Claude Code's own total when it ends.

Counters only go up: each change adds its growth beyond what was already counted, labelled
exact when the model's figure is Claude Code's own. (Were the table ever to overprice, the
counters would keep the overshoot; the session's own figures, in the query API, are exact.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.pricing import PriceTable
from collector.vocabulary import TOKEN_TYPES

ESTIMATED, EXACT = "estimated", "exact"
COST_SOURCES = (EXACT, ESTIMATED)
COST = "cost_usd"

Usage = dict[str, dict[str, int]]
Figures = dict[str, float]  # token counts by type, and "cost_usd"


@dataclass(frozen=True, slots=True)
class Increment:
    """What one event adds to agentwatch_tokens_total and agentwatch_cost_usd_total."""

    model: str
    tokens: dict[str, int]
    cost_usd: float
    cost_source: str


def _zero() -> Figures:
    return {k: 0 for k in TOKEN_TYPES} | {COST: 0.0}


@dataclass
class _Model:
    transcript: Figures = field(default_factory=_zero)
    native: Figures = field(default_factory=_zero)
    settled: Figures | None = None
    at_settlement: Figures = field(default_factory=_zero)  # the live figures when it settled
    counted: Figures = field(default_factory=_zero)  # what the counters hold

    def live(self) -> Figures:
        return {k: max(self.transcript[k], self.native[k]) for k in (*TOKEN_TYPES, COST)}

    def figures(self) -> Figures:
        live = self.live()
        if self.settled is None:
            return live
        return {
            k: self.settled[k] + max(live[k] - self.at_settlement[k], 0)
            for k in (*TOKEN_TYPES, COST)
        }

    @property
    def exact(self) -> bool:
        """Claude Code's own figure: settled with nothing since, or native covering all."""
        if self.settled is not None:
            return self.live() == self.at_settlement
        return all(self.native[k] >= self.transcript[k] for k in TOKEN_TYPES)


@dataclass
class SessionCost:
    """A session's sources of tokens and cost, per model (kept in sessions.models as JSON)."""

    models: dict[str, _Model] = field(default_factory=dict)
    user: str | None = None  # the user Claude Code's own events name, once one did

    @classmethod
    def load(cls, state: dict[str, Any] | None) -> SessionCost:
        state = state or {}
        models = {
            name: _Model(
                transcript=m["transcript"],
                native=m["native"],
                settled=m.get("settled"),
                at_settlement=m["at_settlement"],
                counted=m["counted"],
            )
            for name, m in state.get("models", {}).items()
        }
        return cls(models, state.get("user"))

    def dump(self) -> dict[str, Any]:
        models = {
            name: {
                "transcript": m.transcript,
                "native": m.native,
                "settled": m.settled,
                "at_settlement": m.at_settlement,
                "counted": m.counted,
            }
            for name, m in self.models.items()
        }
        return {"models": models, "user": self.user}

    # -- what the query API shows ----------------------------------------------------------
    def usage(self) -> Usage:
        return {
            name: {k: int(f[k]) for k in TOKEN_TYPES}
            for name, f in ((n, m.figures()) for n, m in self.models.items())
        }

    def cost_by_model(self) -> dict[str, float]:
        return {name: m.figures()[COST] for name, m in self.models.items()}

    @property
    def tokens(self) -> int:
        return sum(sum(counts.values()) for counts in self.usage().values())

    @property
    def cost_usd(self) -> float:
        return sum(self.cost_by_model().values())

    @property
    def cost_source(self) -> str:
        return EXACT if self.models and all(m.exact for m in self.models.values()) else ESTIMATED

    # -- what events bring -----------------------------------------------------------------
    def add_transcript(self, usage: Usage, prices: PriceTable) -> list[Increment]:
        for name, counts in usage.items():
            t = self._model(name).transcript
            for kind, n in counts.items():
                t[kind] += n
            t[COST] += prices.cost_usd(name, counts)
        return self._recount(usage)

    def add_native(self, usage: Usage, cost_usd: float | None, user: str | None) -> list[Increment]:
        """One api_request: its tokens (one model) and Claude Code's own cost for them."""
        self.user = user or self.user
        for name, counts in usage.items():
            n = self._model(name).native
            for kind, count in counts.items():
                n[kind] += count
            n[COST] += cost_usd or 0.0
        return self._recount(usage)

    def settle(self, cost_state: dict[str, Any]) -> list[Increment]:
        """Claude Code's own running totals for the session (its cost-state)."""
        exact: dict[str, dict[str, Any]] = cost_state["models"]
        for name, figures in exact.items():
            m = self._model(name)
            m.settled = {k: float(figures.get(k, 0)) for k in (*TOKEN_TYPES, COST)}
            m.at_settlement = m.live()
        for name, m in self.models.items():  # a model its totals do not name: none of it
            if name not in exact:
                m.settled, m.at_settlement = _zero(), m.live()
        return self._recount(self.models)

    def _model(self, name: str) -> _Model:
        model = self.models.get(name)
        if model is None:
            model = self.models[name] = _Model()
        return model

    def _recount(self, names: Any) -> list[Increment]:
        out = []
        for name in names:
            m = self.models[name]
            now = m.figures()
            growth = {k: max(int(now[k] - m.counted[k]), 0) for k in TOKEN_TYPES}
            cost = max(now[COST] - m.counted[COST], 0.0)
            m.counted = {k: max(now[k], m.counted[k]) for k in (*TOKEN_TYPES, COST)}
            if any(growth.values()) or cost:
                out.append(Increment(name, growth, cost, EXACT if m.exact else ESTIMATED))
        return out
