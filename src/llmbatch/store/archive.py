"""Store verbs of archives and webhooks (migration 0008, queries in `sql/archive.sql`).

An archive row is added for a batch before it is marked ingested, and written out by the
engine's archive step only once the batch is ingested: a crash between the two leaves a row
that waits for the batch to be ingested again, never a batch without its archive. The outbox
works the same way for the webhook events a batch's ingest raises. Both keep their tries,
their next time and their last error here, so a cron `run` (a new process each time) carries
on where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace
from typing import Any

from llmbatch.errors import StoreError
from llmbatch.store.rows import by_name, scalar
from llmbatch.store.types import (
    DueArchive as DueArchive,
)
from llmbatch.store.types import (
    OutboxEvent as OutboxEvent,
)
from llmbatch.store.types import (
    QueueState as QueueState,
)
from llmbatch.store.types import ResultRow

_RESULT_FIELDS = tuple(f.name for f in fields(ResultRow))
PAGE = 5000


class ArchiveOps:
    """Mixed into SqlStore; relies on its `_write`, `_read` and `q`."""

    _write: Any
    _read: Any
    q: Any

    # -- archives --------------------------------------------------------------------------
    def archive_add(self, batch_id: int, now: float) -> None:
        """Ask for a batch's files to be archived (once; asking again is harmless)."""
        with self._write(durable=True) as cur:
            cur.execute(self.q("archive_add"), {"batch_id": batch_id, "now": now})

    def archive_due(self, now: float, n: int = 20) -> list[DueArchive]:
        """Archives to write now, of batches already ingested."""
        with self._read() as cur:
            cur.execute(self.q("archive_due"), {"now": now, "n": n})
            return [DueArchive(int(b), int(t)) for b, t in cur.fetchall()]

    def archive_done(self, batch_id: int, now: float, location: str, from_store: bool) -> None:
        with self._write(durable=True) as cur:
            cur.execute(
                self.q("archive_done"),
                {
                    "batch_id": batch_id,
                    "now": now,
                    "location": location,
                    "from_store": int(from_store),
                },
            )

    def archive_failed(self, batch_id: int, not_before: float, error: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.q("archive_failed"),
                {"batch_id": batch_id, "not_before": not_before, "error": error[:2000]},
            )

    def archive_batch(self, batch_id: int) -> dict[str, Any] | None:
        """What an archive or a webhook needs of a batch (ids, files, counts)."""
        with self._read() as cur:
            cur.execute(self.q("archive_batch"), {"id": batch_id})
            rows = by_name(cur)
            return rows[0] if rows else None

    def archive_waiting(self, n: int = 20) -> list[tuple[int, int, float, str | None]]:
        """(batch id, tries, next try, last error) of archives not yet written."""
        with self._read() as cur:
            cur.execute(self.q("archive_waiting"), {"n": n})
            return [(int(b), int(t), float(nb), e) for b, t, nb, e in cur.fetchall()]

    def batch_attempt_map(self, batch_id: int) -> Iterator[tuple[int, str, str]]:
        """(attempt id, queue, custom_id) of every attempt a batch carried, streamed."""
        after = 0
        while True:
            with self._read() as cur:
                cur.execute(
                    self.q("batch_attempt_map"), {"batch_id": batch_id, "after": after, "n": PAGE}
                )
                rows = cur.fetchall()
            for a, queue, cid in rows:
                yield int(a), str(queue), str(cid)
                after = int(a)
            if len(rows) < PAGE:
                return

    def batch_custom_ids(self, batch_id: int, first: int, last: int) -> list[tuple[int, str]]:
        """(attempt id, custom_id) of the attempts a batch carried from `first` to `last`."""
        with self._read() as cur:
            cur.execute(
                self.q("batch_custom_ids"), {"batch_id": batch_id, "first": first, "last": last}
            )
            return [(int(a), str(cid)) for a, cid in cur.fetchall()]

    def batch_result_rows(self, batch_id: int) -> Iterator[ResultRow]:
        """The results recorded for a batch's attempts, in attempt order, streamed."""
        # The query's columns are ResultRow's fields in order, checked by name on each page:
        # rows are built positionally (a dict per row cost archiving a third of its time).
        after = 0
        while True:
            with self._read() as cur:
                cur.execute(
                    self.q("batch_result_rows"), {"batch_id": batch_id, "after": after, "n": PAGE}
                )
                if tuple(d[0] for d in cur.description) != _RESULT_FIELDS:
                    raise StoreError("batch_result_rows: its columns are not ResultRow's fields")
                rows = cur.fetchall()
            for row in rows:
                result = ResultRow(*row)
                if result.body is not None and type(result.body) is not bytes:
                    result = replace(result, body=bytes(result.body))
                yield result
                after = result.attempt_id
            if len(rows) < PAGE:
                return

    def batch_result_count(self, batch_id: int) -> int:
        """How many results are recorded for a batch's attempts."""
        with self._read() as cur:
            cur.execute(self.q("batch_result_count"), {"batch_id": batch_id})
            return int(scalar(cur))

    def batch_queues(self, batch_id: int) -> list[QueueState]:
        with self._read() as cur:
            cur.execute(self.q("batch_queues"), {"batch_id": batch_id})
            return [QueueState(str(q), int(h), int(u)) for q, h, u in cur.fetchall()]

    def queue_summary(self, queue: str) -> dict[str, int]:
        """A queue's requests by state."""
        with self._read() as cur:
            cur.execute(self.q("queue_summary"), {"queue": queue})
            return {str(s): int(n) for s, n, _h in cur.fetchall()}

    # -- the webhook outbox ----------------------------------------------------------------
    def outbox_add(
        self, event_id: str, kind: str, batch_id: int | None, payload: bytes, now: float
    ) -> None:
        """Add an event to deliver (once per event id: adding it again is harmless)."""
        with self._write(durable=True) as cur:
            cur.execute(
                self.q("outbox_add"),
                {
                    "event_id": event_id,
                    "kind": kind,
                    "batch_id": batch_id,
                    "payload": payload,
                    "now": now,
                },
            )

    def outbox_due(self, now: float, n: int = 50) -> list[OutboxEvent]:
        with self._read() as cur:
            cur.execute(self.q("outbox_due"), {"now": now, "n": n})
            return [
                OutboxEvent(int(i), str(e), str(k), bytes(p), int(t), float(c))
                for i, e, k, p, t, c in cur.fetchall()
            ]

    def outbox_delivered(self, id: int, now: float) -> None:
        with self._write(durable=True) as cur:
            cur.execute(self.q("outbox_delivered"), {"id": id, "now": now})

    def outbox_failed(self, id: int, not_before: float, error: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.q("outbox_failed"), {"id": id, "not_before": not_before, "error": error[:2000]}
            )

    def outbox_waiting(self) -> tuple[int, float | None]:
        """How many events are not delivered yet, and the soonest next try."""
        with self._read() as cur:
            cur.execute(self.q("outbox_waiting"))
            n, soonest = cur.fetchone()
            return int(n), None if soonest is None else float(soonest)
