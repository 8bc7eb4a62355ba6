"""Store verbs for taking things back and taking things in: `llmbatch cancel`, and adopting
provider batches tagged with our store id that the store never recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmbatch.errors import InputError
from llmbatch.store.rows import by_name, column, scalar
from llmbatch.store.sqlfiles import as_list
from llmbatch.store.types import (
    CancelPlan as CancelPlan,
)

WAITING = ("queued", "retry_wait", "held")  # what `cancel` ends at once


def check_batch_ref(cur: Any, query: str, ref: str) -> None:
    """Refuse a batch named by a provider batch id that is at several providers (an id is
    unique at its provider only, migration 0014), unless it is also our own batch number."""
    cur.execute(query, {"ref": ref})
    rows = by_name(cur)
    if any(str(r["id"]) == ref for r in rows) or len(rows) < 2:
        return
    named = ", ".join(f"{r['id']} ({r['provider']})" for r in rows)
    raise InputError(
        f"batch {ref!r} is the provider batch id of our batches {named}: "
        "name one by its number (`llmbatch batches` lists them)"
    )


class RecoveryOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_event`, `_fence`."""

    _write: Any
    _read: Any
    q: Any
    _event: Any
    _fence: Any
    _charge_duplicate: Any
    _local_outcomes: Any

    # -- cancelling ------------------------------------------------------------------------
    def request_cancel(self, request_ids: Sequence[int], now: float) -> CancelPlan:
        """Cancel what waits; mark in-flight batches whose every request is in scope.

        Requests sharing a batch with requests outside the scope run on: a provider batch
        is cancelled whole or not at all.
        """
        plan = CancelPlan()
        ids = list(request_ids)
        with self._write() as cur:
            # a result for each, as for every request that ends: the export lists it
            self._local_outcomes(
                cur, ids, WAITING, "cancelled", "cancelled", "cancelled by llmbatch cancel", now
            )
            scope = as_list(ids)
            cur.execute(self.q("cancel_waiting"), {"ids": scope, "now": now})
            plan.cancelled += int(cur.rowcount)
            cur.execute(self.q("batch_scope_counts"), {"ids": scope})
            in_scope = {int(batch_id): int(n) for batch_id, n in cur.fetchall()}
            for batch_id, n in in_scope.items():
                cur.execute(self.q("unfinished_in_batch"), {"id": batch_id})
                unfinished = int(scalar(cur))
                if n == unfinished:
                    cur.execute(self.q("request_batch_cancel"), {"id": batch_id, "now": now})
                    plan.batches.append(batch_id)
                    plan.in_batches += n
                    self._event(cur, "cancel_requested", batch_id=batch_id, detail=f"{n} requests")
                else:
                    plan.left_running += n
        return plan

    def mark_cancel_sent(self, batch_id: int, now: float, token: int) -> None:
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(self.q("mark_cancel_sent"), {"id": batch_id, "now": now})
            self._event(cur, "cancel_sent", batch_id=batch_id)

    def scope_request_ids(
        self, queue: str | None, custom_ids: Sequence[str], batch: str | None
    ) -> list[int]:
        """Ids of the requests a `cancel` names: a queue, custom ids (in a queue), a batch."""
        params = {"queue": queue, "custom_ids": as_list(custom_ids), "batch": batch}
        # the query that starts from the narrowest of the filters (each an index range)
        name = "scope_named" if custom_ids else "scope_of_batch" if batch else "scope_of_queue"
        with self._read() as cur:
            if batch is not None:
                check_batch_ref(cur, self.q("batches_named"), batch)
            cur.execute(self.q(name), params)
            return [int(i) for i in column(cur)]

    # -- adoption ----------------------------------------------------------------------------
    def known_ids(self, provider: str) -> tuple[set[str], set[str]]:
        """(provider batch ids, input file ids) this store has recorded for a provider."""
        with self._read() as cur:
            cur.execute(self.q("known_batch_ids"), {"provider": provider})
            batches = {str(v) for v in column(cur)}
            cur.execute(self.q("known_input_files"), {"provider": provider})
            files = {str(v) for v in column(cur)}
        return batches, files

    def file_owners(self, provider: str) -> dict[str, int]:
        """Input file id -> the intent whose upload it is, of the batches this store sent
        from an upload at a provider (a batch made from one is that intent's)."""
        with self._read() as cur:
            cur.execute(self.q("file_owners"), {"provider": provider})
            return {str(r["input_file_id"]): int(r["intent"]) for r in by_name(cur)}

    def attempt_span(self, batch_id: int) -> tuple[int, int] | None:
        """The lowest and highest attempt id of a batch row (an intent), if it has any."""
        with self._read() as cur:
            cur.execute(self.q("attempt_span"), {"id": batch_id})
            span = by_name(cur)
        if not span or span[0]["low"] is None:
            return None
        return int(span[0]["low"]), int(span[0]["high"])

    def batch_of_attempt(self, attempt_id: int) -> int | None:
        """The batch row (intent) an attempt was packed into, if the attempt exists."""
        with self._read() as cur:
            cur.execute(self.q("batch_of_attempt"), {"id": attempt_id})
            batch_id = scalar(cur)
        return None if batch_id is None else int(batch_id)

    def adopt_batch(
        self, provider: str, status: Any, intent_id: int | None, now: float, token: int
    ) -> int | None:
        """Record a provider batch tagged with our store id that the store did not know, so it
        is polled and ingested like any other; its attempts are those of `intent_id`."""
        with self._write(durable=True) as cur:
            self._fence(cur, token)
            endpoint = model = nonce = None
            if intent_id is not None:
                cur.execute(self.q("intent_of_adopted"), {"id": intent_id})
                intent = by_name(cur)
                if not intent:
                    intent_id = None
                else:  # its lines carry the intent's nonce
                    endpoint, model, nonce = (intent[0][k] for k in ("endpoint", "model", "nonce"))
            cur.execute(
                self.q("adopt_batch"),
                {
                    "provider": provider,
                    "endpoint": endpoint or "?",
                    "model": model,
                    "state": status.state,
                    "provider_batch_id": status.provider_batch_id,
                    "input_file_id": status.input_file_id,
                    "output_file_id": status.output_file_id,
                    "error_file_id": status.error_file_id,
                    "request_count": status.total,
                    "intent_id": intent_id,
                    "now": now,
                    "nonce": nonce,
                },
            )
            if cur.rowcount != 1:
                return None
            found = {"provider_batch_id": status.provider_batch_id, "provider": provider}
            cur.execute(self.q("batch_by_provider_id"), found)
            batch_id = int(scalar(cur))
            if intent_id is not None:  # a duplicate: no budget planned it, it is charged now
                self._charge_duplicate(cur, batch_id, intent_id, now)
            self._event(
                cur,
                "adopted",
                batch_id=batch_id,
                detail=f"{status.provider_batch_id} (for intent {intent_id})",
            )
            return batch_id
