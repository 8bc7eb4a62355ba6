"""The budgets a worker enforces: the store's, tightened — never loosened — by its own.

The store is the only source of budgets (budget.py). A worker's `--budget-usd` or `[budgets]`
is written to a store that has none, the first time it runs (so every worker enforces it);
after that, where it differs from the store's, the worker warns once and enforces the
tighter of the two: a lower cap, a larger assumed context, unpriced models held. Each tick
reads the store's budgets afresh, so `llmbatch budget set` reaches running workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from llmbatch.budget import ALL_QUEUES, Budget, BudgetSettings, usd
from llmbatch.pricing import MICRO
from llmbatch.store.budgets import BudgetRow, PolicyRow

if TYPE_CHECKING:
    from llmbatch.store.base import Store


def as_rows(settings: BudgetSettings) -> tuple[list[BudgetRow], list[PolicyRow]]:
    """A worker's own budgets as the store keeps them (for `budget apply` and first use)."""
    rows = [BudgetRow(b.key, b.period, b.limit_micro) for b in settings.budgets]
    queues = set(settings.assume_context) | ({ALL_QUEUES} if settings.allow_unpriced else set())
    policies = [
        PolicyRow(
            q,
            True if q == ALL_QUEUES and settings.allow_unpriced else None,
            settings.assume_context.get(q),
        )
        for q in sorted(queues)
    ]
    return rows, policies


def _who(key: tuple[str, str]) -> str:
    queue, period = key
    return f"per {period} for {'all queues' if queue == ALL_QUEUES else 'queue ' + queue}"


def in_force(
    rows: Sequence[BudgetRow], policies: Sequence[PolicyRow], mine: BudgetSettings
) -> tuple[BudgetSettings, list[str]]:
    """The budgets a worker enforces: the store's, tightened — never loosened — by its own;
    and a warning for each of its own that differs from the store."""
    store = {(r.queue, r.period): r.limit_micro for r in rows}
    own = {(b.key, b.period): b.limit_micro for b in mine.budgets}
    limits: dict[tuple[str, str], int] = dict(store)
    warn = []
    for key, m in own.items():
        s = store.get(key)
        if s is None:
            limits[key] = m
            warn.append(
                f"this worker's budget {usd(m)} USD {_who(key)} (--budget-usd or [budgets]) is "
                "not in the store: only this worker enforces it; `llmbatch budget apply` "
                "writes it for every worker"
            )
        elif m != s:
            limits[key] = min(m, s)
            tighter = m < s
            warn.append(
                f"this worker's budget {usd(m)} USD {_who(key)} differs from the store's "
                f"{usd(s)} USD: "
                + (
                    "enforcing the tighter, this worker's (`llmbatch budget apply` writes it "
                    "for every worker)"
                    if tighter
                    else "the store's holds (`llmbatch budget set` changes it)"
                )
            )
    policy = {p.queue: p for p in policies}
    everyone = policy.get(ALL_QUEUES)
    allow = bool(everyone and everyone.allow_unpriced)
    if mine.allow_unpriced and not allow:
        warn.append(
            "this worker allows unpriced models (--allow-unpriced or [budgets] allow_unpriced) "
            "but the store does not: they stay held (`llmbatch budget set --allow-unpriced`)"
        )
    context: dict[str, int] = {
        q: p.assume_context_tokens for q, p in policy.items() if p.assume_context_tokens
    }
    for q, m in mine.assume_context.items():
        s = context.get(q)
        who = "all queues" if q == ALL_QUEUES else f"queue {q}"
        if s is None:
            warn.append(
                f"this worker assumes {m:,} context tokens for {who} (assume_context_tokens) "
                "but the store assumes none: requests with previous_response_id stay held "
                "(`llmbatch budget apply` writes it)"
            )
        elif m > s:
            context[q] = m
            warn.append(
                f"this worker assumes {m:,} context tokens for {who}, the store {s:,}: "
                "enforcing the larger, this worker's"
            )
        elif m < s:
            warn.append(
                f"this worker assumes {m:,} context tokens for {who}, the store {s:,}: the "
                "store's holds"
            )
    budgets = tuple(
        Budget(None if q == ALL_QUEUES else q, p, Decimal(v) * MICRO)
        for (q, p), v in sorted(limits.items())
    )
    return BudgetSettings(budgets, allow, context), warn


class InForce:
    """What one worker enforces, read from the store at every tick: the store's budgets,
    tightened by the worker's own. Its own are written to a store that has none the first
    time (so every worker enforces them); each difference is said once."""

    def __init__(self, mine: BudgetSettings) -> None:
        self.mine = mine
        self.settings = BudgetSettings()
        self._said: set[str] = set()
        self._seeded = not (mine.budgets or mine.assume_context)

    def refresh(self, store: Store, now: float, notes: list[str]) -> BudgetSettings:
        if not self._seeded:
            self._seeded = True
            rows, policies = as_rows(self.mine)
            if store.seed_budgets(rows, policies, now):
                self._say(
                    store,
                    notes,
                    "the store had no budgets: wrote this worker's (--budget-usd or [budgets]), "
                    "which every worker now enforces (`llmbatch budget list`)",
                )
        rows, policies = store.stored_budgets()
        self.settings, warnings = in_force(rows, policies, self.mine)
        for w in warnings:
            self._say(store, notes, w)
        return self.settings

    def _say(self, store: Store, notes: list[str], text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            notes.append(text)
            store.note("budget", None, text)
