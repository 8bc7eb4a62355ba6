"""Store verbs a person uses to look around and tidy up: the results export, lists of queues
and batches, progress at the provider, `retry` of failed requests and `purge` of a finished
queue. Queries live in `sql/manage.sql`.

Every finished request has a result row, whatever ended it (a provider's answer, a cancel, a
request too large for any batch): the export is one line per request, and its cursor (the
result id) says what was recorded after a given point.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmbatch.store.types import ResultRow

CHUNK = 500
ORDERS = ("recorded", "input")


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue: its requests per state, and what cost was recorded for it (kept by purge)."""

    name: str
    states: dict[str, int]
    first_enqueued: float | None
    last_change: float | None
    recorded_results: int = 0  # results counted in the cost totals, purged ones included

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def unfinished(self) -> int:
        return sum(n for s, n in self.states.items() if s not in FINISHED)


FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One batch as `llmbatch batches` lists it."""

    id: int
    provider: str
    model: str | None
    state: str
    provider_batch_id: str | None
    provider_status: str | None
    request_count: int
    completed: int
    failed: int
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    ingested_at: float | None
    cancel_requested_at: float | None
    updated_at: float
    intent_id: int | None
    provider_model: str | None = None  # the model the provider says ran it (0011)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """An open batch: what the provider last said was done, and what is read back already."""

    id: int
    provider: str
    provider_batch_id: str | None
    state: str
    provider_status: str | None
    requests: int
    done_at_provider: int  # completed + failed, as the provider last counted them
    submitted_at: float | None
    seen_at: float  # when those counts were recorded
    read_back: int  # attempts of this batch with an outcome recorded here
    in_scope: int  # its requests in the queue asked about (all of them without a queue)


@dataclass(slots=True)
class PurgePlan:
    """What a purge removes (or, dry, would remove); cost totals and spend are kept."""

    queue: str
    requests: int = 0
    attempts: int = 0
    results: int = 0
    unfinished: int = 0  # a queue with any of these is not purged
    reading_back: int = 0  # finished requests whose batch is still being read back
    done: bool = False
    notes: list[str] = field(default_factory=list)


class ManageOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_dialect`, `_raw`."""

    _write: Any
    _read: Any
    q: Any
    _dialect: Any
    _raw: Any

    # -- the results export ----------------------------------------------------------------
    def results_high(self) -> int:
        """The newest result id: what an export started now reads up to."""
        with self._read() as cur:
            cur.execute(self.q("results_high"))
            return int(cur.fetchone()[0])

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
        while True:
            with self._read() as cur:
                cur.execute(self.q(name), params)
                rows = _by_name(cur)
            for r in rows:
                if r["body"] is not None:
                    r["body"] = bytes(r["body"])
                yield ResultRow(**r)
            if len(rows) < page:
                return
            if order == "recorded":
                params["after"] = int(rows[-1]["cursor"])
            else:
                params["after_request"] = int(rows[-1]["request_id"])

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
        for i in range(0, len(ids), CHUNK):
            part = list(ids[i : i + CHUNK])
            marks = ", ".join(["?"] * len(part))
            in_states = ", ".join(["?"] * len(states))
            sql = self._raw("local_outcome_attempts").format(scope=marks, states=in_states)
            cur.execute(
                self._dialect(sql),
                [outcome, code, message[:2000], now, now, *part, *states],
            )
            sql = self._raw("local_outcome_results").format(scope=marks)
            cur.execute(self._dialect(sql), [int(now // 86400), now, *part])

    # -- lists -----------------------------------------------------------------------------
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
            return [BatchRow(**r) for r in _by_name(cur)]

    def batch_progress(self, queue: str | None = None) -> list[BatchProgress]:
        """Open batches holding requests of `queue` (every open batch without one)."""
        with self._read() as cur:
            cur.execute(self.q("batch_progress"), {"queue": queue})
            rows = _by_name(cur)
        return [BatchProgress(**r) for r in rows if r["in_scope"]]

    # -- tidying up ------------------------------------------------------------------------
    def retry_failed(self, request_ids: Sequence[int], now: float, *, dry_run: bool = False) -> int:
        """Failed requests among these go back to the queue with fresh attempts; how many
        (with `dry_run`, how many would).

        Their earlier results stay (what they cost is recorded); the export shows the
        newest result once they finish again."""
        moved = 0
        ids = list(request_ids)
        with self._write() as cur:
            for i in range(0, len(ids), CHUNK):
                part = ids[i : i + CHUNK]
                name = "count_failed" if dry_run else "retry_failed"
                sql = self._raw(name).format(scope=", ".join(["?"] * len(part)))
                cur.execute(self._dialect(sql), part if dry_run else [now, *part])
                moved += int(cur.fetchone()[0]) if dry_run else int(cur.rowcount)
        return moved

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
                ids = [int(r[0]) for r in cur.fetchall()]
                if not ids:
                    break
                marks = ", ".join(["?"] * len(ids))
                for name in ("purge_results", "purge_attempts", "purge_requests"):
                    cur.execute(self._dialect(self._raw(name).format(scope=marks)), ids)
        with self._write() as cur:
            cur.execute(self.q("purge_imports"), {"queue": queue})
            detail = f"queue {queue}: {plan.requests} requests, {plan.results} results"
            event = {"now": time.time(), "kind": "purged", "import_id": None, "batch_id": None}
            cur.execute(self.q("insert_event"), {**event, "detail": detail})
        plan.done = True
        return plan


def _by_name(cur: Any) -> list[dict[str, Any]]:
    """The cursor's rows as dicts keyed by column name (both drivers name them alike)."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
