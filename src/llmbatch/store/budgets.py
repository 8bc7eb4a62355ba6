"""The store verbs of hard budgets: reserve with the intent, settle at ingest, hold, release.

A reservation runs inside `create_intent`'s transaction: SQLite's `BEGIN IMMEDIATE` already
serialises writers; on PostgreSQL each budget row it checks is locked `FOR UPDATE`, so two
workers reserving at once see each other's reservation and cannot both pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmbatch.errors import StoreError


@dataclass(frozen=True, slots=True)
class Check:
    """One budget a reservation must stay under, in 1e-6 USD over UTC days [first, end)."""

    queue: str  # a queue, or '*' for every queue together
    period: str
    limit_micro: int
    first: int
    end: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The worst case of an intent per queue, the budgets it must fit and its UTC day."""

    day: int
    per_queue: Mapping[str, int]  # queue -> micro-USD (every queue of the batch, 0 allowed)
    checks: Sequence[Check] = ()

    def amount(self, queue: str) -> int:
        if queue == "*":
            return sum(self.per_queue.values())
        return int(self.per_queue.get(queue, 0))


class OverBudget(StoreError):
    """A racing reservation took the room this one counted on; nothing was committed."""


@dataclass(frozen=True, slots=True)
class QueueUsage:
    """Usage of one batch's results in one queue and price tier (for settling)."""

    queue: str
    tier: int
    input: int
    cached: int
    write_5m: int
    write_1h: int
    output: int


@dataclass(slots=True)
class BudgetRow:
    """A budget as workers last enforced it, with what its current period has committed."""

    queue: str
    period: str
    limit_micro: int
    committed: int = 0
    updated_at: float = 0.0


class BudgetOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_dialect`, `_raw`."""

    _write: Any
    _read: Any
    q: Any
    _dialect: Any
    _raw: Any
    _fence: Any
    _event: Any

    def _for_update(self) -> str:
        return ""

    def _reserve(self, cur: Any, batch_id: int, r: Reservation, now: float) -> None:
        """Inside an intent's transaction: check every budget under its row lock, record."""
        for c in r.checks:
            params = {"queue": c.queue, "period": c.period, "limit_micro": c.limit_micro}
            cur.execute(self.q("upsert_budget"), {**params, "now": now})
            cur.execute(
                self._dialect("SELECT limit_micro FROM budgets WHERE queue = ? AND period = ?")
                + self._for_update(),
                [c.queue, c.period],
            )
            cur.execute(self.q("committed"), {"queue": c.queue, "first": c.first, "end": c.end})
            committed = int(cur.fetchone()[0])
            if committed + r.amount(c.queue) > c.limit_micro:
                raise OverBudget(
                    f"budget {c.queue}/{c.period}: {committed} committed meanwhile; pick again"
                )
        cur.executemany(
            self.q("insert_spend"),
            [(batch_id, queue, r.day, int(v)) for queue, v in sorted(r.per_queue.items())],
        )

    def budget_lines(self, request_ids: Sequence[int]) -> list[tuple[int, str, int, bytes]]:
        """(request id, queue, text bytes, body) of these requests, in the order given."""
        found: dict[int, tuple[int, str, int, bytes]] = {}
        ids = list(request_ids)
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            sql = self._dialect(self._raw("budget_lines").format(ids=", ".join(["?"] * len(part))))
            with self._read() as cur:
                cur.execute(sql, part)
                for rid, queue, text_bytes, body in cur.fetchall():
                    found[int(rid)] = (int(rid), str(queue), int(text_bytes), bytes(body))
        return [found[rid] for rid in ids if rid in found]

    def committed(self, queue: str, first: int, end: int) -> int:
        """1e-6 USD spent or reserved by a queue ('*': all) over UTC days [first, end)."""
        with self._read() as cur:
            cur.execute(self.q("committed"), {"queue": queue, "first": first, "end": end})
            return int(cur.fetchone()[0])

    def hold(self, request_ids: Sequence[int], reason: str, now: float, token: int) -> int:
        """Queued requests wait as `held` with a reason; returns how many."""
        with self._write() as cur:
            self._fence(cur, token)
            cur.executemany(self.q("hold_request"), [(reason, now, rid) for rid in request_ids])
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
            return int(cur.fetchone()[0])

    def batch_usage(self, batch_id: int) -> list[QueueUsage] | None:
        """Usage of a batch's results per queue and tier; None if it reserved nothing."""
        with self._read() as cur:
            cur.execute(self.q("has_spend"), {"id": batch_id})
            if cur.fetchone() is None:
                return None
            cur.execute(self.q("batch_usage"), {"id": batch_id})
            return [QueueUsage(str(r[0]), *(int(v) for v in r[1:])) for r in cur.fetchall()]

    def settle(self, batch_id: int, spent: Mapping[str, int], now: float, token: int) -> None:
        """Release a batch's reservation to its actual cost per queue (idempotent)."""
        with self._write() as cur:
            self._fence(cur, token)
            cur.execute(self.q("settle_all"), {"id": batch_id, "now": now})
            cur.executemany(
                self.q("settle_queue"), [(int(v), batch_id, q) for q, v in sorted(spent.items())]
            )
            self._event(
                cur, "settled", batch_id=batch_id,
                detail=", ".join(f"{q}: {v / 1e6:.6f} USD" for q, v in sorted(spent.items())),
            )  # fmt: skip

    def budget_overview(self, now: float) -> list[BudgetRow]:
        """Budgets workers enforced last, with their current period's committed spend."""
        from llmbatch.budget import period_days

        with self._read() as cur:
            cur.execute(self.q("budget_rows"))
            rows = [
                BudgetRow(str(q), str(p), int(limit), updated_at=float(at))
                for q, p, limit, at in cur.fetchall()
            ]
        for b in rows:
            first, end = period_days(now, b.period)
            b.committed = self.committed(b.queue, first, end)
        return rows

    def held_reasons(self) -> list[tuple[str, int]]:
        """(reason, requests) of held requests, the newest reason first."""
        with self._read() as cur:
            cur.execute(self.q("held_reasons"))
            return [(str(reason), int(n)) for reason, n in cur.fetchall()]
