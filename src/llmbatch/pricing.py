"""Prices from `genai-prices` (offline): what usage costs in batch and in real time.

A model with no price is *unpriced* (None), never $0.
"""

from __future__ import annotations

from decimal import Decimal

from genai_prices import Usage, calc_price

BATCH = {"processing": "batch"}


def cost(
    provider: str, model: str, input_tokens: int, output_tokens: int, *, batch: bool
) -> Decimal | None:
    """The price of this usage, or None when genai-prices does not know the model."""
    try:
        calc = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=model,
            provider_id="openai" if provider == "azure" else provider,
            price_context=BATCH if batch else None,
        )
    except LookupError:
        return None
    return Decimal(calc.total_price)
