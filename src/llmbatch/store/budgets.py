"""The store verbs of hard budgets: the budgets in force, reserve with the intent, settle at
ingest, hold, release.

The store is the only source of budgets: `budgets` holds the caps every worker enforces and
`budget_policy` the other settings (`llmbatch budget` writes them; the first worker that
brings budgets of its own writes them to a store that has none). A worker may tighten them
for itself (its `Check`s), never loosen them.

A reservation runs inside `create_intent`'s transaction and checks the store's budgets as
they are then, tightened by the worker's own: SQLite's `BEGIN IMMEDIATE` already serialises
writers; on PostgreSQL the store's budget rows it checks are locked `FOR UPDATE`, so two
workers reserving at once see each other's reservation and cannot both pass (an advisory lock
serialises reservations that check only a worker's own budgets, which have no row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmbatch.errors import StoreError
from llmbatch.periods import period_days
from llmbatch.store.rows import by_name, named, scalar
from llmbatch.store.sqlfiles import as_list
from llmbatch.store.types import (
    BudgetRow as BudgetRow,
)
from llmbatch.store.types import (
    Check as Check,
)
from llmbatch.store.types import (
    PolicyRow as PolicyRow,
)
from llmbatch.store.types import (
    QueueUsage as QueueUsage,
)
from llmbatch.store.types import (
    Reservation as Reservation,
)

RESERVE_LOCK = 0x6C6D6274_62756467  # a PostgreSQL advisory lock: one budget writer at a time


class OverBudget(StoreError):
    """A racing reservation took the room this one counted on; nothing was committed."""


def _days(day: int, period: str) -> tuple[int, int]:
    return period_days(day * 86400.0, period)


class BudgetOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_many`, `_fence`, `_event`."""

    _write: Any
    _read: Any
    q: Any
    _many: Any
    _fence: Any
    _event: Any
    dialect: str

    # -- the budgets in the store ------------------------------------------------------------
    def stored_budgets(self) -> tuple[list[BudgetRow], list[PolicyRow]]:
        """The store's budgets and budget settings, as every worker must enforce them."""
        with self._read() as cur:
            cur.execute(self.q("budget_rows"))
            rows = [
                BudgetRow(str(q), str(p), int(limit), updated_at=float(at))
                for q, p, limit, at in cur.fetchall()
            ]
            cur.execute(self.q("policy_rows"))
            policies = [
                PolicyRow(
                    str(q), None if a is None else bool(a), None if c is None else int(c), float(at)
                )
                for q, a, c, at in cur.fetchall()
            ]
        return rows, policies

    def set_budget(self, queue: str, period: str, limit_micro: int, now: float) -> int | None:
        """Set a budget in the store; the limit it replaces, if any."""
        with self._write() as cur:
            cur.execute(self.q("budget_of"), {"queue": queue, "period": period})
            before = scalar(cur)
            cur.execute(
                self.q("upsert_budget"),
                {"queue": queue, "period": period, "limit_micro": limit_micro, "now": now},
            )
            self._event(cur, "budget_set", detail=f"{queue}/{period}: {limit_micro / 1e6:.6f} USD")
            return None if before is None else int(before)

    def set_policy(
        self,
        queue: str,
        now: float,
        *,
        allow_unpriced: bool | None = None,
        assume_context_tokens: int | None = None,
    ) -> PolicyRow:
        """Change a queue's budget settings in the store (None leaves one as it is)."""
        with self._write() as cur:
            cur.execute(self.q("policy_of"), {"queue": queue})
            found = by_name(cur)
            row = found[0] if found else {"allow_unpriced": None, "assume_context_tokens": None}
            allow = None if row["allow_unpriced"] is None else bool(row["allow_unpriced"])
            context = (
                None if row["assume_context_tokens"] is None else int(row["assume_context_tokens"])
            )
            if allow_unpriced is not None:
                allow = allow_unpriced
            if assume_context_tokens is not None:
                context = assume_context_tokens
            cur.execute(
                self.q("upsert_policy"),
                {
                    "queue": queue,
                    "allow_unpriced": None if allow is None else int(allow),
                    "assume_context_tokens": context,
                    "now": now,
                },
            )
            self._event(
                cur,
                "budget_set",
                detail=f"{queue}: allow_unpriced={allow}, assume_context_tokens={context}",
            )
            return PolicyRow(queue, allow, context, now)

    def clear_budgets(self, queue: str, period: str | None = None) -> int:
        """Remove a queue's budgets of one period (None: every period, and its settings);
        how many rows went."""
        with self._write() as cur:
            cur.execute(self.q("delete_budgets"), {"queue": queue, "period": period})
            gone = int(cur.rowcount)
            if period is None:
                cur.execute(self.q("delete_policy"), {"queue": queue})
                gone += int(cur.rowcount)
            if gone:
                self._event(cur, "budget_cleared", detail=f"{queue}/{period or 'all'}")
            return gone

    def seed_budgets(
        self, rows: Sequence[BudgetRow], policies: Sequence[PolicyRow], now: float
    ) -> bool:
        """Write a worker's own budgets into a store that has none (its first use); False,
        writing nothing, if the store already has budgets."""
        with self._write() as cur:
            self._lock_budgets(cur)  # two first workers at once: one writes, one reads
            cur.execute(self.q("budgets_stored"))
            if int(scalar(cur)):
                return False
            for b in rows:
                cur.execute(
                    self.q("upsert_budget"),
                    {
                        "queue": b.queue,
                        "period": b.period,
                        "limit_micro": b.limit_micro,
                        "now": now,
                    },
                )
            for p in policies:
                cur.execute(
                    self.q("upsert_policy"),
                    {
                        "queue": p.queue,
                        "now": now,
                        "assume_context_tokens": p.assume_context_tokens,
                        "allow_unpriced": None
                        if p.allow_unpriced is None
                        else int(p.allow_unpriced),
                    },
                )
            self._event(cur, "budget_set", detail=f"first use: {len(rows)} budgets written")
            return True

    def _lock_budgets(self, cur: Any) -> None:
        """Serialise reservations and first-use writes (SQLite's BEGIN IMMEDIATE already does;
        on PostgreSQL, a transaction-scoped advisory lock)."""
        if self.dialect == "postgres":
            cur.execute(self.q("lock_budgets"), {"key": RESERVE_LOCK})

    # -- reservations ------------------------------------------------------------------------
    def _reserve(self, cur: Any, batch_id: int, r: Reservation, now: float) -> None:
        """Inside an intent's transaction: check the store's budgets (rows locked) and the
        worker's own, each against its period's committed spend; record the reservation."""
        self._lock_budgets(cur)  # a budget of this worker alone has no row to lock
        queues = sorted(q for q in r.per_queue if q != "*")
        cur.execute(self.q("budgets_over"), {"queues": as_list(queues)})  # FOR UPDATE on PostgreSQL
        limits = {(str(q), str(p)): int(v) for q, p, v in cur.fetchall()}
        for c in r.checks:  # the worker's own may only tighten
            key = (c.queue, c.period)
            limits[key] = min(limits.get(key, c.limit_micro), c.limit_micro)
        for (queue, period), limit in sorted(limits.items()):
            first, end = _days(r.day, period)
            cur.execute(self.q("committed"), {"queue": queue, "first": first, "end": end})
            committed = int(scalar(cur))
            if committed + r.amount(queue) > limit:
                raise OverBudget(
                    f"budget {queue}/{period}: {committed} committed meanwhile; pick again"
                )
        self._many(
            cur,
            "insert_spend",
            [
                {"id": batch_id, "queue": q, "day": r.day, "amount": int(v)}
                for q, v in sorted(r.per_queue.items())
            ],
        )

    def budget_lines(self, request_ids: Sequence[int]) -> list[tuple[int, str, int, bytes]]:
        """(request id, queue, text bytes, body) of these requests, in the order given."""
        found: dict[int, tuple[int, str, int, bytes]] = {}
        with self._read() as cur:
            cur.execute(self.q("budget_lines"), {"ids": as_list(request_ids)})
            for rid, queue, text_bytes, body in cur.fetchall():
                found[int(rid)] = (int(rid), str(queue), int(text_bytes), bytes(body))
        return [found[rid] for rid in request_ids if rid in found]

    def committed(self, queue: str, first: int, end: int) -> int:
        """1e-6 USD spent or reserved by a queue ('*': all) over UTC days [first, end)."""
        with self._read() as cur:
            cur.execute(self.q("committed"), {"queue": queue, "first": first, "end": end})
            return int(scalar(cur))

    # -- holds ---------------------------------------------------------------------------
    def hold(
        self, request_ids: Sequence[int], reason: str, now: float, token: int, claim: str = "engine"
    ) -> int:
        """Queued requests wait as `held` with a reason; returns how many."""
        with self._write() as cur:
            self._fence(cur, token, claim)
            self._many(
                cur,
                "hold_request",
                [{"reason": reason, "now": now, "id": rid} for rid in request_ids],
            )
            return int(cur.rowcount)

    def release_held(self, now: float, token: int) -> int:
        """Every held request goes back to `queued`, to be weighed against the budgets again."""
        with self._write() as cur:
            self._fence(cur, token)
            cur.execute(self.q("release_held"), {"now": now})
            return int(cur.rowcount)

    def held_count(self, queue: str | None = None) -> int:
        with self._read() as cur:
            cur.execute(self.q("held_count"), {"queue": queue})
            return int(scalar(cur))

    def held_reasons(self) -> list[tuple[str, int]]:
        """(reason, requests) of held requests, the newest reason first."""
        with self._read() as cur:
            cur.execute(self.q("held_reasons"))
            return [(str(reason), int(n)) for reason, n in cur.fetchall()]

    # -- settlement ----------------------------------------------------------------------
    def batch_usage(self, batch_id: int) -> list[QueueUsage] | None:
        """Usage of a batch's results per queue and tier; None if it reserved nothing."""
        with self._read() as cur:
            cur.execute(self.q("has_spend"), {"id": batch_id})
            if cur.fetchone() is None:
                return None
            cur.execute(self.q("batch_usage"), {"id": batch_id})
            return named(QueueUsage, cur)

    def flagged_results(self, batch_id: int) -> list[tuple[int, str]]:
        """(request id, queue) of a batch's succeeded results whose usage could not be read."""
        with self._read() as cur:
            cur.execute(self.q("flagged_results"), {"id": batch_id})
            return [(int(r), str(q)) for r, q in cur.fetchall()]

    def spend_queues(self, batch_id: int) -> dict[str, int]:
        """The queues a batch's spend rows charge, with their worst case."""
        with self._read() as cur:
            cur.execute(self.q("spend_queues"), {"id": batch_id})
            return {str(q): int(w) for q, w in cur.fetchall()}

    def settle(
        self,
        batch_id: int,
        spent: Mapping[str, int],
        now: float,
        token: int,
        unpriced: Mapping[str, int] | None = None,
        prices: str | None = None,
    ) -> None:
        """Release a batch's reservation to its actual cost per queue (idempotent);
        `unpriced` counts the results per queue whose cost is not known."""
        unpriced = unpriced or {}
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(self.q("settle_all"), {"id": batch_id, "now": now, "prices": prices})
            queues = sorted(set(spent) | set(unpriced))
            self._many(
                cur,
                "settle_queue",
                [
                    {
                        "spent": int(spent.get(q, 0)),
                        "unpriced": int(unpriced.get(q, 0)),
                        "id": batch_id,
                        "queue": q,
                    }
                    for q in queues
                ],
            )
            detail = ", ".join(f"{q}: {v / 1e6:.6f} USD" for q, v in sorted(spent.items()))
            if any(unpriced.values()):
                detail += f"; {sum(unpriced.values())} results not priced"
            self._event(cur, "settled", batch_id=batch_id, detail=detail)

    def _charge_duplicate(self, cur: Any, dup_id: int, intent_id: int, now: float) -> None:
        """In the adoption's transaction: a duplicate of an intent is charged at once."""
        cur.execute(
            self.q("charge_duplicate"),
            {"dup": dup_id, "intent": intent_id, "day": int(now // 86400)},
        )

    def budget_overview(self, now: float) -> list[BudgetRow]:
        """The store's budgets, with their current period's committed spend."""
        rows, _policies = self.stored_budgets()
        for b in rows:
            first, end = period_days(now, b.period)
            b.committed = self.committed(b.queue, first, end)
        return rows
