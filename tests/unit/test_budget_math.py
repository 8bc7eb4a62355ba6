"""Budget arithmetic: config, periods, a request's worst case, fitting a cut under budgets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.budget import (
    UNKNOWN_MAX_OUTPUT,
    Budget,
    BudgetSettings,
    Line,
    WorstCase,
    fit,
    output_cap,
    parse_budgets,
    period_days,
    to_micro,
    worst_case,
)
from llmbatch.errors import ConfigError
from llmbatch.pricing import model_prices
from llmbatch.tokens import estimate_tokens

CHAT = "/v1/chat/completions"
NOW = datetime(2026, 11, 26, 15, tzinfo=UTC).timestamp()
DAY = date(2026, 11, 26)


def test_config_shape_and_the_flag() -> None:
    s = parse_budgets(
        {"daily_usd": 40, "monthly_usd": "500.50", "queues": {"reviews": {"daily_usd": 10}}}
    )
    assert s.budgets == (
        Budget(None, "day", Decimal(40)),
        Budget(None, "month", Decimal("500.50")),
        Budget("reviews", "day", Decimal(10)),
    )
    assert not s.allow_unpriced
    flagged = parse_budgets({"daily_usd": 40}, budget_usd="12.5", allow_unpriced=True)
    assert flagged.budgets == (Budget(None, "day", Decimal("12.5")),)  # the flag replaces it
    assert flagged.allow_unpriced
    assert not parse_budgets(None)  # no budgets: falsy, nothing is weighed


@pytest.mark.parametrize("value", [0, -1, "-0.01", "0.00", "abc", True, float("nan")])
def test_a_budget_of_zero_negative_or_not_a_number_is_a_clear_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"more than 0 USD|not an amount in USD"):
        parse_budgets({"daily_usd": value})
    with pytest.raises(ConfigError, match="--budget-usd"):
        parse_budgets(None, budget_usd=value)


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'weekly_usd'.*daily_usd, monthly_usd"):
        parse_budgets({"weekly_usd": 3})
    with pytest.raises(ConfigError, match=r"\[budgets.queues.q\] has no setting 'total'"):
        parse_budgets({"queues": {"q": {"total": 3}}})


def test_periods_are_utc_days_and_months() -> None:
    day = (DAY - date(1970, 1, 1)).days
    assert period_days(NOW, "day") == (day, day + 1)
    first, end = period_days(NOW, "month")
    assert date(1970, 1, 1).toordinal() + first == date(2026, 11, 1).toordinal()
    assert end - first == 30
    dec = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    first, end = period_days(dec, "month")
    assert end - first == 31 and date.fromordinal(date(1970, 1, 1).toordinal() + end) == date(
        2027, 1, 1
    )


def test_output_caps_of_every_endpoint() -> None:
    assert output_cap({"max_completion_tokens": 7, "max_tokens": 9}) == 7
    assert output_cap({"max_tokens": 9}) == 9
    assert output_cap({"max_output_tokens": 11}) == 11
    assert output_cap({"params": {"max_tokens": 5}}) == 5
    assert output_cap({"max_tokens": True}) is None
    assert output_cap({"messages": []}) is None


def _gp(model: str, provider: str, input_tokens: int, output_tokens: int) -> int:
    """An independent batch price from genai-prices itself, in micro-USD rounded up."""
    total = calc_price(
        Usage(input_tokens=input_tokens, output_tokens=output_tokens), model,
        provider_id=provider, genai_request_timestamp=datetime(2026, 11, 26, 12, tzinfo=UTC),
        price_context={"processing": "batch"},  # type: ignore[arg-type]
    ).total_price  # fmt: skip
    return int((Decimal(total) * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def test_worst_case_with_a_cap_is_its_batch_price() -> None:
    mp = model_prices("openai", "gpt-4o-mini", DAY)
    w = worst_case(mp, CHAT, {"max_tokens": 1000}, 3000, 128_000)
    assert (w.input_tokens, w.output_tokens, w.bound) == (estimate_tokens(3000), 1000, "request")
    assert w.micro == _gp("gpt-4o-mini", "openai", w.input_tokens, 1000)


def test_without_a_cap_the_context_window_bounds_output() -> None:
    mp = model_prices("openai", "gpt-4o-mini", DAY)
    w = worst_case(mp, CHAT, {}, 300, 128_000)
    assert w.bound == "context window" and w.output_tokens == 128_000 - estimate_tokens(300)
    assert w.micro == _gp("gpt-4o-mini", "openai", w.input_tokens, w.output_tokens)
    unknown = worst_case(mp, CHAT, {}, 300, None)
    assert unknown.bound == "unknown maximum" and unknown.output_tokens == UNKNOWN_MAX_OUTPUT


def test_worst_case_uses_the_tier_of_the_request() -> None:
    mp = model_prices("anthropic", "claude-sonnet-4-5", DAY)
    small = worst_case(mp, "/v1/messages", {"max_tokens": 100}, 3 * 100_000, 200_000)
    big = worst_case(mp, "/v1/messages", {"max_tokens": 100}, 3 * 250_000, 1_000_000)
    assert small.micro == _gp("claude-sonnet-4-5", "anthropic", small.input_tokens, 100)
    assert big.micro == _gp("claude-sonnet-4-5", "anthropic", big.input_tokens, 100)
    assert big.micro is not None and small.micro is not None
    assert big.micro / big.input_tokens > 1.5 * small.micro / small.input_tokens


def test_unpriced_has_no_worst_case_and_moderations_are_free() -> None:
    assert (
        worst_case(model_prices("openai", "no-such-model", DAY), CHAT, {}, 30, None).micro is None
    )
    mod = model_prices("openai", "omni-moderation-latest", DAY)
    assert worst_case(mod, "/v1/moderations", {}, 30, None).micro == 0


def test_reservations_round_up() -> None:
    assert to_micro(Decimal("0.0000001")) == 1
    assert to_micro(Decimal("1.000001")) == 1_000_001


def _line(rid: int, micro: int | None, queue: str = "q") -> Line:
    return Line(rid, queue, WorstCase(10, 10, micro, "request"))


def test_fit_takes_in_order_and_holds_the_rest_with_a_clear_reason() -> None:
    s = BudgetSettings((Budget(None, "day", Decimal("1.00")),))
    f = fit([_line(i, 300_000) for i in range(1, 6)], s, {("*", "day"): 50_000}, NOW, "m")
    assert f.ids == [1, 2, 3] and f.reserve == {"q": 900_000}
    ((reason, held),) = f.held.items()
    assert held == [4, 5]
    assert reason == (
        "budget 1.00 USD (all queues, 2026-11-26): 0.95 spent, next batch worst case 0.60; "
        "raise the budget to send it"
    )


def test_a_cheap_request_does_not_jump_a_refused_one() -> None:
    s = BudgetSettings((Budget(None, "day", Decimal("1")),))
    f = fit([_line(1, 900_000), _line(2, 200_000), _line(3, 1)], s, {}, NOW, "m")
    assert f.ids == [1] and [r for ids in f.held.values() for r in ids] == [2, 3]


def test_a_queue_budget_holds_only_its_queue() -> None:
    s = BudgetSettings((Budget("a", "month", Decimal("0.5")),))
    lines = [_line(1, 400_000, "a"), _line(2, 400_000, "a"), _line(3, 400_000, "b")]
    f = fit(lines, s, {}, NOW, "m")
    assert f.ids == [1, 3] and f.reserve == {"a": 400_000}
    ((reason, held),) = f.held.items()
    assert held == [2] and "(queue a, 2026-11)" in reason


def test_unpriced_is_held_unless_allowed() -> None:
    budgets = (Budget(None, "day", Decimal("5")),)
    f = fit([_line(1, None)], BudgetSettings(budgets), {}, NOW, "mystery")
    ((reason, held),) = f.held.items()
    assert held == [1] and "model mystery has no price" in reason and "allow_unpriced" in reason
    allowed = fit([_line(1, None)], BudgetSettings(budgets, allow_unpriced=True), {}, NOW, "m")
    assert allowed.ids == [1] and allowed.reserve == {"q": 0}


@given(
    costs=st.lists(st.integers(0, 2_000_000), max_size=40),
    queues=st.lists(st.sampled_from("ab"), min_size=40, max_size=40),
    limit=st.integers(1, 10_000_000),
    qlimit=st.integers(1, 10_000_000),
    spent=st.integers(0, 10_000_000),
)
def test_fit_never_passes_a_limit(
    costs: list[int], queues: list[str], limit: int, qlimit: int, spent: int
) -> None:
    s = BudgetSettings((
        Budget(None, "day", Decimal(limit) / 1_000_000),
        Budget("a", "day", Decimal(qlimit) / 1_000_000),
    ))  # fmt: skip
    lines = [_line(i, c, queues[i]) for i, c in enumerate(costs)]
    committed = {("*", "day"): min(spent, limit), ("a", "day"): min(spent, qlimit)}
    f = fit(lines, s, committed, NOW, "m")
    assert committed[("*", "day")] + sum(f.reserve.values()) <= limit
    assert committed[("a", "day")] + f.reserve.get("a", 0) <= qlimit
    held = sorted([r for ids in f.held.values() for r in ids])
    assert sorted(f.ids + held) == list(range(len(costs)))  # every line goes or waits
    assert sum(f.reserve.values()) == sum(costs[i] for i in f.ids)
