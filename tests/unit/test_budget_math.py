"""Budget arithmetic: config, periods, a request's worst case, fitting a cut under budgets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.budget import (
    Budget,
    BudgetSettings,
    Line,
    fit,
    parse_budgets,
    period_days,
    to_micro,
)
from llmbatch.errors import ConfigError
from llmbatch.in_force import as_rows, in_force
from llmbatch.store.budgets import BudgetRow, PolicyRow
from llmbatch.worst import WorstCase

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
    s = BudgetSettings(
        (
            Budget(None, "day", Decimal(limit) / 1_000_000),
            Budget("a", "day", Decimal(qlimit) / 1_000_000),
        )
    )
    lines = [_line(i, c, queues[i]) for i, c in enumerate(costs)]
    committed = {("*", "day"): min(spent, limit), ("a", "day"): min(spent, qlimit)}
    f = fit(lines, s, committed, NOW, "m")
    assert committed[("*", "day")] + sum(f.reserve.values()) <= limit
    assert committed[("a", "day")] + f.reserve.get("a", 0) <= qlimit
    held = sorted([r for ids in f.held.values() for r in ids])
    assert sorted(f.ids + held) == list(range(len(costs)))  # every line goes or waits
    assert sum(f.reserve.values()) == sum(costs[i] for i in f.ids)


def test_config_takes_assumed_context_per_queue() -> None:
    s = parse_budgets(
        {"assume_context_tokens": 8000, "queues": {"r": {"assume_context_tokens": 20000}}}
    )
    assert s.context_for("r") == 20000 and s.context_for("other") == 8000
    for bad in (0, -3, "many", 1.5, True):
        with pytest.raises(ConfigError, match="assume_context_tokens"):
            parse_budgets({"assume_context_tokens": bad})
    with pytest.raises(ConfigError, match="allow_unpriced must be true or false"):
        parse_budgets({"allow_unpriced": "yes"})


def _store(*rows: tuple[str, str, int]) -> list[BudgetRow]:
    return [BudgetRow(q, p, v) for q, p, v in rows]


def test_the_store_holds_and_a_worker_may_only_tighten_it() -> None:
    mine = parse_budgets({"daily_usd": 10, "queues": {"r": {"monthly_usd": 5}}})
    store = _store(("*", "day", 40_000_000), ("e", "day", 2_000_000))
    got, warn = in_force(store, [], mine)
    limits = {(b.key, b.period): b.limit_micro for b in got.budgets}
    assert limits == {("*", "day"): 10_000_000, ("e", "day"): 2_000_000, ("r", "month"): 5_000_000}
    assert len(warn) == 2
    assert "differs from the store's 40.00 USD: enforcing the tighter" in warn[0]
    assert "is not in the store: only this worker enforces it" in warn[1]
    looser, warn = in_force(_store(("*", "day", 1_000_000)), [], parse_budgets({"daily_usd": 3}))
    assert [b.limit_micro for b in looser.budgets] == [1_000_000]
    assert "the store's holds" in warn[0]
    same, warn = in_force(_store(("*", "day", 3_000_000)), [], parse_budgets({"daily_usd": 3}))
    assert warn == [] and [b.limit_micro for b in same.budgets] == [3_000_000]
    none, warn = in_force(store, [], BudgetSettings())  # a worker with none: the store's
    assert {(b.key, b.period) for b in none.budgets} == {("*", "day"), ("e", "day")} and not warn


def test_other_settings_follow_the_store_too() -> None:
    mine = parse_budgets({"allow_unpriced": True, "assume_context_tokens": 9000}, budget_usd=1)
    got, warn = in_force([], [], mine)
    assert not got.allow_unpriced and got.context_for("q") is None  # looser: refused
    assert len(warn) == 3  # the budget, unpriced models, the context
    policy = [PolicyRow("*", True, 5000)]
    got, warn = in_force([], policy, mine)
    assert got.allow_unpriced and got.context_for("q") == 9000  # a larger context is tighter
    assert "enforcing the larger" in warn[-1]
    got, _ = in_force([], [PolicyRow("*", None, 12000)], mine)
    assert got.context_for("q") == 12000
    rows, policies = as_rows(mine)
    assert [(r.queue, r.period, r.limit_micro) for r in rows] == [("*", "day", 1_000_000)]
    assert policies == [PolicyRow("*", True, 9000)]


LIMITS = st.integers(1, 10**9)


@given(
    store=st.dictionaries(st.sampled_from([("*", "day"), ("a", "day"), ("a", "month")]), LIMITS),
    mine=st.dictionaries(st.sampled_from([(None, "day"), ("a", "day"), ("b", "month")]), LIMITS),
)
def test_in_force_is_never_looser_than_the_store(
    store: dict[tuple[str, str], int], mine: dict[tuple[str | None, str], int]
) -> None:
    own = BudgetSettings(tuple(Budget(q, p, Decimal(v) / 1_000_000) for (q, p), v in mine.items()))
    got, _warn = in_force(_store(*((q, p, v) for (q, p), v in store.items())), [], own)
    limits = {(b.key, b.period): b.limit_micro for b in got.budgets}
    for key, v in store.items():
        assert limits[key] <= v  # the store's cap always holds
    for b in own.budgets:
        assert limits[(b.key, b.period)] <= b.limit_micro  # and the worker's own


def test_requests_that_cannot_be_bounded_wait_with_their_reason() -> None:
    s = BudgetSettings((Budget(None, "day", Decimal(5)),))
    ctx = Line(1, "q", WorstCase(10, 10, 5, "request", "previous_response_id brings ..."))
    hosted = Line(2, "q", WorstCase(10, 10, 7, "request", "hosted tool web_search ...", True))
    f = fit([ctx, hosted], s, {}, NOW, "gpt-4o")
    assert f.ids == [] and sorted(f.held) == [
        "gpt-4o: hosted tool web_search ...",
        "gpt-4o: previous_response_id brings ...",
    ]
    allowed = BudgetSettings(s.budgets, allow_unpriced=True)
    f = fit([ctx, hosted], allowed, {}, NOW, "gpt-4o")
    assert f.ids == [2] and f.reserve == {"q": 7}  # a hosted tool's tokens still count
