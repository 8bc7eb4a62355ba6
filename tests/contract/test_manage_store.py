"""Store verbs a person uses to look around and tidy up, on every store: the results export
(one line per finished request), lists of queues and batches, progress at the provider,
retry and purge; and refusing to create a store a read command names by mistake."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import add_result, request_id, sql
from llmbatch.errors import NotFound
from llmbatch.importer import enqueue_requests
from llmbatch.providers.base import BatchStatus
from llmbatch.report import build
from llmbatch.requests import make_request
from llmbatch.store import Store, open_store
from llmbatch.store.batching import Outcome

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GROUP = ("openai", "/v1/chat/completions", "gpt-4o-mini")


def _enqueue(store: Store, queue: str, ids: list[str]) -> None:
    enqueue_requests(store, (make_request(i, BODY) for i in ids), queue=queue)


def _submitted(store: Store, queue_ids: list[int], now: float) -> tuple[int, int]:
    """An intent of these requests, created at the provider; (batch id, lease token)."""
    token = store.acquire_lease("engine", "me", 600, now)
    assert token is not None
    batch = store.create_intent(GROUP, queue_ids, 10, 10, now, token)
    assert batch is not None
    store.record_submitted(batch, f"batch_{batch}", f"file_{batch}", now, token)
    return batch, token


def _ids(store: Store, queue: str, cids: list[str]) -> list[int]:
    return [d["id"] for c in cids for d in store.request_detail(c, queue)]


def test_every_finished_request_has_one_export_line_cancelled_and_failed_included(
    store: Store, db: str
) -> None:
    _enqueue(store, "q", ["ok", "bad", "waiting", "in-batch", "huge", "running"])
    now = time.time()
    batch, token = _submitted(store, _ids(store, "q", ["in-batch", "ok", "bad", "running"]), now)
    attempts = {a: r for a, r, _line in store.unfinished_attempts(batch)}
    rid = {v: k for k, v in attempts.items()}
    ok, bad = request_id(db, "ok", "q"), request_id(db, "bad", "q")
    store.apply_outcomes(
        batch,
        [
            Outcome(
                rid[ok],
                "succeeded",
                200,
                "req_1",
                b'{"choices":[]}',
                input_tokens=5,
                output_tokens=1,
            ),
            Outcome(rid[bad], "failed", 400, "req_2", b'{"error":{}}', "invalid_request", "no"),
        ],
        now,
        token,
    )
    # cancelled while waiting (no batch), and failed as too large for any batch (no batch)
    store.request_cancel(_ids(store, "q", ["waiting"]), now)
    assert store.fail_unsendable(request_id(db, "huge", "q"), "too large", now, token)
    # cancelled in its batch
    store.apply_outcomes(
        batch,
        [Outcome(rid[request_id(db, "in-batch", "q")], "cancelled", error_code="batch_cancelled")],
        now,
        token,
    )
    rows = list(store.iter_results(queue="q"))
    assert [(r.custom_id, r.state) for r in rows] == [
        ("ok", "succeeded"),
        ("bad", "failed"),
        ("waiting", "cancelled"),
        ("huge", "failed"),
        ("in-batch", "cancelled"),
    ]  # "running" is not finished: no line
    assert len({r.attempt_id for r in rows}) == 5 and all(r.attempt_id for r in rows)
    assert next(r for r in rows if r.custom_id == "huge").error_code == "too_large"
    assert [r.custom_id for r in store.iter_results(queue="q", state="cancelled")] == [
        "waiting",
        "in-batch",
    ]
    # input order is enqueue order
    assert [r.custom_id for r in store.iter_results(queue="q", order="input", page=2)] == [
        "ok",
        "bad",
        "waiting",
        "in-batch",
        "huge",
    ]
    # what never reached a provider costs nothing: the report counts the two it answered, from
    # the running totals and from the results alike
    [line] = build(store, group_by=("queue",))
    assert (line.requests, line.succeeded, line.failed) == (2, 1, 1)
    [raw] = build(store, group_by=("queue",), since=datetime.fromtimestamp(1, UTC))
    assert raw.record() == line.record()


def test_an_export_reads_up_to_its_snapshot_and_a_retried_request_once(
    store: Store, db: str
) -> None:
    _enqueue(store, "q", ["a", "b", "c"])
    add_result(db, "a", queue="q", succeeded=False)
    add_result(db, "b", queue="q")
    high = store.results_high()
    add_result(db, "c", queue="q")
    assert [r.custom_id for r in store.iter_results(queue="q", upto=high)] == ["a", "b"]
    assert [r.custom_id for r in store.iter_results(queue="q", after=high)] == ["c"]
    # "a" sent again: not finished, so no line; then its newest result is its only line
    assert store.retry_failed(_ids(store, "q", ["a"]), time.time()) == 1
    assert [r.custom_id for r in store.iter_results(queue="q")] == ["b", "c"]
    add_result(db, "a", queue="q")
    rows = list(store.iter_results(queue="q"))
    assert [(r.custom_id, r.state) for r in rows] == [
        ("b", "succeeded"),
        ("c", "succeeded"),
        ("a", "succeeded"),
    ]
    assert [r.custom_id for r in store.iter_results(queue="q", order="input")] == ["a", "b", "c"]


def test_retry_moves_only_failed_requests_with_fresh_attempts(store: Store, db: str) -> None:
    _enqueue(store, "q", ["bad", "good", "waiting"])
    add_result(db, "bad", queue="q", succeeded=False)
    add_result(db, "good", queue="q")
    # failed after its batch was refused max_batch_rejections times: a retry starts it afresh
    sql(db, "UPDATE requests SET rejections = 3 WHERE custom_id = 'bad'")
    scope = _ids(store, "q", ["bad", "good", "waiting"])
    assert store.retry_failed(scope, time.time(), dry_run=True) == 1
    assert {c.state: c.n for c in store.counts("q")} == {"failed": 1, "succeeded": 1, "queued": 1}
    assert store.retry_failed(scope, time.time()) == 1
    [(state, attempts, rejections, reason)] = sql(
        db, "SELECT state, attempts, rejections, reason FROM requests WHERE custom_id = 'bad'"
    )
    assert (state, attempts, rejections) == ("queued", 0, 0) and "retry" in reason
    assert store.retry_failed(scope, time.time()) == 0


def test_queues_and_batches_are_listed_and_filtered(store: Store) -> None:
    _enqueue(store, "alpha", ["a1", "a2"])
    _enqueue(store, "beta", ["b1"])
    now = time.time()
    batch, _token = _submitted(store, _ids(store, "alpha", ["a1"]), now)
    queues = {q.name: q for q in store.queues()}
    assert queues["alpha"].states == {"submitted": 1, "queued": 1}
    assert queues["alpha"].unfinished == 2 and queues["beta"].total == 1
    assert [b.id for b in store.batches()] == [batch]
    assert [b.id for b in store.batches("alpha", open_only=True)] == [batch]
    assert store.batches("beta") == []
    assert [b["id"] for b in store.batch_overview(5, "beta")] == []
    assert [b["id"] for b in store.batch_overview(5, "alpha")] == [batch]


def test_progress_is_what_the_provider_counts_done_and_what_is_read_back(
    store: Store, db: str
) -> None:
    _enqueue(store, "q", [f"r{i}" for i in range(10)])
    now = time.time()
    batch, token = _submitted(store, _ids(store, "q", [f"r{i}" for i in range(10)]), now)
    status = BatchStatus(f"batch_{batch}", "in_progress", "in_progress", 10, 4, 1)
    store.update_batch(batch, status, now + 60, token)
    [p] = store.batch_progress("q")
    assert (p.requests, p.done_at_provider, p.read_back, p.in_scope) == (10, 5, 0, 10)
    assert p.seen_at == pytest.approx(now + 60)
    assert store.batch_progress("other") == []


def test_purge_deletes_a_finished_queue_and_keeps_its_costs(store: Store, db: str) -> None:
    _enqueue(store, "old", ["o1", "o2"])
    _enqueue(store, "live", ["l1"])
    now = time.time()
    batch, token = _submitted(store, _ids(store, "old", ["o1", "o2"]), now)
    outs = [
        Outcome(a, "succeeded", 200, "req", b"{}", input_tokens=10, output_tokens=2)
        for a, _r, _l in store.unfinished_attempts(batch)
    ]
    assert store.purge_queue("old").unfinished == 2  # in flight: refused
    store.apply_outcomes(batch, outs, now, token)
    reading = store.purge_queue("old", dry_run=True)
    assert reading.reading_back == 2 and not reading.done  # its batch is not read back yet
    store.mark_ingested(batch, now, token)
    before = [ln.record() for ln in build(store)]
    plan = store.purge_queue("old", dry_run=True)
    assert (plan.requests, plan.results, plan.attempts, plan.done) == (2, 2, 2, False)
    assert store.counts("old")
    plan = store.purge_queue("old")
    assert plan.done and store.counts("old") == [] and list(store.iter_results("old")) == []
    assert [ln.record() for ln in build(store)] == before  # the report reads the same
    assert {q.name: q.total for q in store.queues()} == {"live": 1, "old": 0}  # listed as purged
    assert store.has_requests("live") and not store.has_requests("old")
    assert sql(db, "SELECT COUNT(*) FROM requests WHERE queue = 'live'") == [(1,)]
    # the purged requests' bodies went with them; the live one's stayed
    assert sql(db, "SELECT COUNT(*) FROM request_bodies") == [(1,)]


def test_a_read_that_names_no_store_is_not_found_and_creates_nothing(
    tmp_path: Path, empty_pg_dsn: str
) -> None:
    with pytest.raises(NotFound, match="no llmbatch database at"):
        open_store(str(tmp_path / "typo.db"), create=False)
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(NotFound, match="holds no llmbatch data"):
        open_store(empty_pg_dsn, create=False)
    assert sql(empty_pg_dsn, "SELECT to_regclass('meta') IS NULL") == [(True,)]
