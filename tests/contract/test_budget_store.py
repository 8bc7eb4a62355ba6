"""Budget verbs of the Store protocol, on every store: reserve with the intent, settle, hold."""

from __future__ import annotations

import threading

import pytest

from llmbatch.budget import period_days
from llmbatch.importer import enqueue_requests
from llmbatch.providers.base import BatchStatus, BatchUsage
from llmbatch.requests import make_request
from llmbatch.store import Store, open_store
from llmbatch.store.budgets import BudgetRow, Check, OverBudget, PolicyRow, Reservation
from llmbatch.store.ledger import TallyRow

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GROUP = ("openai", "/v1/chat/completions", "gpt-4o-mini")
NOW = 1_795_000_000.0  # 2026-11-18, mid-month
LEASE = 10.0**9  # the fence checks a lease against the real clock: held long past NOW


def _ids(store: Store, queue: str, n: int, start: int = 0) -> list[int]:
    enqueue_requests(store, (make_request(f"{queue}{i}", BODY) for i in range(start, start + n)),
                     queue=queue)  # fmt: skip
    return [
        d["id"] for i in range(start, start + n) for d in store.request_detail(f"{queue}{i}", queue)
    ]


def _reservation(per_queue: dict[str, int], limit: int, queue: str = "*") -> Reservation:
    first, end = period_days(NOW, "day")
    return Reservation(first, per_queue, [Check(queue, "day", limit, first, end)])


def test_a_reservation_commits_with_its_intent_and_settles_to_the_actual_cost(
    store: Store,
) -> None:
    token = store.acquire_lease("engine", "me", LEASE, NOW)
    assert token is not None
    a, b = _ids(store, "a", 2), _ids(store, "b", 1)
    first, end = period_days(NOW, "day")
    assert store.set_budget("*", "day", 1000, NOW) is None
    batch = store.create_intent(
        GROUP, a + b, 1, 1, NOW, token, Reservation(first, {"a": 300, "b": 200})
    )
    assert batch is not None
    assert (store.committed("*", first, end), store.committed("a", first, end)) == (500, 300)
    assert store.committed("*", first - 1, first) == 0  # another day saw nothing
    # the next one does not fit: nothing of it is committed, its requests stay queued
    with pytest.raises(OverBudget):
        store.create_intent(
            GROUP, _ids(store, "c", 1), 1, 1, NOW, token, Reservation(first, {"c": 501})
        )
    assert {c.queue: c.state for c in store.counts("c")} == {"c": "queued"}
    assert store.committed("*", first, end) == 500
    assert store.batch_usage(batch) == []  # no results yet, but it reserved
    store.settle(batch, {"a": 40}, NOW, token)
    store.settle(batch, {"a": 40}, NOW, token)  # settling again changes nothing
    assert (store.committed("*", first, end), store.committed("b", first, end)) == (40, 0)
    (row,) = store.budget_overview(NOW)
    assert (row.queue, row.period, row.limit_micro, row.committed) == ("*", "day", 1000, 40)


def test_hold_and_release(store: Store) -> None:
    token = store.acquire_lease("engine", "me", LEASE, NOW)
    assert token is not None
    ids = _ids(store, "q", 3)
    assert store.hold(ids[:2], "budget 1.00 USD: reasons", NOW, token) == 2
    assert store.held_count("q") == 2 and store.held_count("other") == 0
    assert store.held_reasons() == [("budget 1.00 USD: reasons", 2)]
    assert [rid for rid, *_ in store.candidates(*GROUP)] == ids[2:]  # held is not packed
    (detail,) = store.request_detail("q0", "q")
    assert (detail["state"], detail["reason"]) == ("held", "budget 1.00 USD: reasons")
    assert store.release_held(NOW, token) == 2
    assert store.held_count() == 0 and store.held_reasons() == []
    assert [rid for rid, *_ in store.candidates(*GROUP)] == ids


