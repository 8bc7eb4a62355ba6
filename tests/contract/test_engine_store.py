"""Engine verbs of the Store protocol, on every store: packing order, intents, leases, cancel."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from helpers import CHAT, is_pg, sql
from llmbatch.importer import enqueue_requests
from llmbatch.packing import cut
from llmbatch.providers.base import Limits
from llmbatch.requests import make_request
from llmbatch.store import Store
from llmbatch.submitter import Spool

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _enqueue(store: Store, queue: str, ids: list[str], priority: int = 0) -> None:
    enqueue_requests(store, (make_request(i, BODY) for i in ids), queue=queue, priority=priority)


def test_candidates_stream_in_packing_order_across_pages_and_queues(store: Store) -> None:
    named = {"a": ([f"a{i}" for i in range(7)], 0), "b": ([f"b{i}" for i in range(6)], 5),
             "c": ([f"c{i}" for i in range(4)], 1)}  # fmt: skip
    for queue, (ids, priority) in named.items():
        _enqueue(store, queue, ids, priority)
    priority_of = {
        d["id"]: d["priority"]
        for q, (ids, _p) in named.items()
        for cid in ids
        for d in store.request_detail(cid, q)
    }
    got = [
        rid for rid, *_ in store.candidates("openai", "/v1/chat/completions", "gpt-4o-mini", page=3)
    ]
    assert sorted(got) == sorted(priority_of)  # every ready request, once, across page boundaries
    assert got == sorted(
        got, key=lambda r: (-priority_of[r], r)
    )  # priority first, then enqueue order


def test_an_intents_lines_come_in_line_order_across_pages_and_past_a_gap(
    store: Store, db: str
) -> None:
    """batch_lines reads an intent page by page as ranges of lines: every line once, in
    order, and a gap wider than a page (lines are 1..n as packed; a hand-edited store) is
    skipped, not taken for the end."""
    _enqueue(store, "q", [f"r{i}" for i in range(9)])
    now = time.time()
    token = store.acquire_lease("engine", "me", 60, now)
    assert token is not None
    ids = [rid for rid, *_ in store.candidates("openai", "/v1/chat/completions", "gpt-4o-mini")]
    batch = store.create_intent(
        ("openai", "/v1/chat/completions", "gpt-4o-mini"), ids, 9, 9, now, token
    )
    assert batch is not None
    attempt_of = {line: a for a, _r, line in store.unfinished_attempts(batch)}
    assert [a for a, _e, _b in store.batch_lines(batch, page=2)] == [
        attempt_of[n] for n in range(1, 10)
    ]
    sql(db, "UPDATE attempts SET line = line + 5 WHERE batch_id = ? AND line > 4", (batch,))
    assert [a for a, _e, _b in store.batch_lines(batch, page=2)] == [
        attempt_of[n] for n in range(1, 10)
    ]


def test_an_intent_takes_requests_once_and_leases_fence_writes(store: Store) -> None:
    _enqueue(store, "q", [f"r{i}" for i in range(5)])
    now = time.time()
    token = store.acquire_lease("engine", "me", 60, now)
    assert token is not None
    assert store.acquire_lease("engine", "other", 60, now) is None
    ids = [rid for rid, *_ in store.candidates("openai", "/v1/chat/completions", "gpt-4o-mini")]
    batch = store.create_intent(
        ("openai", "/v1/chat/completions", "gpt-4o-mini"), ids[:3], 10, 10, now, token
    )
    assert batch is not None
    assert len(list(store.candidates("openai", "/v1/chat/completions", "gpt-4o-mini"))) == 2
    assert [line for _a, _r, line in store.unfinished_attempts(batch)] == [1, 2, 3]
    # another worker takes over after expiry: the old token can no longer write
    assert store.acquire_lease("engine", "other", 60, now + 120) == token + 1
    try:
        store.mark("upload", batch, now, token)
    except Exception as exc:  # LeaseLost
        assert "taken over" in str(exc)
    else:
        raise AssertionError("a stale token wrote")


def test_cancel_marks_only_batches_wholly_in_scope(store: Store) -> None:
    _enqueue(store, "q", [f"r{i}" for i in range(6)])
    now = time.time()
    token = store.acquire_lease("engine", "me", 60, now)
    assert token is not None
    ids = [rid for rid, *_ in store.candidates("openai", "/v1/chat/completions", "gpt-4o-mini")]
    b1 = store.create_intent(
        ("openai", "/v1/chat/completions", "gpt-4o-mini"), ids[:2], 1, 1, now, token
    )
    store.create_intent(
        ("openai", "/v1/chat/completions", "gpt-4o-mini"), ids[2:4], 1, 1, now, token
    )
    scope = store.scope_request_ids("q", ["r0", "r1", "r2", "r4"], None)
    plan = store.request_cancel(scope, now)
    assert (plan.cancelled, plan.batches, plan.in_batches, plan.left_running) == (1, [b1], 2, 1)
    states = {c.state: c.n for c in store.counts("q")}
    assert states == {"cancelled": 1, "packed": 4, "queued": 1}


def test_running_cost_totals_equal_the_sums_over_every_result(store: Store) -> None:
    from llmbatch.store.batching import Outcome

    models = {"gpt-4o-mini": [f"m{i}" for i in range(6)], "gpt-4o": [f"o{i}" for i in range(3)]}
    for model, custom_ids in models.items():
        body = {**BODY, "model": model}
        enqueue_requests(store, (make_request(i, body) for i in custom_ids), queue="q")
    now = 86400.0 * 20000 + 3600  # 1h into a UTC day
    # the fence checks a lease against the real clock: this one runs long past `now`
    token = store.acquire_lease("engine", "me", 10.0**10, now)
    assert token is not None
    for model in models:
        group = ("openai", "/v1/chat/completions", model)
        ids = [rid for rid, *_ in store.candidates(*group)]
        batch = store.create_intent(group, ids, 10, 10, now, token)
        assert batch is not None
        attempts = [a for a, _r, _line in store.unfinished_attempts(batch)]
        outcomes = [
            Outcome(a, "succeeded", 200, "req", b"{}", input_tokens=10 * k, output_tokens=k,
                    price_tier=k % 2)
            if k % 3 else Outcome(a, "failed", error_code="server_error")
            for k, a in enumerate(attempts, 1)
        ]  # fmt: skip
        # two ingests of one batch (the second adds to the first's totals), then a replay
        assert store.apply_outcomes(batch, outcomes[:2], now, token) == 2
        assert store.apply_outcomes(batch, outcomes[2:], now + 86400, token) == len(outcomes) - 2
        assert store.apply_outcomes(batch, outcomes, now + 86400, token) == 0
    far = 86400.0 * 10**7

    def groups(since: float) -> list[tuple[Any, ...]]:
        return sorted(dataclasses.astuple(g) for g in store.cost_groups(since, far))

    from_totals = groups(0.0)  # whole UTC days: the running totals
    assert from_totals == groups(1.0)  # not a midnight: every result summed
    assert sum(int(g[6]) for g in from_totals) == 9
    assert sum(int(g[8]) for g in from_totals) == 10 * (1 + 2 + 4 + 5) + 10 * (1 + 2)
    assert len({(g[4], g[3]) for g in from_totals}) == 4  # two days x two tiers
    second_day = 86400.0 * 20001
    assert groups(second_day) == groups(second_day - 1) != from_totals


def test_a_batch_moves_only_as_the_transition_table_allows(store: Store) -> None:
    """The store refuses a move the table forbids (a stale poll taking a finished batch back
    to running; anything after `ingested`), writes nothing of it, and keeps the batch as it
    was; the moves the table allows, skipped states included, go through."""
    from llmbatch.errors import IllegalTransition
    from llmbatch.providers.base import BatchStatus

    _enqueue(store, "q", ["r0", "r1"])
    now = time.time()
    token = store.acquire_lease("engine", "me", 60, now)
    assert token is not None
    ids = [rid for rid, *_ in store.candidates("openai", "/v1/chat/completions", "gpt-4o-mini")]
    batch = store.create_intent(
        ("openai", "/v1/chat/completions", "gpt-4o-mini"), ids, 10, 10, now, token
    )
    assert batch is not None
    store.record_submitted(batch, "pb_1", "file_1", now, token)

    def state() -> str:
        return next(b.state for b in store.open_batches() if b.id == batch)

    def seen(s: str, completed: int = 0) -> BatchStatus:
        return BatchStatus("pb_1", s, s, total=2, completed=completed, output_file_id="out_1")

    assert store.batch_result_count(batch) == 0  # nothing read back yet
    store.update_batch(batch, seen("completed", 2), now, token)  # validating -> completed
    assert state() == "completed"
    try:
        store.update_batch(batch, seen("in_progress", 1), now, token)
    except IllegalTransition as exc:
        assert (exc.kind, exc.old, exc.new) == ("batch", "completed", "in_progress")
    else:
        raise AssertionError("a finished batch went back to in_progress")
    assert state() == "completed"
    assert next(b for b in store.open_batches() if b.id == batch).completed_count == 2
    store.mark_ingested(batch, now, token)
    try:
        store.update_batch(batch, seen("completed", 2), now, token)
    except IllegalTransition:
        pass
    else:
        raise AssertionError("an ingested batch moved")
    assert batch not in {b.id for b in store.open_batches()}


def test_a_success_as_a_tuple_records_what_its_outcome_records(store: Store, db: str) -> None:
    """Ingest hands a success over as a `Succeeded` tuple (no `Outcome` a line): the store
    records it as it records the same success as an `Outcome`, mixed with failures and
    cancellations in one chunk, the results in the same order (their ids are the export's
    cursor)."""
    from llmbatch.store.batching import Outcome
    from llmbatch.usage import UsageRecord

    for queue in ("objects", "tuples"):
        _enqueue(store, queue, [f"r{i}" for i in range(6)])
    now = 86400.0 * 20000 + 60
    token = store.acquire_lease("engine", "me", 10.0**10, now)
    assert token is not None
    group = ("openai", "/v1/chat/completions", "gpt-4o-mini")
    flagged = UsageRecord(None, None, flag="missing: usage")
    found: dict[str, list[tuple[Any, ...]]] = {}
    for queue in ("objects", "tuples"):
        ids = [d["id"] for i in range(6) for d in store.request_detail(f"r{i}", queue)]
        batch = store.create_intent(group, ids, 10, 10, now, token)
        assert batch is not None
        a = sorted(x for x, _r, _line in store.unfinished_attempts(batch))
        usage = UsageRecord(30, 7, cached=4, reasoning=2)
        outs: list[Any] = [
            Outcome(a[3], "failed", 400, "q3", b'{"error": 1}', "bad", "no"),
            Outcome(a[0], "succeeded", 200, "q0", b"{}", input_tokens=30, output_tokens=7,
                    usage=usage, price_tier=1),
            Outcome(a[5], "cancelled", error_code="batch_cancelled", error_message="by you"),
            Outcome(a[1], "succeeded", 201, None, b"[]", usage=flagged),
            Outcome(a[2], "succeeded", 200, "q2", None),  # no usage at all
            Outcome(a[4], "retry", 500, error_code="server_error", not_before=now + 60),
        ]  # fmt: skip
        if queue == "tuples":
            outs[1] = (a[0], 200, "q0", b"{}", 30, 7, 4, 0, 0, 2, None, 1)
            outs[3] = (a[1], 201, None, b"[]", None, None, 0, 0, 0, 0, "missing: usage", 0)
            outs[4] = (a[2], 200, "q2", None, None, None, None, None, None, None,
                       "missing: usage", 0)  # fmt: skip
        assert store.apply_outcomes(batch, outs, now, token) == 6
        assert store.apply_outcomes(batch, outs, now, token) == 0  # applied once
        found[queue] = sql(
            db,
            "SELECT r.custom_id, res.status_code, res.provider_request_id, res.body, "
            "res.error_code, res.error_message, res.input_tokens, res.output_tokens, "
            "res.cached_tokens, res.cache_write_5m_tokens, res.cache_write_1h_tokens, "
            "res.reasoning_tokens, res.usage_flag, res.price_tier, res.day, res.created_at, "
            "r.state, r.reason, r.attempts, a.state, a.outcome, a.error_code "
            "FROM results res JOIN requests r ON r.id = res.request_id "
            "JOIN attempts a ON a.id = res.attempt_id WHERE r.queue = ? ORDER BY res.id",
            (queue,),
        )
        found[queue + " requests"] = sql(
            db,
            "SELECT custom_id, state, reason, attempts, not_before FROM requests "
            "WHERE queue = ? ORDER BY custom_id",
            (queue,),
        )
    # SQLite inserts in the order given; PostgreSQL's staged insert in attempt order
    order = ["r0", "r1", "r2", "r3", "r5"] if is_pg(db) else ["r3", "r0", "r5", "r1", "r2"]
    assert [r[0] for r in found["objects"]] == order
    assert found["tuples"] == found["objects"]
    assert found["tuples requests"] == found["objects requests"]
    totals: dict[str, list[tuple[Any, ...]]] = {"objects": [], "tuples": []}
    for g in store.cost_groups(0.0, now + 86400):
        t = dataclasses.astuple(g)
        totals[g.queue].append(t[:5] + t[6:])
    assert len(totals["objects"]) == 2  # two tiers
    assert sorted(totals["tuples"]) == sorted(totals["objects"])


def test_an_intents_file_from_the_bodies_its_cut_read_is_the_file_from_the_store(
    store: Store, tmp_path: Path
) -> None:
    """The packer writes an intent's file from the bodies its cut read (`Spool`), in the
    order of the intent's lines; the store's own lines say the same. An intent cut
    otherwise (not the first requests read, in order) is not written from them."""
    group = ("openai", CHAT, "gpt-4o-mini")
    for i in range(7):  # bodies of different lengths: a body read at another's offset shows
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * i}]}
        enqueue_requests(store, [make_request(f"r{i}", body)], queue="q")
    now = time.time()
    token = store.acquire_lease("engine", "me", 60, now)
    assert token is not None
    work = tmp_path / "work"
    work.mkdir()
    spool = Spool(work, CHAT)
    c = cut(spool.feed(store.candidates(*group, page=3)), Limits(5, 10**6))
    assert len(spool.ids) == 6  # the cut read one past its end
    batch = store.create_intent(group, c.ids, c.input_bytes, c.tokens, now, token)
    assert batch is not None
    spooled = spool.lines(store.batch_line_requests(batch))
    assert spooled is not None
    assert list(spooled) == list(store.batch_lines(batch))
    spool.reset()
    rest = [rid for rid, *_ in spool.feed(store.candidates(*group))]
    other = store.create_intent(group, rest[::-1], 1, 1, now, token)  # not in the order read
    assert other is not None
    assert spool.lines(store.batch_line_requests(other)) is None
    spool.close()
    assert list(work.iterdir()) == []
