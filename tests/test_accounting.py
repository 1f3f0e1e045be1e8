"""A session's tokens and cost from three sources, never counted twice (collector/accounting.py)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.accounting import ESTIMATED, EXACT, Increment, SessionCost
from collector.pricing import PriceTable

OPUS, HAIKU = "claude-opus-5-5", "claude-haiku-5-5"
PRICES = PriceTable()


def tokens(inp: int, out: int = 0) -> dict[str, int]:
    return {"input": inp, "output": out, "cache_read": 0, "cache_creation": 0}


def counted(increments: list[Increment]) -> tuple[int, float]:
    return sum(sum(i.tokens.values()) for i in increments), sum(i.cost_usd for i in increments)


def state(models: dict[str, tuple[int, int, float]]) -> dict[str, Any]:
    return {
        "total_cost_usd": sum(c for _, _, c in models.values()),
        "models": {m: {**tokens(i, o), "cost_usd": c} for m, (i, o, c) in models.items()},
    }


def test_transcript_then_native_counts_the_larger_once() -> None:
    cost = SessionCost()
    first = cost.add_transcript({OPUS: tokens(1000, 100)}, PRICES)  # Stop reads it first
    assert counted(first) == (1100, pytest.approx(1000 * 4e-6 + 100 * 20e-6))
    assert cost.cost_source == ESTIMATED
    # The same request's api_request arrives: nothing new, but the figure is now Claude Code's.
    again = cost.add_native({OPUS: tokens(1000, 100)}, 0.006, "u1")
    assert counted(again) == (0, 0.0) and cost.cost_source == EXACT
    assert cost.usage() == {OPUS: tokens(1000, 100)} and cost.user == "u1"
    # A side call only native sees (a title): added, exact.
    side = cost.add_native({HAIKU: tokens(300, 10)}, 0.0002, "u1")
    assert [(i.model, i.cost_source) for i in side] == [(HAIKU, EXACT)]
    assert cost.tokens == 1100 + 310 and cost.cost_usd == pytest.approx(0.0062)


def test_native_first_then_the_transcript_adds_nothing() -> None:
    cost = SessionCost()
    cost.add_native({OPUS: tokens(2000, 50)}, 0.009, None)
    assert counted(cost.add_transcript({OPUS: tokens(2000, 50)}, PRICES)) == (0, 0.0)
    assert cost.cost_usd == pytest.approx(0.009) and cost.cost_source == EXACT


def test_settlement_is_the_truth_and_a_resume_grows_from_it() -> None:
    cost = SessionCost()
    cost.add_transcript({OPUS: tokens(1000, 100)}, PRICES)
    # Claude Code's totals hold more (compaction, side calls): the growth is counted, exact.
    growth = cost.settle(state({OPUS: (1500, 120, 0.01)}))
    assert counted(growth) == (520, pytest.approx(0.01 - 0.006))
    assert {i.cost_source for i in growth} == {EXACT}
    assert cost.usage() == {OPUS: tokens(1500, 120)} and cost.cost_usd == pytest.approx(0.01)
    # --resume: the transcript grows again; figures are the settlement plus that growth.
    cost.add_transcript({OPUS: tokens(500, 10)}, PRICES)
    assert cost.usage() == {OPUS: tokens(2000, 130)} and cost.cost_source == ESTIMATED
    # ... and its next SessionEnd carries Claude Code's new running totals.
    cost.settle(state({OPUS: (2100, 140, 0.013)}))
    assert cost.usage() == {OPUS: tokens(2100, 140)} and cost.cost_source == EXACT


def test_a_lower_settlement_shows_exact_figures_and_never_lowers_a_counter() -> None:
    cost = SessionCost()
    cost.add_transcript({OPUS: tokens(1000, 100)}, PRICES)
    assert counted(cost.settle(state({OPUS: (900, 100, 0.005)}))) == (0, 0.0)
    assert cost.usage() == {OPUS: tokens(900, 100)}


def test_state_survives_a_round_trip() -> None:
    cost = SessionCost()
    cost.add_transcript({OPUS: tokens(10)}, PRICES)
    cost.add_native({HAIKU: tokens(5)}, 0.1, "u9")
    again = SessionCost.load(cost.dump())
    assert again.usage() == cost.usage() and again.user == "u9"
    assert counted(again.add_transcript({OPUS: tokens(10)}, PRICES)) == (10, pytest.approx(4e-5))
