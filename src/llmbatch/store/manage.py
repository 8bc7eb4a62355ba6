"""Store verbs a person uses to look around and tidy up: the results export, lists of queues
and batches, progress at the provider, `retry` of failed requests and `purge` of a finished
queue. Queries live in `sql/manage.sql`.

Every finished request has a result row, whatever ended it (a provider's answer, a cancel, a
request too large for any batch): the export is one line per request, and its cursor (the
result id) says what was recorded after a given point.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

from llmbatch.store.rows import by_name, column, scalar
from llmbatch.store.sqlfiles import as_list
from llmbatch.store.types import (
    FINISHED as FINISHED,
)
from llmbatch.store.types import (
    BatchProgress as BatchProgress,
)
from llmbatch.store.types import (
    BatchRow as BatchRow,
)
from llmbatch.store.types import (
    PurgePlan as PurgePlan,
)
from llmbatch.store.types import (
    QueueRow as QueueRow,
)
from llmbatch.store.types import ResultRow

CHUNK = 500
ORDERS = ("recorded", "input")
# The export's columns are ResultRow's fields in order: a row is built by position (a dict
# per row and keyword arguments cost twice the fetch, ~0.1 CPU s at 20,000 results).
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(ResultRow))
_BODY = RESULT_FIELDS.index("body")
# columns with a handful of values: each row's copy is replaced by the first one read, so a
# program holding 20,000 results holds four strings, not 80,000 (~4.8 MB, issue 23)
_SHARED = tuple(RESULT_FIELDS.index(n) for n in ("state", "provider", "model", "endpoint"))


class ManageOps:
    """Mixed into SqlStore; relies on its `_write`, `_read` and `q`."""

    _write: Any
    _read: Any
    q: Any

    # -- the results export ----------------------------------------------------------------
    def results_high(self) -> int:
        """The newest result id: what an export started now reads up to."""
        with self._read() as cur:
            cur.execute(self.q("results_high"))
            return int(scalar(cur))

    def iter_results(
        self,
        queue: str | None = None,
        state: str | None = None,
        after: int = 0,
        page: int = 5000,
        *,
        order: str = "recorded",
        upto: int | None = None,
    ) -> Iterator[ResultRow]:
        """The latest result of every finished request recorded in (after, upto], in
        recorded or input order, streamed page by page."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
        high = self.results_high() if upto is None else upto
        params: dict[str, Any] = {
            "after": after,
            "upto": high,
            "queue": queue,
            "state": state,
            "n": page,
            "after_request": 0,
        }
        name = "export_recorded" if order == "recorded" else "export_input"
        shared: dict[Any, Any] = {}
        while True:
            with self._read() as cur:
                cur.execute(self.q(name), params)
                names = tuple(d[0] for d in cur.description)
                if names != RESULT_FIELDS:
                    raise RuntimeError(f"{name} selects {names}, not ResultRow's fields")
                rows = cur.fetchall()
            for r in rows:
                row = list(r)
                for i in _SHARED:
                    row[i] = shared.setdefault(row[i], row[i])
                body = row[_BODY]
                if body is not None and type(body) is not bytes:  # PostgreSQL: a memoryview
                    row[_BODY] = bytes(body)
                yield ResultRow(*row)
            if len(rows) < page:
                return
            last = ResultRow(*rows[-1])
            if order == "recorded":
                params["after"] = int(last.cursor)
            else:
                params["after_request"] = int(last.request_id)

    def _local_outcomes(
        self,
        cur: Any,
        ids: Sequence[int],
        states: Sequence[str],
        outcome: str,
        code: str,
        message: str,
        now: float,
    ) -> None:
        """Attempts (state `outcome`, outcome 'unsent') and results for requests (among `ids`,
        in `states`) about to end here without a batch: call before moving them on."""
        params = {"outcome": outcome, "code": code, "message": message[:2000], "now": now}
        scope = as_list(ids)
        cur.execute(
            self.q("local_outcome_attempts"), {**params, "ids": scope, "states": as_list(states)}
        )
        day = int(now // 86400)
        cur.execute(self.q("local_outcome_results"), {"ids": scope, "day": day, "now": now})

    _forget_bodies: Any

    # -- lists -----------------------------------------------------------------------------
    def has_requests(self, queue: str) -> bool:
        with self._read() as cur:
            cur.execute(self.q("queue_has_requests"), {"queue": queue})
            return cur.fetchone() is not None

    def queues(self) -> list[QueueRow]:
        """Every queue with requests, and every purged one whose costs are still recorded."""
        found: dict[str, dict[str, Any]] = {}
        with self._read() as cur:
            cur.execute(self.q("queue_counts"))
            for queue, state, n, first, last in cur.fetchall():
                q = found.setdefault(queue, {"states": {}, "first": first, "last": last})
                q["states"][state] = int(n)
                q["first"] = min(q["first"], first)
                q["last"] = max(q["last"], last)
            cur.execute(self.q("queue_spend"))
            spend = {str(q): int(n or 0) for q, n, _day in cur.fetchall()}
        names = sorted(set(found) | set(spend))
        empty: dict[str, Any] = {"states": {}, "first": None, "last": None}
        return [
            QueueRow(
                name=name,
                states=found.get(name, empty)["states"],
                first_enqueued=found.get(name, empty)["first"],
                last_change=found.get(name, empty)["last"],
                recorded_results=spend.get(name, 0),
            )
            for name in names
        ]

    def batches(
        self, queue: str | None = None, *, open_only: bool = False, limit: int = 50
    ) -> list[BatchRow]:
        """Batches, newest first: all, or the open ones; of one queue, or every queue."""
        with self._read() as cur:
            cur.execute(self.q("batch_list"), {"queue": queue, "open": int(open_only), "n": limit})
            return [BatchRow(**r) for r in by_name(cur)]

    def batch_progress(self, queue: str | None = None) -> list[BatchProgress]:
        """Open batches holding requests of `queue` (every open batch without one)."""
        with self._read() as cur:
            cur.execute(self.q("batch_progress"), {"queue": queue})
            rows = by_name(cur)
        return [BatchProgress(**r) for r in rows if r["in_scope"]]

    # -- tidying up ------------------------------------------------------------------------
    def retry_failed(self, request_ids: Sequence[int], now: float, *, dry_run: bool = False) -> int:
        """Failed requests among these go back to the queue with fresh attempts; how many
        (with `dry_run`, how many would).

        Their earlier results stay (what they cost is recorded); the export shows the
        newest result once they finish again."""
        scope = as_list(request_ids)
        with self._write() as cur:
            if dry_run:
                cur.execute(self.q("count_failed"), {"ids": scope})
                return int(scalar(cur))
            cur.execute(self.q("retry_failed"), {"ids": scope, "now": now})
            return int(cur.rowcount)

    def purge_queue(self, queue: str, *, dry_run: bool = False) -> PurgePlan:
        """Delete a finished queue's requests, attempts and results, in short transactions.

        Cost totals and spend are kept, so `report` and budgets read the same afterwards. A
        queue with unfinished requests (or a batch still being read back) is left alone."""
        plan = PurgePlan(queue)
        with self._read() as cur:
            cur.execute(self.q("purge_blockers"), {"queue": queue})
            unfinished, reading = cur.fetchone()
            cur.execute(self.q("purge_counts"), {"queue": queue})
            n, results, attempts = cur.fetchone()
        plan.unfinished, plan.reading_back = int(unfinished), int(reading)
        plan.requests, plan.results, plan.attempts = int(n), int(results), int(attempts)
        if dry_run or plan.unfinished or plan.reading_back:
            return plan
        while True:
            with self._write() as cur:
                cur.execute(self.q("purge_page"), {"queue": queue, "n": CHUNK})
                ids = [int(i) for i in column(cur)]
                if not ids:
                    break
                for name in ("purge_results", "purge_attempts", "purge_requests"):
                    cur.execute(self.q(name), {"ids": as_list(ids)})
        with self._write() as cur:
            cur.execute(self.q("purge_imports"), {"queue": queue})
            self._forget_bodies(cur)
            detail = f"queue {queue}: {plan.requests} requests, {plan.results} results"
            event = {"now": time.time(), "kind": "purged", "import_id": None, "batch_id": None}
            cur.execute(self.q("insert_event"), {**event, "detail": detail})
        plan.done = True
        return plan
