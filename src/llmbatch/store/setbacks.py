"""Store verbs for what the engine counts and learns from failures, kept in the store (a cron
`run` is a new process each time): a batch's back-off and its counters, a group's
back-off."""

from __future__ import annotations

from typing import Any

from llmbatch.store.rows import scalar
from llmbatch.store.sqlfiles import as_list
from llmbatch.store.types import (
    GroupBackoff as GroupBackoff,
)


class SetbackOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_event`, `_fence`."""

    _write: Any
    _read: Any
    q: Any
    _event: Any
    _fence: Any

    def defer(self, batch_id: int, not_before: float, token: int) -> None:
        """Leave a batch alone until `not_before` (a wait, not a failure: nothing is counted)."""
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(self.q("defer_batch"), {"id": batch_id, "not_before": not_before})

    def count_setback(
        self,
        batch_id: int,
        counter: str,
        not_before: float | None,
        now: float,
        token: int,
        kind: str,
        detail: str,
    ) -> None:
        """Add one to a batch's `setbacks`, `download_tries` or `gone_checks`, set when it may
        be worked on again, and say why in the event log, in one transaction."""
        if counter not in ("setbacks", "download_tries", "gone_checks"):
            raise ValueError(f"no batch counter {counter!r}")
        with self._write() as cur:
            self._fence(cur, token, f"batch:{batch_id}")
            cur.execute(
                self.q(f"count_{counter}"), {"id": batch_id, "not_before": not_before, "now": now}
            )
            self._event(cur, kind, batch_id=batch_id, detail=detail[:2000])

    # -- what batch-level failures taught, per packing group -------------------------------
    def group_backoffs(self) -> list[GroupBackoff]:
        with self._read() as cur:
            cur.execute(self.q("group_backoffs"))
            return [
                GroupBackoff(
                    group=(str(p), str(e), str(m)),
                    strikes=int(n),
                    cap=None if c is None else int(c),
                    quota=None if q is None else int(q),
                    not_before=float(t),
                )
                for p, e, m, n, c, q, t in cur.fetchall()
            ]

    def set_group_backoff(self, backoff: GroupBackoff, token: int) -> None:
        provider, endpoint, model = backoff.group
        with self._write() as cur:
            self._fence(cur, token, "*")
            params = {
                "provider": provider,
                "endpoint": endpoint,
                "model": model,
                "strikes": backoff.strikes,
                "cap": backoff.cap,
                "quota": backoff.quota,
                "not_before": backoff.not_before,
            }
            cur.execute(self.q("set_group_backoff"), params)

    def clear_group_backoff(self, group: tuple[str, str, str], token: int) -> None:
        """The group is healthy again (a batch of it completed): full-size batches."""
        provider, endpoint, model = group
        with self._write() as cur:
            self._fence(cur, token, "*")
            cur.execute(
                self.q("clear_group_backoff"),
                {"provider": provider, "endpoint": endpoint, "model": model},
            )

    # -- the schedule: when each batch is polled next, when the store-wide steps run ------
    def schedule_polls(self, batch_ids: list[int], at: float, every: float, token: int) -> None:
        """Poll these batches next at `at`, then every `every` seconds (doubling while
        nothing moves): one statement for the batches of a poll, not one per batch."""
        if not batch_ids:
            return
        with self._write() as cur:
            self._fence(cur, token, "*")
            params = {"ids": as_list(batch_ids), "at": at, "every": every}
            cur.execute(self.q("schedule_polls"), params)

    def next_run(self, name: str) -> float:
        """When the store-wide step `name` (`sweep`) runs next (0.0: it never ran)."""
        with self._read() as cur:
            cur.execute(self.q("next_run"), {"name": name})
            at = scalar(cur)
        return 0.0 if at is None else float(at)

    def set_next_run(self, name: str, at: float, token: int) -> None:
        with self._write() as cur:
            self._fence(cur, token, "*")
            cur.execute(self.q("set_next_run"), {"name": name, "at": at})
