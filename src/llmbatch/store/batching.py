"""The store verbs of the batch engine: leases, packing, submission, ingest.

Every state-changing write checks the caller's lease token inside its own transaction
(a fencing token): a worker that paused past its lease cannot act for one that replaced it.
Commits that record money being spent — an intent, an upload, a created batch — are durable.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from llmbatch.errors import StoreError
from llmbatch.states import check_batch
from llmbatch.store.budgets import Reservation
from llmbatch.store.claims import group_claim
from llmbatch.store.ownership import new_nonce
from llmbatch.store.rows import by_name, column, scalar
from llmbatch.store.sqlfiles import as_list, for_dialect, queries
from llmbatch.store.types import (
    AttemptInfo as AttemptInfo,
)
from llmbatch.store.types import (
    OpenBatch as OpenBatch,
)
from llmbatch.store.types import (
    Outcome as Outcome,
)
from llmbatch.store.types import (
    Succeeded as Succeeded,
)


class LeaseLost(StoreError):
    """Another worker took over: this one must stop acting."""


class BatchingOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_many`, `_many_rows`,
    `_event`."""

    dialect: str
    _write: Any
    _read: Any
    q: Any
    _many: Any
    _many_rows: Any
    _event: Any
    _reserve: Any
    _local_outcomes: Any
    _claim_new: Any

    # -- leases --------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> int | None:
        """Take or renew a lease or a claim; it carries the holder's token (one per worker),
        so its token changes whenever the holder does."""
        with self._write() as cur:
            token = self._worker_token(cur, holder, now)
            cur.execute(
                self.q("acquire_lease"),
                {
                    "name": name,
                    "holder": holder,
                    "token": token,
                    "expires_at": now + ttl,
                    "now": now,
                },
            )
            token = scalar(cur)
        return None if token is None else int(token)

    def _worker_token(self, cur: Any, holder: str, now: float) -> int:
        cur.execute(self.q("worker_token"), {"holder": holder, "queues": None, "now": now})
        return int(scalar(cur))

    def release_lease(self, name: str, holder: str) -> None:
        with self._write() as cur:
            cur.execute(self.q("release_lease"), {"name": name, "holder": holder})

    def break_lease(self, name: str, holder: str) -> None:
        """End a lease whose holder is known dead (the next acquire changes the token)."""
        with self._write() as cur:
            cur.execute(self.q("release_lease"), {"name": name, "holder": holder})

    def lease_holder(self, name: str, now: float) -> str | None:
        """Who holds a live lease, if anyone."""
        with self._read() as cur:
            cur.execute(self.q("get_lease"), {"name": name})
            lease = by_name(cur)
        if not lease or float(lease[0]["expires_at"]) < now:
            return None
        return str(lease[0]["holder"])

    def _fence(self, cur: Any, token: int, name: str = "engine") -> None:
        """Refuse the write unless the caller holds `name` (a claim such as `batch:7`, or the
        engine lease) live, or nobody holds that claim live and the caller holds the engine
        lease, which stands for a claim on whatever nobody claims. The seconds left are by the
        database's clock (SQLite: one host, :now; PostgreSQL: its own, postgres/queries.sql)."""
        if name == "*":  # any claim: a fact learned while working, whoever writes it
            cur.execute(self.q("fence_any"), {"token": token, "now": time.time()})
            if scalar(cur) is None:
                raise LeaseLost(
                    "every claim of this worker was taken over or ran out; it stops acting"
                )
            return
        cur.execute(self.q("fence"), {"name": name, "now": time.time()})
        rows = {str(r["name"]): (int(r["token"]), float(r["seconds_left"])) for r in by_name(cur)}
        claim = rows.get(name)
        if claim is not None and (claim[0] == token or claim[1] > 0):
            held = claim
        else:
            name, held = "engine", rows.get("engine")  # type: ignore[assignment]
        if held is None or held[0] != token:
            raise LeaseLost(
                f"lease {name!r} was taken over by another worker; this one stops acting"
            )
        if held[1] <= 0:
            raise LeaseLost(
                f"lease {name!r} ran out {-held[1]:.1f} s ago (paused past it?); this "
                "worker stops acting until it holds the lease again"
            )

    # -- packing -------------------------------------------------------------------------
    def release_due_retries(self, now: float, token: int) -> int:
        with self._write() as cur:
            self._fence(cur, token)
            cur.execute(self.q("release_due_retries"), {"now": now})
            return int(cur.rowcount)

    def ready_groups(self, queues: Sequence[str] | None = None) -> list[tuple[str, str, str, int]]:
        with self._read() as cur:
            if queues is None:
                cur.execute(self.q("ready_groups"))
            else:
                cur.execute(self._in_queues("ready_groups"), {"queues": as_list(queues)})
            return [(r["provider"], r["endpoint"], r["model"], int(r["n"])) for r in by_name(cur)]

    def candidates(
        self,
        provider: str,
        endpoint: str,
        model: str | None,
        page: int = 5000,
        queues: Sequence[str] | None = None,
    ) -> Iterator[tuple[int, int, int, int, bytes]]:
        """(request id, body bytes, embedding inputs, text bytes, body) of ready requests of a
        model (None: of every model), of these queues (None: every one), in packing order,
        fetched page by page (each its own short read).

        Every model of a group is one index range: their streams are merged in packing order
        here, where one query over the group would sort all its queued rows for every page."""
        if model is not None:
            for rid, nbytes, ninputs, text_bytes, body, _priority in self._ready(
                provider, endpoint, model, page, queues
            ):
                yield rid, nbytes, ninputs, text_bytes, body
            return
        models = sorted(
            {m for p, e, m, _n in self.ready_groups(queues) if (p, e) == (provider, endpoint)}
        )
        streams = [self._ready(provider, endpoint, m, page, queues) for m in models]
        for rid, nbytes, ninputs, text_bytes, body, _priority in heapq.merge(
            *streams, key=_packing_order
        ):
            yield rid, nbytes, ninputs, text_bytes, body

    def _ready(
        self,
        provider: str,
        endpoint: str,
        model: str,
        page: int,
        queues: Sequence[str] | None = None,
    ) -> Iterator[tuple[int, int, int, int, bytes, int]]:
        """(id, body bytes, inputs, text bytes, body, priority) of one model's ready requests."""
        params: dict[str, Any] = {
            "provider": provider,
            "endpoint": endpoint,
            "model": model,
            "n": page,
        }
        first, after = self.q("ready_candidates"), self.q("ready_candidates_after")
        if queues is not None:  # a worker serving some queues
            params["queues"] = as_list(queues)
            first = self._in_queues("ready_candidates")
            after = self._in_queues("ready_candidates_after")
        while True:
            with self._read() as cur:
                cur.execute(after if "priority" in params else first, params)
                rows = cur.fetchall()
            for rid, body, ninputs, text_bytes, priority in rows:
                body = bytes(body)
                yield rid, len(body), ninputs, text_bytes, body, priority
            if len(rows) < page:
                return
            params["priority"], params["id"] = priority, rid  # the page's last row

    def _in_queues(self, name: str) -> str:
        """A query of ready requests narrowed to the queues of `:queues` (a worker serving
        some queues), written once: the query itself, one condition more."""
        sql = queries()[name]
        narrowed = sql.replace(
            "WHERE state = 'queued'",
            "WHERE state = 'queued' AND queue IN (SELECT value FROM json_each(:queues))",
            1,
        )
        assert narrowed != sql, name
        return for_dialect(self.dialect, narrowed)

    def create_intent(
        self,
        group: tuple[str, str, str | None],
        request_ids: Sequence[int],
        input_bytes: int,
        est_tokens: int,
        now: float,
        token: int,
        reserve: Reservation | None = None,
        *,
        queue: str | None = None,
        holder: str | None = None,
    ) -> int | None:
        """Durably commit an intent: a batch row and one attempt per request, in line order,
        and, under budgets, its worst case reserved in the same transaction.

        `queue`: the one queue its requests are of (a worker serving some queues packs each
        alone); `holder`: the worker that holds its packing group's claim, which holds the new
        batch's claim from the start.

        Raises _Retry if any of the requests stopped being queued meanwhile (someone else
        packed or cancelled it), OverBudget if a racing reservation took the room; the
        caller picks candidates again.
        """
        provider, endpoint, model = group
        with self._write(durable=True) as cur:
            self._fence(cur, token, group_claim(group, queue))
            params = {
                "provider": provider,
                "endpoint": endpoint,
                "model": model,
                "request_count": len(request_ids),
                "input_bytes": input_bytes,
                "est_tokens": est_tokens,
                "now": now,
                "nonce": new_nonce(),
            }
            cur.execute(self.q("insert_batch"), params)
            batch_id = int(scalar(cur))
            if queue is not None:
                cur.execute(self.q("set_batch_queue"), {"id": batch_id, "queue": queue})
            if holder is not None:  # the worker that packed it holds its claim from the start
                self._claim_new(cur, f"batch:{batch_id}", holder, token, now)
            if self._pack(cur, batch_id, request_ids, now) != len(request_ids):
                raise _Retry()
            if reserve is not None:
                self._reserve(cur, batch_id, reserve, now)
            self._event(
                cur,
                "intent",
                batch_id=batch_id,
                detail=f"{provider} {endpoint} {model}: {len(request_ids)} requests",
            )
        return batch_id

    def _pack(self, cur: Any, batch_id: int, request_ids: Sequence[int], now: float) -> int:
        """Mark an intent's requests packed and give each an attempt, in a statement each
        over every row; returns how many requests were still queued (the attempts are only
        worth keeping when that is all of them: the caller rolls back otherwise)."""
        ids = as_list(request_ids)
        cur.execute(self.q("pack_requests"), {"ids": ids, "now": now})
        packed = int(cur.rowcount)
        if packed == len(request_ids):
            cur.execute(self.q("insert_attempts"), {"ids": ids, "batch_id": batch_id, "now": now})
        return packed

    def batch_lines(self, batch_id: int, page: int = 2000) -> Iterator[tuple[int, str, bytes]]:
        """(attempt id, endpoint, body) of an intent in line order, streamed."""
        last, following = 0, None
        while True:
            params = {"batch_id": batch_id, "after": last, "upto": last + page}
            with self._read() as cur:
                cur.execute(self.q("batch_lines"), params)
                rows = cur.fetchall()
                if not rows:  # lines are 1..n by construction; a gap is skipped, not an end
                    cur.execute(self.q("next_batch_line"), params)
                    following = scalar(cur)
            for a, endpoint, body, _line in rows:
                yield int(a), str(endpoint), bytes(body)
            if rows:
                last += page
            elif following is None:
                return
            else:
                last = int(following) - 1

    def batch_line_requests(self, batch_id: int) -> list[tuple[int, int]]:
        """(attempt id, request id) of an intent's lines, in line order."""
        with self._read() as cur:
            cur.execute(self.q("batch_line_requests"), {"batch_id": batch_id})
            return cur.fetchall()  # type: ignore[no-any-return]

    # -- submission ----------------------------------------------------------------------
    def mark(self, what: str, batch_id: int, now: float, token: int) -> None:
        """Record that an upload or a create starts at `now` (durable): the engine's clock
        read as the call starts, from which a reconcile waits out the call and the list's lag."""
        with self._write(durable=True) as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(self.q(f"mark_{what}_started"), {"id": batch_id, "now": now})
            self._event(cur, f"{what}_started", batch_id=batch_id)

    def record_upload(self, batch_id: int, file_id: str, now: float, token: int) -> None:
        with self._write(durable=True) as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(self.q("record_upload"), {"id": batch_id, "file_id": file_id, "now": now})
            self._event(cur, "uploaded", batch_id=batch_id, detail=file_id)

    def _move_batch(self, cur: Any, batch_id: int, new: str, name: str, params: Any) -> int:
        """The one way a batch's state changes: run statement `name` (which sets it to `new`)
        if the transition table (states.BATCH_TRANSITIONS) allows the move from the state the
        batch is in; IllegalTransition, and nothing written, if not. Returns the rows changed."""
        cur.execute(self.q("batch_state"), {"id": batch_id})
        old = scalar(cur)
        if old is None:
            raise StoreError(f"no batch {batch_id} to move to {new!r}")
        check_batch(str(old), new)
        cur.execute(self.q(name), params)
        return int(cur.rowcount)

    def record_submitted(
        self, batch_id: int, provider_batch_id: str, file_id: str | None, now: float, token: int
    ) -> None:
        """The provider created the batch: remember its id before anything else (durable)."""
        with self._write(durable=True) as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            params = {
                "id": batch_id,
                "provider_batch_id": provider_batch_id,
                "file_id": file_id,
                "now": now,
            }
            self._move_batch(cur, batch_id, "validating", "record_submitted", params)
            cur.execute(self.q("submit_attempts"), {"id": batch_id})
            cur.execute(self.q("submit_requests"), {"id": batch_id, "now": now})
            self._event(cur, "submitted", batch_id=batch_id, detail=provider_batch_id)

    def open_batches(self) -> list[OpenBatch]:
        with self._read() as cur:
            cur.execute(self.q("open_batches"))
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            r["errors"] = orjson.loads(r["errors"]) if r["errors"] else []
            r["created_at"] = float(r["created_at"])
        return [OpenBatch(**r) for r in rows]

    def update_batch(self, batch_id: int, status: Any, now: float, token: int) -> None:
        """Store what a poll saw of a batch (`status` is a providers.BatchStatus)."""
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            errors = orjson.dumps(status.errors).decode() if status.errors else None
            params = {
                "id": batch_id,
                "state": status.state,
                "provider_status": status.provider_status,
                "completed": status.completed,
                "failed": status.failed,
                "output_file_id": status.output_file_id,
                "error_file_id": status.error_file_id,
                "errors": errors,
                "finished_at": now if status.ended else None,
                "now": now,
            }
            self._move_batch(cur, batch_id, status.state, "update_batch", params)
            self._event(
                cur, f"batch_{status.state}", batch_id=batch_id, detail=status.provider_status
            )

    # -- ingest --------------------------------------------------------------------------
    def attempt_info(self, batch_id: int, attempt_ids: Sequence[int]) -> dict[int, AttemptInfo]:
        """The attempts of this batch, among `attempt_ids`, still waiting for an outcome."""
        with self._read() as cur:
            params = {"ids": as_list(attempt_ids), "batch_id": batch_id}
            cur.execute(self.q("waiting_attempts"), params)
            return {
                int(a): AttemptInfo(int(a), int(r), int(n), int(e), int(j))
                for a, r, n, e, j in cur.fetchall()
            }

    def apply_outcomes(
        self, batch_id: int, outcomes: Sequence[Outcome | Succeeded], now: float, token: int
    ) -> int:
        """Record outcomes of attempts still waiting; re-applying one is harmless. Returns how many."""
        if not outcomes:
            return 0
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            attempts = [o[0] if isinstance(o, tuple) else o.attempt_id for o in outcomes]
            params = {"ids": as_list(attempts), "batch_id": batch_id}
            cur.execute(self.q("waiting_attempt_requests"), params)
            waiting = {int(a): int(r) for a, r in cur.fetchall()}
            todo: dict[int, Outcome | Succeeded] = {}  # each attempt's first, in the order given
            for a, o in zip(attempts, outcomes, strict=True):
                if a in waiting:
                    todo.setdefault(a, o)
            self._record_outcomes(cur, list(todo.values()), waiting, now)
            return len(todo)

    def _record_outcomes(
        self, cur: Any, todo: Sequence[Outcome | Succeeded], waiting: dict[int, int], now: float
    ) -> None:
        """Finish these attempts, insert the results of those that ended, add them to the
        cost totals and move their requests on (`waiting`: attempt id -> request id). One
        statement over the list for the succeeded ones, a prepared statement run over every
        row for the rest (SQLite's `executemany` loops in C, inside the one transaction);
        PostgreSQL's override stages the rows with COPY."""
        succeeded = [
            o[0] if isinstance(o, tuple) else o.attempt_id
            for o in todo
            if isinstance(o, tuple) or o.kind == "succeeded"
        ]
        if succeeded:  # nearly every outcome: one statement over the list
            cur.execute(self.q("attempts_succeeded"), {"ids": as_list(succeeded), "now": now})
        others = [o for o in todo if not isinstance(o, tuple) and o.kind != "succeeded"]
        self._many(
            cur,
            "finish_attempt",
            [
                {
                    "kind": o.kind,
                    "error_code": o.error_code,
                    "error_message": o.error_message,
                    "now": now,
                    "id": o.attempt_id,
                }
                for o in others
            ],
        )
        # a cancelled request gets a result too (the export lists it), but costs nothing;
        # the rows in the order given (the results' ids follow it)
        day = int(now // 86400)
        rows = [
            (*o, waiting[o[0]], day, now, None, None)
            if isinstance(o, tuple)
            else _result(o, waiting[o.attempt_id], day, now)
            for o in todo
            if isinstance(o, tuple) or o.kind in ("succeeded", "failed", "cancelled")
        ]
        self._many_rows(cur, "insert_result", RESULT_PARAMS, rows)
        cancelled = {o.attempt_id for o in others if o.kind == "cancelled"}
        self._add_cost_totals(cur, [p[0] for p in rows if p[0] not in cancelled])
        rid = waiting.__getitem__
        if succeeded:
            cur.execute(
                self.q("request_succeeded"), {"ids": as_list(map(rid, succeeded)), "now": now}
            )
        by_kind: dict[str, list[Outcome]] = {}
        for o in others:
            by_kind.setdefault(o.kind, []).append(o)
        for kind, done in by_kind.items():
            self._many(
                cur,
                f"request_{kind}",
                [
                    {
                        "id": rid(o.attempt_id),
                        "now": now,
                        "reason": _reason(o),
                        "not_before": o.not_before,
                        "expiry": o.charge_expiry,
                        "rejection": o.charge_rejection,
                    }
                    for o in done
                ],
            )

    def _add_cost_totals(self, cur: Any, attempt_ids: Sequence[int]) -> None:
        """Add these new results to the report's running totals (same transaction)."""
        if attempt_ids:
            cur.execute(self.q("add_cost_totals"), {"ids": as_list(attempt_ids)})

    def attempts_not_in_batch(self, batch_id: int, attempt_ids: Sequence[int]) -> list[int]:
        """The ids among these that are not attempts of this batch."""
        ids = list(dict.fromkeys(attempt_ids))
        with self._read() as cur:
            cur.execute(self.q("attempts_in_batch"), {"ids": as_list(ids), "batch_id": batch_id})
            known = {int(i) for i in column(cur)}
        return [a for a in ids if a not in known]

    def unfinished_attempts(self, batch_id: int) -> list[tuple[int, int, int]]:
        """(attempt id, request id, line) of attempts of this batch with no outcome yet."""
        with self._read() as cur:
            cur.execute(self.q("unfinished_attempts"), {"batch_id": batch_id})
            return [(int(a), int(r), int(ln)) for a, r, ln in cur.fetchall()]

    def mark_ingested(
        self, batch_id: int, now: float, token: int, detail: str | None = None
    ) -> None:
        """Durable (a full sync on SQLite, which makes every result committed before it
        durable too): the provider's copies of the files are deleted right after."""
        with self._write(durable=True) as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            params = {"id": batch_id, "now": now}
            self._move_batch(cur, batch_id, "ingested", "mark_ingested", params)
            cur.execute(self.q("drop_claim"), {"name": f"batch:{batch_id}"})  # done with
            self._event(cur, "ingested", batch_id=batch_id, detail=detail)

    def fail_unsendable(
        self, request_id: int, reason: str, now: float, token: int, claim: str = "engine"
    ) -> bool:
        """A queued request no batch can hold fails with `reason` (it would block its group)."""
        with self._write() as cur:
            self._fence(cur, token, claim)
            self._local_outcomes(cur, [request_id], ["queued"], "failed", "too_large", reason, now)
            cur.execute(self.q("fail_unsendable"), {"reason": reason, "now": now, "id": request_id})
            if cur.rowcount:
                self._event(cur, "unsendable", detail=f"request {request_id}: {reason}"[:2000])
            return bool(cur.rowcount)

    def note(self, kind: str, batch_id: int | None, detail: str) -> None:
        """Append an event (anomalies, warnings) without a fence: it changes no state."""
        with self._write() as cur:
            self._event(cur, kind, batch_id=batch_id, detail=detail[:2000])

    def note_many(self, kind: str, batch_id: int | None, details: Sequence[str]) -> None:
        """Append several events of one kind in one transaction."""
        if not details:
            return
        with self._write() as cur:
            for detail in details:
                self._event(cur, kind, batch_id=batch_id, detail=detail[:2000])

    # -- scheduling figures ----------------------------------------------------------------
    def batches_created_since(self, provider: str, since: float) -> int:
        with self._read() as cur:
            cur.execute(self.q("batches_created_since"), {"provider": provider, "since": since})
            return int(scalar(cur))

    def tokens_in_flight(self, provider: str, model: str) -> int:
        with self._read() as cur:
            cur.execute(self.q("tokens_in_flight"), {"provider": provider, "model": model})
            return int(scalar(cur))

    def unfinished_count(self, queue: str | None = None) -> int:
        with self._read() as cur:
            cur.execute(self.q("unfinished_count"), {"queue": queue})
            return int(scalar(cur))

    def has_unfinished(self, queue: str | None = None) -> bool:
        """Whether any request is not yet succeeded, failed or cancelled (stops at the first)."""
        with self._read() as cur:
            cur.execute(self.q("any_unfinished"), {"queue": queue})
            return cur.fetchone() is not None


def _packing_order(c: tuple[int, int, int, int, bytes, int]) -> tuple[int, int]:
    """A candidate's place in packing order: by priority, highest first, then by id."""
    return -c[5], c[0]


class _Retry(StoreError):
    """Candidates changed under us; pick again."""


def _reason(o: Outcome) -> str | None:
    if o.error_code is None and o.error_message is None:
        return None
    return f"{o.error_code or 'error'}: {o.error_message or ''}".strip()[:1000]


def _detail(o: Outcome) -> tuple[int | None, int | None, int | None, int | None, str | None, int]:
    """(cached, 5m writes, 1h writes, reasoning, usage flag, price tier) of a result."""
    u = o.usage
    if u is None:
        flag = "missing: usage" if o.kind == "succeeded" and o.input_tokens is None else None
        return None, None, None, None, flag, o.price_tier
    return u.cached, u.write_5m, u.write_1h, u.reasoning, u.flag, o.price_tier


# The parameters of `insert_result`, in the order of a row of them: a `Succeeded` tuple's
# fields, then the request, the day, the time and the error (`_result`, `_record_outcomes`).
RESULT_PARAMS = (
    "attempt_id",
    "status_code",
    "provider_request_id",
    "body",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "usage_flag",
    "price_tier",
    "request_id",
    "day",
    "now",
    "error_code",
    "error_message",
)


def attempt_of(o: Outcome | Succeeded) -> int:
    """The attempt an outcome is of, in either of its forms."""
    return o[0] if isinstance(o, tuple) else o.attempt_id


def _result(o: Outcome, request_id: int, day: int, now: float) -> tuple[Any, ...]:
    """The `insert_result` row (RESULT_PARAMS) of a final outcome."""
    cached, write_5m, write_1h, reasoning, flag, tier = _detail(o)
    head = (o.attempt_id, o.status_code, o.provider_request_id, o.body, o.input_tokens)
    tokens = (o.output_tokens, cached, write_5m, write_1h, reasoning, flag, tier)
    return (*head, *tokens, request_id, day, now, o.error_code, o.error_message)


def monotonic_now() -> float:
    return time.time()
