"""Store verbs of the workers that share a store's work (issue 27): their rows and tokens,
and the claims each one holds (docs/deploy.md).

A worker draws a token once (`workers.token`); every lease and claim it holds carries it. A
claim is a lease named `batch:<id>` (poll, download, ingest, cancel, finish submitting that
batch) or `group:<key>` (pack and submit that packing group); the store-wide `engine` lease
is held by one worker at a time for what concerns the whole store (retries, the sweep, held
requests) and stands for a claim on whatever nobody claims. Every state-changing write is
fenced by the claim on what it changes (`BatchingOps._fence`): a worker that lost a claim
(paused past it, taken over) stops acting on that batch at its next write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmbatch.store.rows import by_name, column, named, scalar
from llmbatch.store.sqlfiles import as_list


def group_claim(group: tuple[str, str, str | None], queue: str | None = None) -> str:
    """The claim on packing a group (provider, endpoint, model or None for several), for one
    queue or for all of them."""
    provider, endpoint, model = group
    return f"group:{queue or '*'}|{provider}|{endpoint}|{model or '*'}"


@dataclass(frozen=True, slots=True)
class Claim:
    name: str
    holder: str
    token: int
    expires_at: float
    since: float | None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker sharing the store's work, and what it has done since it started."""

    token: int
    holder: str
    queues: tuple[str, ...] | None
    started_at: float
    seen_at: float
    packed: int = 0
    submitted: int = 0
    polled: int = 0
    ingested: int = 0
    outcomes: int = 0


class ClaimOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`."""

    _write: Any
    _read: Any
    q: Any

    def register_worker(self, holder: str, queues: Sequence[str] | None, now: float) -> int:
        """This worker's token (drawn the first time), with the queues it serves."""
        with self._write() as cur:
            cur.execute(self.q("worker_token"), {"holder": holder, "queues": None, "now": now})
            token = int(scalar(cur))
            value = None if queues is None else as_list(sorted(queues))
            cur.execute(self.q("set_worker_queues"), {"token": token, "queues": value})
        return token

    def worker_seen(self, token: int, now: float, done: dict[str, int] | None = None) -> None:
        """The worker ticked at `now`, and did this much more (its per-worker figures)."""
        done = done or {}
        kinds = ("packed", "submitted", "polled", "ingested", "outcomes")
        params = {k: int(done.get(k, 0)) for k in kinds}
        with self._write() as cur:
            cur.execute(self.q("worker_seen"), {"token": token, "now": now, **params})

    def workers(self, since: float) -> list[WorkerRow]:
        """Workers seen since `since`, oldest token first."""
        with self._read() as cur:
            cur.execute(self.q("workers_seen_since"), {"since": since})
            rows = by_name(cur)
        kinds = ("packed", "submitted", "polled", "ingested", "outcomes")
        return [
            WorkerRow(
                int(r["token"]),
                str(r["holder"]),
                None if r["queues"] is None else tuple(orjson.loads(r["queues"])),
                float(r["started_at"]),
                float(r["seen_at"]),
                *(int(r[k]) for k in kinds),
            )
            for r in rows
        ]

    def forget_workers(self, before: float) -> None:
        with self._write() as cur:
            cur.execute(self.q("forget_workers"), {"before": before})

    def renew_claims(self, holder: str, token: int, ttl: float, now: float) -> set[str]:
        """Renew every lease and claim this worker holds (one statement); the names renewed.
        One it lost to another worker is not among them."""
        with self._write() as cur:
            params = {"holder": holder, "token": token, "expires_at": now + ttl}
            cur.execute(self.q("renew_claims"), params)
            return {str(n) for n in column(cur)}

    def claims(self) -> list[Claim]:
        """Every lease and claim, live or not."""
        with self._read() as cur:
            cur.execute(self.q("all_claims"))
            return named(Claim, cur)

    def release_claims(self, holder: str) -> None:
        """Give up every claim of a worker stopping (or found dead): the others take its work
        at once, and no longer count it when they share the work out."""
        with self._write() as cur:
            cur.execute(self.q("release_claims"), {"holder": holder})
            cur.execute(self.q("worker_gone"), {"holder": holder})

    def open_batch_queues(self) -> dict[int, str | None]:
        """The queue of each open batch packed for one queue (None: several)."""
        with self._read() as cur:
            cur.execute(self.q("open_batch_queues"))
            return {
                int(r["id"]): (None if r["queue"] is None else str(r["queue"]))
                for r in by_name(cur)
            }

    def _claim_new(self, cur: Any, name: str, holder: str, token: int, now: float) -> None:
        """Claim something made in this transaction for the worker making it."""
        cur.execute(
            self.q("claim_new"), {"name": name, "holder": holder, "token": token, "now": now}
        )
