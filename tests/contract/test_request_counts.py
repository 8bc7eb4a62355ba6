"""The counts the store keeps (migration 0009: requests per queue, provider, model and state,
their retries and expiries, unfinished requests per queue and minute of enqueue) equal a
fresh GROUP BY over the requests after every state-changing path, on every store.

A seeded random walk drives the store's own verbs (enqueue and its abort, a cancel of a
loading import's rows, packing, submission, every outcome, retries coming due, holds and
their release, unsendable requests, cancel, `retry` of failed requests, purge) and checks
after each step. (The test fails before 0009: there is no request_counts table.)
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from helpers import UNFINISHED, assert_counts_exact, sql
from llmbatch.importer import enqueue_requests
from llmbatch.requests import make_request
from llmbatch.store import Store
from llmbatch.store.batching import Outcome

MODELS = ("gpt-4o-mini", "gpt-4o")
QUEUES = ("a", "b")


def ids_in(db: str, *states: str) -> list[int]:
    marks = ", ".join("?" for _ in states)
    rows = sql(db, f"SELECT id FROM requests WHERE state IN ({marks}) ORDER BY id", states)
    return [int(r[0]) for r in rows]


class Walk:
    """The store's verbs, each applied to a random part of the requests it may act on."""

    def __init__(self, store: Store, db: str, rnd: random.Random) -> None:
        self.store, self.db, self.rnd = store, db, rnd
        self.n = 0
        token = store.acquire_lease("engine", "walk", 3600, time.time())
        assert token is not None
        self.token = token

    def some(self, ids: list[int], most: int = 6) -> list[int]:
        return self.rnd.sample(ids, min(len(ids), self.rnd.randint(1, most))) if ids else []

    def enqueue(self) -> None:
        queue = self.rnd.choice(QUEUES)
        reqs = []
        for _ in range(self.rnd.randint(1, 8)):
            self.n += 1
            body = {
                "model": self.rnd.choice(MODELS),
                "messages": [{"role": "user", "content": "x"}],
            }
            reqs.append(make_request(f"r{self.n}", body))
        enqueue_requests(self.store, iter(reqs), queue=queue)

    def aborted_import(self) -> None:
        """Rows loaded, then the import fails (its rows are deleted, never counted)."""
        queue = self.rnd.choice(QUEUES)
        import_id = self.store.begin_import(queue, "walk")
        self.n += 1
        row = _row(self.store, queue, import_id, f"r{self.n}")
        self.store.load_rows(import_id, queue, [row])
        assert_counts_exact(self.db, "loaded, not committed")
        self.store.abort_import(import_id, "walk")

    def cancelled_while_loading(self) -> None:
        """A cancel reaches a row of an import still loading (`cancel` names committed rows
        only, but the counts must not depend on it); the import then commits."""
        queue = self.rnd.choice(QUEUES)
        import_id = self.store.begin_import(queue, "walk")
        rows = []
        for line in (1, 2):
            self.n += 1
            rows.append(_row(self.store, queue, import_id, f"r{self.n}", line))
        self.store.load_rows(import_id, queue, rows)
        mine = sql(self.db, "SELECT id FROM requests WHERE import_id = ?", (import_id,))
        self.store.request_cancel([int(mine[0][0])], time.time())
        self.store.commit_import(import_id, lines=2, added=2, unchanged=0, rejected=0)

    def pack(self) -> None:
        for provider, endpoint, model, _n in self.store.ready_groups():
            ids = [c[0] for c in self.store.candidates(provider, endpoint, model)][:5]
            if ids:
                self.store.create_intent(
                    (provider, endpoint, model), ids, 100, 10, time.time(), self.token
                )
                return

    def submit(self) -> None:
        for b in self.store.open_batches():
            if b.state == "packed" or b.provider_batch_id is None:
                self.store.record_submitted(b.id, f"pb{b.id}", f"f{b.id}", time.time(), self.token)
                return

    def outcomes(self) -> None:
        for b in self.store.open_batches():
            waiting = self.store.unfinished_attempts(b.id)
            if b.provider_batch_id is None or not waiting:
                continue
            kinds = ("succeeded", "failed", "retry", "requeue", "cancelled")
            outs = [
                Outcome(
                    attempt_id=a,
                    kind=self.rnd.choice(kinds),
                    status_code=200,
                    body=b"{}",
                    not_before=time.time() - 1,
                    charge_expiry=self.rnd.randint(0, 1),
                )
                for a, _r, _line in waiting
            ]
            self.store.apply_outcomes(b.id, outs, time.time(), self.token)
            self.store.mark_ingested(b.id, time.time(), self.token)
            return

    def retries_due(self) -> None:
        self.store.release_due_retries(time.time(), self.token)

    def hold(self) -> None:
        self.store.hold(
            self.some(ids_in(self.db, "queued")), "over budget", time.time(), self.token
        )

    def release(self) -> None:
        self.store.release_held(time.time(), self.token)

    def unsendable(self) -> None:
        for rid in self.some(ids_in(self.db, "queued"), 1):
            self.store.fail_unsendable(rid, "too large", time.time(), self.token)

    def cancel(self) -> None:
        self.store.request_cancel(self.some(ids_in(self.db, *UNFINISHED)), time.time())

    def retry(self) -> None:
        self.store.retry_failed(self.some(ids_in(self.db, "failed")), time.time())

    def purge(self) -> None:
        self.store.purge_queue(self.rnd.choice(QUEUES))


