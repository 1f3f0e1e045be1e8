"""Estimated cost of tokens, from a documented price table (USD per million tokens).

These are list prices for the Anthropic API as published for each model family; they are an
estimate (no discounts, batch pricing or long-context premiums). Cache writes are priced at the
5-minute rate (1.25 x input) and cache reads at 0.1 x input. Unknown models cost 0 and are
still counted in agentwatch_tokens_total. Update the table when prices change.
"""

from __future__ import annotations

# (model-name substring, input, output) in USD per million tokens; first match wins.
PRICES: list[tuple[str, float, float]] = [
    ("opus-4-5", 5.0, 25.0),
    ("opus-4-6", 5.0, 25.0),
    ("opus-4-7", 5.0, 25.0),
    ("opus", 15.0, 75.0),
    ("sonnet", 3.0, 15.0),
    ("haiku-4", 1.0, 5.0),
    ("haiku-3-5", 0.8, 4.0),
    ("3-5-haiku", 0.8, 4.0),
    ("haiku", 0.25, 1.25),
]
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1


def cost_usd(model: str, counts: dict[str, int]) -> float:
    """Estimated USD for one model's token counts (keys input, output, cache_read, cache_creation)."""
    name = model.lower()
    for key, price_in, price_out in PRICES:
        if key in name:
            per_token_in = price_in / 1e6
            return (
                counts.get("input", 0) * per_token_in
                + counts.get("output", 0) * price_out / 1e6
                + counts.get("cache_creation", 0) * per_token_in * CACHE_WRITE_FACTOR
                + counts.get("cache_read", 0) * per_token_in * CACHE_READ_FACTOR
            )
    return 0.0