def test_racing_reservations_cannot_both_pass(db: str) -> None:
    """Four connections reserve 60 % of one budget at the same instant: exactly one wins
    (SQLite: BEGIN IMMEDIATE serialises; PostgreSQL: the budget row is locked)."""
    setup = open_store(db)
    token = setup.acquire_lease("engine", "me", LEASE, NOW)
    assert token is not None
    groups = [_ids(setup, f"q{k}", 2) for k in range(4)]
    gate = threading.Barrier(4)
    outcomes: list[str] = []

    def reserve(k: int) -> None:
        store = open_store(db)
        try:
            gate.wait()
            store.create_intent(GROUP, groups[k], 1, 1, NOW, token,
                                _reservation({f"q{k}": 600}, 1000))  # fmt: skip
            outcomes.append("won")
        except OverBudget:
            outcomes.append("refused")
        finally:
            store.close()

    threads = [threading.Thread(target=reserve, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    first, end = period_days(NOW, "day")
    assert setup.committed("*", first, end) == 600
    setup.close()


def test_reservations_count_in_their_own_period(store: Store) -> None:
    token = store.acquire_lease("engine", "me", LEASE, NOW)
    assert token is not None
    yesterday = NOW - 86400
    first, _ = period_days(yesterday, "day")
    store.create_intent(GROUP, _ids(store, "q", 1), 1, 1, yesterday, token,
                        Reservation(first, {"q": 900}, []))  # fmt: skip
    today, end = period_days(NOW, "day")
    month, month_end = period_days(NOW, "month")
    assert store.committed("q", today, end) == 0
    assert store.committed("q", month, month_end) == 900


def test_the_store_budget_holds_whatever_a_worker_brings(store: Store) -> None:
    """A worker with no budget of its own, or a looser one, cannot pass the store's cap; a
    tighter one of its own holds for it."""
    token = store.acquire_lease("engine", "me", LEASE, NOW)
    assert token is not None
    first, end = period_days(NOW, "day")
    store.set_budget("q", "day", 1000, NOW)
    store.create_intent(
        GROUP, _ids(store, "q", 1), 1, 1, NOW, token, Reservation(first, {"q": 700})
    )
    with pytest.raises(OverBudget):  # no budget of its own: the store's still holds
        store.create_intent(
            GROUP, _ids(store, "q", 1, 1), 1, 1, NOW, token, Reservation(first, {"q": 301})
        )
    with pytest.raises(OverBudget):  # a looser one of its own cannot loosen the store's
        store.create_intent(
            GROUP, _ids(store, "q", 1, 2), 1, 1, NOW, token, _reservation({"q": 301}, 5000, "q")
        )
    with pytest.raises(OverBudget):  # a tighter one of its own holds for this worker
        store.create_intent(
            GROUP, _ids(store, "q", 1, 3), 1, 1, NOW, token, _reservation({"q": 200}, 800, "q")
        )
    store.create_intent(
        GROUP, _ids(store, "q", 1, 4), 1, 1, NOW, token, Reservation(first, {"q": 300})
    )
    assert store.committed("q", first, end) == 1000
    # another queue's budget does not apply; the all-queues one does
    store.set_budget("*", "day", 1200, NOW)
    with pytest.raises(OverBudget):
        store.create_intent(
            GROUP, _ids(store, "o", 1), 1, 1, NOW, token, Reservation(first, {"o": 201})
        )
    store.create_intent(
        GROUP, _ids(store, "o", 1, 1), 1, 1, NOW, token, Reservation(first, {"o": 200})
    )


def test_budgets_in_the_store_are_set_listed_cleared_and_seeded_once(store: Store) -> None:
    assert store.stored_budgets() == ([], [])
    _ids(store, "reviews", 1)
    mine = [BudgetRow("*", "day", 5_000_000), BudgetRow("reviews", "month", 9_000_000)]
    policy = [PolicyRow("*", True, 8000)]
    assert store.seed_budgets(mine, policy, NOW)  # first use: the store had none
    assert not store.seed_budgets([BudgetRow("*", "day", 1)], [], NOW)  # never twice
    rows, policies = store.stored_budgets()
    assert [(r.queue, r.period, r.limit_micro) for r in rows] == [
        ("*", "day", 5_000_000),
        ("reviews", "month", 9_000_000),
    ]
    assert [(p.queue, p.allow_unpriced, p.assume_context_tokens) for p in policies] == [
        ("*", True, 8000)
    ]
    assert store.set_budget("*", "day", 4_000_000, NOW) == 5_000_000
    p = store.set_policy("reviews", NOW, assume_context_tokens=20000)
    assert (p.allow_unpriced, p.assume_context_tokens) == (None, 20000)
    p = store.set_policy("*", NOW, allow_unpriced=False)
    assert (p.allow_unpriced, p.assume_context_tokens) == (False, 8000)  # the rest kept
    assert store.clear_budgets("reviews", "day") == 0  # nothing of that period
    assert store.clear_budgets("reviews", "month") == 1
    assert store.clear_budgets("reviews") == 1  # its settings
    assert store.clear_budgets("*") == 2
    assert store.stored_budgets() == ([], [])
    assert store.seed_budgets(mine, [], NOW)  # empty again: the next worker may seed


def test_the_ledger_records_tallies_provider_totals_and_checks_them(store: Store) -> None:
    token = store.acquire_lease("engine", "me", LEASE, NOW)
    assert token is not None
    first, _end = period_days(NOW, "day")
    store.set_budget("*", "day", 10_000, NOW)
    intent = store.create_intent(
        GROUP, _ids(store, "q", 2), 1, 1, NOW, token, Reservation(first, {"q": 900})
    )
    assert intent is not None
    store.record_submitted(intent, "batch_a", "file_a", NOW, token)
    store.record_provider_usage(intent, BatchUsage(120, 0, 40, 0), NOW, token)
    check = store.record_tally(
        intent, [TallyRow("gpt-4o-mini", 0, 2, 0, 120, 0, 0, 0, 40)], NOW, token
    )
    assert check is not None and not check.differs
    assert store.batch_tally(intent)[0].input == 120
    assert store.usage_checks(ingested=False) == []  # they agree: nothing to show
    store.record_provider_usage(intent, BatchUsage(150, 0, 40, 0), NOW, token)
    check = store.record_tally(
        intent, [TallyRow("gpt-4o-mini", 0, 2, 0, 120, 0, 0, 0, 40)], NOW, token
    )
    assert check is not None and check.differs and check.difference() == "input +30"
    (shown,) = store.usage_checks(ingested=False)
    assert (shown.says, shown.counted) == ((150, 0, 40, 0), (120, 0, 40, 0))
    assert store.usage_checks() == []  # not ingested yet
    events = [e for e in store.recent_events(5) if e["kind"] == "usage_mismatch"]
    assert "provider says 150 input" in events[0]["detail"]
    # a duplicate found later is charged the intent's worst case at once, to today
    dup = store.adopt_batch(
        "openai",
        BatchStatus("batch_b", "in_progress", "in_progress", 2),
        intent,
        NOW + 86400,
        token,
    )
    assert dup is not None
    (row,) = store.batch_spend(dup)
    assert (row.kind, row.reserved, row.worst, row.day) == ("duplicate", 900, 900, first + 1)
    assert [r.batch_id for r in store.unplanned_spend(first, first + 2)] == [dup]
    store.settle(dup, {"q": 300}, NOW, token, {"q": 1}, "genai-prices 9")
    (row,) = store.batch_spend(dup)
    assert (row.reserved, row.spent, row.unpriced, row.prices) == (0, 300, 1, "genai-prices 9")
    found = store.find_batch("batch_a")
    assert found is not None and found["id"] == intent and found["duplicates"] == [(dup, "batch_b")]
    assert store.find_batch(str(dup))["intent_id"] == intent  # type: ignore[index]
    assert store.find_batch("nope") is None
    assert store.spend_queues(dup) == {"q": 900}


def test_two_first_workers_at_once_one_writes_its_budgets(db: str) -> None:
    """Four workers reach an empty store at the same instant, each with its own budget:
    exactly one writes its own, and the store holds that one (the others then tighten it
    for themselves, never loosen it)."""
    gate = threading.Barrier(4)
    wrote: list[int] = []
    open_store(db).close()

    def seed(k: int) -> None:
        store = open_store(db)
        try:
            gate.wait()
            if store.seed_budgets([BudgetRow("*", "day", 1000 + k)], [], NOW):
                wrote.append(k)
        finally:
            store.close()

    threads = [threading.Thread(target=seed, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    (k,) = wrote
    check = open_store(db)
    rows, _policies = check.stored_budgets()
    assert [(r.queue, r.period, r.limit_micro) for r in rows] == [("*", "day", 1000 + k)]
    check.close()
