"""Prices: batch variants found in the data (else derived at 50 %), tiers, unpriced, Decimal."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from llmbatch.pricing import (
    MICRO,
    Tokens,
    cost,
    model_prices,
    price_group,
    prices_version,
)

DAY = date(2026, 12, 1)
AT = datetime(2026, 12, 1, 12, tzinfo=UTC)


def gp(model: str, provider: str, *, batch: bool, **usage: int) -> Decimal:
    ctx = {"processing": "batch"} if batch else None
    calc = calc_price(
        Usage(**usage),
        model,
        provider_id=provider,
        genai_request_timestamp=AT,
        price_context=ctx,  # type: ignore[arg-type]
    )
    return Decimal(calc.total_price)


def test_a_model_with_a_batch_entry_uses_it() -> None:
    mp = model_prices("openai", "gpt-4o-mini", DAY)
    assert not mp.derived
    t = Tokens(input=1_000_000, output=1_000_000)
    assert mp.cost(t, batch=True) == gp(
        "gpt-4o-mini", "openai", batch=True, input_tokens=10**6, output_tokens=10**6
    )
    assert mp.cost(t, batch=True) < mp.cost(t, batch=False)  # type: ignore[operator]


def test_a_model_without_a_batch_entry_is_derived_at_half_price() -> None:
    # genai-prices answers the real-time price for a batch context here: we must not trust it
    real = gp("text-embedding-3-small", "openai", batch=False, input_tokens=10**6)
    assert gp("text-embedding-3-small", "openai", batch=True, input_tokens=10**6) == real
    mp = model_prices("openai", "text-embedding-3-small", DAY)
    assert mp.derived
    assert mp.cost(Tokens(input=10**6), batch=True) == real / 2
    assert mp.cost(Tokens(input=10**6), batch=False) == real


def test_a_batch_entry_not_yet_in_force_is_not_used() -> None:
    # claude-sonnet-4-5's batch variant starts on 2026-10-14 in this price data
    assert model_prices("anthropic", "claude-sonnet-4-5", date(2026, 1, 1)).derived
    assert not model_prices("anthropic", "claude-sonnet-4-5", DAY).derived


def test_unknown_model_is_unpriced_never_zero() -> None:
    mp = model_prices("openai", "no-such-model-xyz", DAY)
    assert not mp.priced
    assert mp.cost(Tokens(input=5, output=5), batch=True) is None
    assert cost("openai", "no-such-model-xyz", 5, 5, batch=False) is None
    c = price_group("openai", "no-such-model-xyz", Tokens(input=5), 0, DAY)
    assert c.batch is None and c.real is None and c.savings is None


def test_moderations_are_free() -> None:
    c = price_group(
        "openai", "omni-moderation-latest", Tokens(input=1000), 0, DAY, "/v1/moderations"
    )
    assert c.batch == 0 and c.real == 0


def test_tiers_come_from_each_requests_own_input() -> None:
    mp = model_prices("anthropic", "claude-sonnet-4-5", DAY)
    assert mp.thresholds == (200_000,)
    assert (mp.tier(150_000), mp.tier(200_000), mp.tier(200_001)) == (0, 0, 1)
    two_small = mp.cost(Tokens(input=300_000), mp.tier(150_000), batch=False)
    one_big = mp.cost(Tokens(input=300_000), mp.tier(300_000), batch=False)
    assert two_small is not None and one_big is not None
    assert two_small * 2 == one_big  # $3 vs $6 per million input tokens


def test_cache_reads_and_writes_are_priced_apart() -> None:
    mp = model_prices("anthropic", "claude-sonnet-4-5", DAY)
    plain = mp.cost(Tokens(input=10**6), batch=False)
    read = mp.cost(Tokens(input=10**6, cached=10**6), batch=False)
    w5 = mp.cost(Tokens(input=10**6, write_5m=10**6), batch=False)
    w1 = mp.cost(Tokens(input=10**6, write_1h=10**6), batch=False)
    assert (plain, read, w5, w1) == (Decimal(3), Decimal("0.3"), Decimal("3.75"), Decimal(6))


def test_figures_are_decimal_at_a_millionth_and_the_version_is_known() -> None:
    c = cost("openai", "gpt-4o-mini", 7, 3, batch=True)
    assert isinstance(c, Decimal) and c == c.quantize(MICRO)
    assert c.as_tuple().exponent == -6
    assert genai_prices.__version__ in prices_version()


MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-5.4"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(MODELS),
    st.lists(st.tuples(st.integers(0, 600_000), st.integers(0, 50_000)), min_size=1, max_size=6),
    st.booleans(),
)
def test_aggregates_per_tier_equal_the_sum_of_single_requests(
    pm: tuple[str, str], reqs: list[tuple[int, int]], batch: bool
) -> None:
    provider, model = pm
    mp = model_prices(provider, model, DAY)
    by_tier: dict[int, Tokens] = {}
    for i, o in reqs:
        k = mp.tier(i)
        by_tier[k] = by_tier.get(k, Tokens()) + Tokens(input=i, output=o)
    total = sum((mp.cost(t, k, batch=batch) or Decimal(0) for k, t in by_tier.items()), Decimal(0))
    expected = sum(
        (gp(model, provider, batch=batch, input_tokens=i, output_tokens=o) for i, o in reqs),
        Decimal(0),
    )
    assert abs(total - expected) <= MICRO * len(by_tier)
