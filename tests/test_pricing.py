"""The price table: Claude Code's own prices for the models it uses, a file that overrides it,
and a clear error for a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.pricing import PricesError, PriceTable
from tests.test_collector_live import _run

MTOK = {"input": 1_000_000}


def test_default_models_of_claude_code_2_1_are_priced_as_it_prices_them() -> None:
    # Read off Claude Code 2.1.328's own total_cost_usd, one million tokens of each type.
    table = PriceTable()
    opus = "claude-opus-5-5"
    assert table.cost_usd(opus, MTOK) == 4.0
    assert table.cost_usd(opus, {"output": 1_000_000}) == 20.0
    assert table.cost_usd(opus, {"cache_read": 1_000_000}) == 0.2
    assert table.cost_usd(opus, {"cache_creation": 1_000_000}) == 5.0
    assert table.cost_usd("claude-sonnet-5-5", MTOK) == 2.0
    assert table.cost_usd("claude-haiku-5-5", {"output": 1_000_000}) == 0.5
    assert table.cost_usd("some-other-model", MTOK) == 0.0


def test_a_prices_file_is_tried_first(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"opus-5-5": {"input": 1, "output": 2, "cache_read": 0, "cache_creation": 0}}')
    table = PriceTable.from_file(path)
    assert table.cost_usd("claude-opus-5-5", {"input": 2_000_000, "output": 1_000_000}) == 4.0
    assert table.cost_usd("claude-sonnet-5-5", MTOK) == 2.0  # the rest of the table still holds


@pytest.mark.parametrize(
    "text",
    ['{"opus": {"input": 1}}', "[1, 2]", "not json", '{"opus": {"input": "x", "output": 1}}'],
)
def test_a_bad_prices_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(PricesError, match="AGENTWATCH_PRICES_FILE"):
        PriceTable.from_file(path)


def test_the_collector_refuses_to_start_on_a_bad_prices_file(tmp_path: Path) -> None:
    result = _run({"AGENTWATCH_PRICES_FILE": str(tmp_path / "missing.json")})
    assert result.returncode == 2
    assert "AGENTWATCH_PRICES_FILE" in result.stderr