def _row(store: Store, queue: str, import_id: int, custom_id: str, line: int = 1) -> Any:
    from llmbatch.importer import RowDefaults

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    return RowDefaults(queue, import_id, "openai", 0, None).row(
        make_request(custom_id, body), line, time.time()
    )


STEPS = (
    "enqueue",
    "enqueue",
    "aborted_import",
    "cancelled_while_loading",
    "pack",
    "pack",
    "submit",
    "submit",
    "outcomes",
    "outcomes",
    "retries_due",
    "hold",
    "release",
    "unsendable",
    "cancel",
    "retry",
    "purge",
)


@pytest.mark.parametrize("seed", [1, 2])
def test_kept_counts_equal_a_fresh_group_by_after_every_state_change(
    store: Store, db: str, seed: int
) -> None:
    rnd = random.Random(seed)
    walk = Walk(store, db, rnd)
    seen: set[str] = set()
    for i, step in enumerate([*STEPS, *(rnd.choice(STEPS) for _ in range(40))]):
        getattr(walk, step)()  # every path at least once, then at random
        assert_counts_exact(db, f"{i}: {step}")
        seen |= {str(s) for (s,) in sql(db, "SELECT DISTINCT state FROM requests")}
    assert seen >= {*UNFINISHED, "succeeded", "failed", "cancelled"}
    cancelled_loading = sql(
        db,
        "SELECT COUNT(*) FROM requests r JOIN imports i ON i.id = r.import_id "
        "WHERE i.source = 'walk' AND r.state = 'cancelled'",
    )
    assert cancelled_loading[0][0] > 0  # a cancel did reach a row of a loading import


def test_observe_reads_the_kept_counts_oldest_minute_and_deadlines(store: Store, db: str) -> None:
    now = time.time()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    enqueue_requests(
        store,
        iter([make_request(f"d{i}", body) for i in range(3)]),
        queue="late",
        deadline=now - 10,
    )
    enqueue_requests(store, iter([make_request("soon", body)]), queue="soon", deadline=now + 3600)
    enqueue_requests(store, iter([make_request("free", body)]), queue="free")
    seen = store.observe(now, now + 86400)
    assert {(g.queue, g.state, g.n) for g in seen.requests} == {
        ("late", "queued", 3),
        ("soon", "queued", 1),
        ("free", "queued", 1),
    }
    assert seen.deadlines == {"late": (3, 0), "soon": (0, 1)}
    assert set(seen.oldest) == {"late", "soon", "free"}
    for at in seen.oldest.values():
        assert now - 120 < at <= now and at % 60 == 0
