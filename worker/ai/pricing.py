"""Per-model token prices for cost estimates (USD per million tokens)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPrice:
    """List price of one model, USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


# List prices as published on the Anthropic models overview (November 2026). Estimates only: caching and
# batch discounts are not modelled. Dated snapshot ids share the alias's price.
PRICES: dict[str, ModelPrice] = {
    "claude-fable-5-1": ModelPrice(10.0, 50.0),
    "claude-opus-5-5": ModelPrice(4.0, 20.0),
    "claude-sonnet-5-5": ModelPrice(2.0, 10.0),
    "claude-haiku-5-5": ModelPrice(0.10, 0.50),
    "claude-opus-5": ModelPrice(5.0, 25.0),
    "claude-sonnet-5": ModelPrice(2.0, 10.0),
    "claude-opus-4-8": ModelPrice(5.0, 25.0),
    "claude-opus-4-7": ModelPrice(5.0, 25.0),
    "claude-opus-4-6": ModelPrice(5.0, 25.0),
    "claude-opus-4-5": ModelPrice(5.0, 25.0),
    "claude-sonnet-4-6": ModelPrice(3.0, 15.0),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0),
    "mock": ModelPrice(0.0, 0.0),
}

# An unknown model is priced like the most expensive one, so a cost ceiling errs on the safe side.
FALLBACK_PRICE = ModelPrice(10.0, 50.0)


def price_for(model: str) -> ModelPrice:
    """The price of a model, matching dated snapshot ids (claude-haiku-4-5-20251001) to their alias."""
    if model in PRICES:
        return PRICES[model]
    for alias in sorted(PRICES, key=len, reverse=True):
        if model.startswith(alias + "-"):
            return PRICES[alias]
    return FALLBACK_PRICE


def estimate_cost_usd(model: str, tokens_prompt: int, tokens_output: int) -> float:
    """Estimated USD cost of one call."""
    price = price_for(model)
    return (tokens_prompt * price.input_per_mtok + tokens_output * price.output_per_mtok) / 1_000_000
