"""The store verbs of the ledger: what each provider batch's result lines said it used (the
tally), what the provider says it used, and what a receipt reads.

The tally is written when a batch is ingested (replaced if it is ingested again); the
provider's own total whenever a poll brings one. A batch whose two totals differ is an
anomaly `status` and `report` show: "provider says" beside "we counted".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from llmbatch.store.recovery import check_batch_ref
from llmbatch.store.rows import by_name, named
from llmbatch.store.types import (
    TOKENS as TOKENS,
)
from llmbatch.store.types import (
    ReceiptGroup as ReceiptGroup,
)
from llmbatch.store.types import (
    SpendRow as SpendRow,
)
from llmbatch.store.types import (
    TallyRow as TallyRow,
)
from llmbatch.store.types import (
    UsageCheck as UsageCheck,
)


class LedgerOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_many`, `_fence`, `_event`."""

    _write: Any
    _read: Any
    q: Any
    _many: Any
    _fence: Any
    _event: Any

    def record_tally(
        self, batch_id: int, rows: Sequence[TallyRow], now: float, token: int
    ) -> UsageCheck | None:
        """Record what a batch's result lines said it used (replacing an earlier tally);
        the comparison with the provider's own total if it gave one, noted (an event
        `usage_mismatch`) when they differ."""
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(self.q("delete_tally"), {"id": batch_id})
            self._many(cur, "insert_tally", [{"id": batch_id, **asdict(r)} for r in rows])
        checks = self.usage_checks(batch_id, every=True, ingested=False)
        check = checks[0] if checks else None
        if check is not None and check.differs:
            self.note_anomaly(check)
        return check

    def note_anomaly(self, check: UsageCheck) -> None:
        with self._write() as cur:
            self._event(
                cur,
                "usage_mismatch",
                batch_id=check.batch_id,
                detail=(
                    f"usage: {check.provider_batch_id} provider says {_tokens(check.says)}; we "
                    f"counted {_tokens(check.counted)} ({check.difference()})"
                ),
            )

    def batch_tally(self, batch_id: int) -> list[TallyRow]:
        with self._read() as cur:
            cur.execute(self.q("tally_rows"), {"id": batch_id})
            return named(TallyRow, cur)

    def record_provider_usage(
        self, batch_id: int, usage: Any, now: float, token: int, model: str | None = None
    ) -> None:
        """What the provider says a batch used so far (`usage`: input, cached, output and
        reasoning tokens), and the model it says ran it."""
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(
                self.q("upsert_provider_usage"),
                {
                    "id": batch_id,
                    "input": int(usage.input),
                    "cached": int(usage.cached),
                    "output": int(usage.output),
                    "reasoning": int(usage.reasoning),
                    "now": now,
                    "model": model,
                },
            )

    def usage_checks(
        self,
        batch_id: int | None = None,
        *,
        every: bool = False,
        limit: int = 20,
        ingested: bool = True,
    ) -> list[UsageCheck]:
        """Ingested batches whose provider gave a total, newest first: only those that
        differ from what we counted unless `every`."""
        params = {"id": batch_id, "all_rows": int(every), "lim": limit, "ingested": int(ingested)}
        with self._read() as cur:
            cur.execute(self.q("usage_checks"), params)
            return [
                UsageCheck(
                    batch_id=int(r["batch_id"]),
                    provider_batch_id=r["provider_batch_id"],
                    provider=str(r["provider"]),
                    says=_four(r, "says"),
                    counted=_four(r, "counted"),
                    results=int(r["results"]),
                    flagged=int(r["flagged"]),
                    model=r["model"],
                )
                for r in by_name(cur)
            ]

    def find_batch(self, ref: str) -> dict[str, Any] | None:
        """A batch by local id or provider batch id."""
        keys = (
            "id",
            "provider",
            "endpoint",
            "model",
            "state",
            "provider_batch_id",
            "intent_id",
            "request_count",
            "created_at",
            "submitted_at",
            "ingested_at",
        )
        with self._read() as cur:
            check_batch_ref(cur, self.q("batches_named"), ref)
            cur.execute(self.q("find_batch"), {"ref": ref})
            row = cur.fetchone()
            if row is None:
                return None
            found = dict(zip(keys, row, strict=True))
            cur.execute(self.q("duplicates_of"), {"id": found["id"]})
            found["duplicates"] = [(int(i), p) for i, p in cur.fetchall()]
            return found

    def batch_spend(self, batch_id: int) -> list[SpendRow]:
        with self._read() as cur:
            cur.execute(self.q("batch_spend"), {"id": batch_id})
            return named(SpendRow, cur)

    def unplanned_spend(self, first: int, end: int, queue: str | None = None) -> list[SpendRow]:
        """Spend over UTC days [first, end) no budget planned (a duplicate provider batch) or
        whose results could not all be priced."""
        with self._read() as cur:
            cur.execute(self.q("unplanned_spend"), {"first": first, "end": end, "queue": queue})
            return named(SpendRow, cur)

    def receipt_groups(
        self, first: int, end: int, *, batch_id: int | None = None, queue: str | None = None
    ) -> list[ReceiptGroup]:
        """Usage of results per batch, pricing aggregate and queue: of one batch (all days),
        or recorded over UTC days [first, end) (of one queue, or all)."""
        with self._read() as cur:
            if batch_id is not None:
                cur.execute(self.q("receipt_batch_groups"), {"batch": batch_id})
            else:
                params = {"queue": queue, "first": first, "end": end}
                cur.execute(self.q("receipt_day_groups"), params)
            return named(ReceiptGroup, cur)


def _four(row: dict[str, Any], side: str) -> tuple[int, int, int, int]:
    """(input, cached, output, reasoning) tokens of one side of a usage check."""
    a, b, c, d = (int(row[f"{side}_{t}"] or 0) for t in TOKENS)
    return a, b, c, d


def _tokens(t: tuple[int, int, int, int]) -> str:
    return f"{t[0]:,} input ({t[1]:,} cached), {t[2]:,} output ({t[3]:,} reasoning)"
