"""Budget verbs of the Store protocol, on every store: reserve with the intent, settle, hold."""

from __future__ import annotations

import threading

import pytest

from llmbatch.budget import period_days
from llmbatch.importer import enqueue_requests
from llmbatch.requests import make_request
from llmbatch.store import Store, open_store
from llmbatch.store.budgets import Check, OverBudget, Reservation

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
    batch = store.create_intent(
        GROUP, a + b, 1, 1, NOW, token, _reservation({"a": 300, "b": 200}, 1000)
    )
    assert batch is not None
    assert (store.committed("*", first, end), store.committed("a", first, end)) == (500, 300)
    assert store.committed("*", first - 1, first) == 0  # another day saw nothing
    # the next one does not fit: nothing of it is committed, its requests stay queued
    with pytest.raises(OverBudget):
        store.create_intent(GROUP, _ids(store, "c", 1), 1, 1, NOW, token,
                            _reservation({"c": 501}, 1000))  # fmt: skip
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
