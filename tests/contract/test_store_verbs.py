"""The Store verbs the other contract files leave out, on every store: what the engine counts
per batch and per group, the event log, ownership's facts, the read side behind metrics and
receipts, and the archive and webhook queues. Each test drives the store as the engine does
(an intent created at the provider, outcomes applied) and checks what the verb promises."""

from __future__ import annotations

import time

import pytest

from helpers import request_id, sql
from llmbatch.importer import enqueue_requests
from llmbatch.requests import make_request
from llmbatch.store import Store
from llmbatch.store.batching import Outcome
from llmbatch.store.setbacks import GroupBackoff
from llmbatch.usage import UsageRecord

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"
GROUP = ("openai", CHAT, MODEL)
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _enqueue(store: Store, queue: str, ids: list[str], deadline: float | None = None) -> None:
    enqueue_requests(store, (make_request(i, BODY) for i in ids), queue=queue, deadline=deadline)


def _intent(store: Store, queue: str, ids: list[str], now: float) -> tuple[int, int]:
    """These requests enqueued and packed into one intent; (batch id, lease token)."""
    _enqueue(store, queue, ids)
    token = store.acquire_lease("engine", "me", 600, now)
    assert token is not None
    rids = [d["id"] for c in ids for d in store.request_detail(c, queue)]
    batch = store.create_intent(GROUP, rids, 100, 40, now, token)
    assert batch is not None
    return batch, token


def _attempts(store: Store, batch: int) -> dict[int, int]:
    """request id -> attempt id of a batch's unfinished attempts."""
    return {r: a for a, r, _line in store.unfinished_attempts(batch)}


def test_a_batch_is_uploaded_submitted_and_known_by_its_provider_ids(store: Store) -> None:
    now = time.time()
    batch, token = _intent(store, "q", ["a", "b"], now)
    store.mark("upload", batch, now, token)
    store.record_upload(batch, "file-in", now, token)
    [b] = store.open_batches()
    assert (b.id, b.input_file_id, b.provider_batch_id) == (batch, "file-in", None)
    assert store.file_owners("openai") == {}  # uploaded, nothing sent from it yet
    store.record_submitted(batch, "batch-1", "file-in", now + 1, token)
    assert store.known_ids("openai") == ({"batch-1"}, {"file-in"})
    assert store.file_owners("openai") == {"file-in": batch}
    assert store.file_owners("anthropic") == {}
    assert store.known_ids("anthropic") == (set(), set())
    assert store.batches_created_since("openai", now - 1) == 1
    assert store.batches_created_since("openai", now + 2) == 0
    assert store.batches_created_since("anthropic", now - 1) == 0
    assert store.tokens_in_flight("openai", MODEL) == 40
    assert store.tokens_in_flight("openai", "other-model") == 0


def test_ready_groups_count_queued_requests_per_provider_endpoint_and_model(store: Store) -> None:
    _enqueue(store, "q", ["a", "b", "c"])
    other = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    enqueue_requests(store, [make_request("d", other)], queue="q")
    assert sorted(store.ready_groups()) == [
        ("openai", CHAT, "gpt-4.1", 1),
        ("openai", CHAT, MODEL, 3),
    ]
    now = time.time()
    token = store.acquire_lease("engine", "me", 600, now)
    assert token is not None
    rids = [d["id"] for d in store.request_detail("a", "q")]
    store.create_intent(GROUP, rids, 10, 10, now, token)
    assert sorted(store.ready_groups()) == [
        ("openai", CHAT, "gpt-4.1", 1),
        ("openai", CHAT, MODEL, 2),
    ]  # packed requests are no longer ready


def test_attempts_belong_to_their_batch_and_span_its_lines(store: Store) -> None:
    now = time.time()
    batch, _token = _intent(store, "q", ["a", "b", "c"], now)
    attempts = sorted(_attempts(store, batch).values())
    assert store.attempt_span(batch) == (attempts[0], attempts[-1])
    assert all(store.batch_of_attempt(a) == batch for a in attempts)
    assert store.batch_of_attempt(attempts[-1] + 1000) is None
    assert store.attempt_span(batch + 1000) is None
    assert store.attempts_not_in_batch(batch, [*attempts, 999_999]) == [999_999]
    info = store.attempt_info(batch, attempts[:2])
    assert sorted(info) == attempts[:2]
    rids = {i.request_id for i in info.values()}
    assert rids == {r for r, a in _attempts(store, batch).items() if a in attempts[:2]}
    assert all(i.expiries == 0 and i.rejections == 0 for i in info.values())
    assert len({i.attempts for i in info.values()}) == 1  # none charged more than another
    # a big batch: attempts asked for in more than one chunk of ids
    assert store.attempt_info(batch, [*range(1, 1200), *attempts]) == store.attempt_info(
        batch, attempts
    )
    mapped = list(store.batch_attempt_map(batch))
    assert [(q, c) for _a, q, c in mapped] == [("q", "a"), ("q", "b"), ("q", "c")]
    assert [a for a, _q, _c in mapped] == attempts
    # a span of attempt ids: only those this batch carried within it
    assert store.batch_custom_ids(batch, attempts[1], attempts[-1] + 5) == [
        (attempts[1], "b"),
        (attempts[2], "c"),
    ]
    assert store.batch_custom_ids(batch + 1000, attempts[0], attempts[-1]) == []


def test_defer_and_setbacks_are_counted_on_the_batch_and_logged(store: Store) -> None:
    now = time.time()
    batch, token = _intent(store, "q", ["a"], now)
    store.defer(batch, now + 30, token)
    [b] = store.open_batches()
    assert (b.not_before, b.setbacks, b.download_tries, b.gone_checks) == (now + 30, 0, 0, 0)
    store.count_setback(batch, "setbacks", now + 60, now, token, "backoff", "a 503")
    store.count_setback(batch, "download_tries", None, now, token, "download_short", "2 of 3")
    store.count_setback(batch, "gone_checks", now + 90, now, token, "gone", "404")
    [b] = store.open_batches()
    assert (b.setbacks, b.download_tries, b.gone_checks) == (1, 1, 1)
    assert b.not_before == now + 90
    kinds = [e["kind"] for e in store.batch_events(batch)]
    assert kinds[-3:] == ["backoff", "download_short", "gone"]  # oldest first
    try:
        store.count_setback(batch, "strikes", None, now, token, "x", "y")
    except ValueError as exc:
        assert "strikes" in str(exc)
    else:
        raise AssertionError("an unknown counter was accepted")


def test_notes_go_to_the_event_log_one_or_many_at_a_time(store: Store) -> None:
    now = time.time()
    batch, _token = _intent(store, "q", ["a"], now)
    store.note("anomaly", batch, "a line that is not ours")
    store.note_many("warning", None, ["first", "second"])
    store.note_many("warning", None, [])
    events = store.recent_events(10)
    assert [(e["kind"], e["detail"]) for e in events[:3]] == [
        ("warning", "second"),
        ("warning", "first"),
        ("anomaly", "a line that is not ours"),
    ]  # newest first
    assert store.batch_events(batch)[-1]["detail"] == "a line that is not ours"


def test_what_a_group_learned_is_kept_until_cleared_and_fenced(store: Store) -> None:
    now = time.time()
    token = store.acquire_lease("engine", "me", 600, now)
    assert token is not None
    assert store.group_backoffs() == []
    learned = GroupBackoff(GROUP, strikes=2, cap=50, quota=1000, not_before=now + 300)
    store.set_group_backoff(learned, token)
    store.set_group_backoff(GroupBackoff(("openai", CHAT, ""), 1, None, None, now), token)
    got = {g.group: g for g in store.group_backoffs()}
    assert got[GROUP] == learned
    again = GroupBackoff(GROUP, strikes=3, cap=25, quota=None, not_before=now + 600)
    store.set_group_backoff(again, token)  # replaces, not adds
    assert {g.group: g for g in store.group_backoffs()}[GROUP] == again
    store.clear_group_backoff(GROUP, token)
    assert [g.group for g in store.group_backoffs()] == [("openai", CHAT, "")]
    # another worker took the lease: the old token writes nothing
    assert store.acquire_lease("engine", "other", 600, now + 700) == token + 1
    try:
        store.set_group_backoff(learned, token)
    except Exception as exc:
        assert "taken over" in str(exc)
    else:
        raise AssertionError("a stale token wrote")
    assert [g.group for g in store.group_backoffs()] == [("openai", CHAT, "")]


def test_the_poll_and_sweep_schedule_is_kept_in_one_write_and_fenced(store: Store) -> None:
    now = time.time()
    one, token = _intent(store, "q", ["a"], now)
    _enqueue(store, "q", ["b"])
    two = store.create_intent(GROUP, [store.request_detail("b", "q")[0]["id"]], 1, 1, now, token)
    assert two is not None
    assert {(b.poll_at, b.poll_every) for b in store.open_batches()} == {(0.0, 0.0)}
    store.schedule_polls([one], now + 5, 2.5, token)
    store.schedule_polls([], now + 99, 1.0, token)  # nothing polled: no write
    got = {b.id: (b.poll_at, b.poll_every) for b in store.open_batches()}
    assert got[one] == (now + 5, 2.5)
    assert got[two] == (0.0, 0.0)
    store.schedule_polls([one, two], now + 60, 30.0, token)  # one statement, both batches
    got = {b.id: (b.poll_at, b.poll_every) for b in store.open_batches()}
    assert got == {one: (now + 60, 30.0), two: (now + 60, 30.0)}
    assert store.next_run("sweep") == 0.0  # never ran
    store.set_next_run("sweep", now + 300, token)
    store.set_next_run("sweep", now + 600, token)  # replaces, not adds
    assert store.next_run("sweep") == now + 600
    assert store.acquire_lease("engine", "other", 600, now + 700) == token + 1
    for stale in (
        lambda: store.set_next_run("sweep", now, token),
        lambda: store.schedule_polls([one], now, 1.0, token),
    ):
        try:
            stale()
        except Exception as exc:
            assert "taken over" in str(exc)
        else:
            raise AssertionError("a stale token wrote")
    assert store.next_run("sweep") == now + 600


def test_a_broken_lease_is_free_at_once(store: Store) -> None:
    now = time.time()
    assert store.acquire_lease("engine", "dead", 600, now) is not None
    assert store.acquire_lease("engine", "me", 600, now) is None
    store.break_lease("engine", "someone-else")  # only the named holder's lease ends
    assert store.lease_holder("engine", now) == "dead"
    store.break_lease("engine", "dead")
    assert store.lease_holder("engine", now) is None
    assert store.acquire_lease("engine", "me", 600, now) is not None


def test_a_cancel_sent_is_recorded_once(store: Store) -> None:
    now = time.time()
    batch, token = _intent(store, "q", ["a", "b"], now)
    store.record_submitted(batch, "batch-1", "file-1", now, token)
    plan = store.request_cancel([d["id"] for d in store.request_detail("a", "q")], now)
    assert plan.batches == []  # half a batch: it keeps running
    plan = store.request_cancel(
        [d["id"] for c in ("a", "b") for d in store.request_detail(c, "q")], now
    )
    assert plan.batches == [batch]
    [b] = store.open_batches()
    assert b.cancel_requested_at == now and b.cancel_sent_at is None
    store.mark_cancel_sent(batch, now + 1, token)
    [b] = store.open_batches()
    assert b.cancel_sent_at == now + 1


def test_foreign_batches_are_judged_once_and_proof_waits_are_kept(store: Store) -> None:
    now = time.time()
    assert store.judged_ids("openai") == set()
    store.judge_foreign("openai", ["batch_x", "batch_y"], now)
    store.judge_foreign("openai", ["batch_x"], now + 1)  # judged again: harmless
    store.judge_foreign("openai", [], now)
    assert store.judged_ids("openai") == {"batch_x", "batch_y"}
    assert store.judged_ids("anthropic") == set()
    assert store.first_intent_at("openai") is None  # the sweep makes no call for it
    batch, _token = _intent(store, "q", ["a", "b"], now)
    assert store.first_intent_at("openai") == now  # the sweep looks no further back
    assert store.first_intent_at("anthropic") is None
    assert store.proof_waits() == []
    store.set_proof_wait(batch, now + 120)
    [wait] = store.proof_waits()
    assert (wait.batch_id, wait.provider, wait.request_count, wait.until) == (
        batch,
        "openai",
        2,
        now + 120,
    )
    store.set_proof_wait(batch, None)
    assert store.proof_waits() == []
    assert store.residual_double_creates() == 0
    store.set_proof_wait(batch, now + 120)
    store.residual_double_create(batch, "waited 120 s for proof")
    assert store.residual_double_creates() == 1
    assert store.proof_waits() == []  # it stopped waiting
    assert store.batch_events(batch)[-1]["kind"] == "residual_double_create"


def test_open_batches_up_to_a_row_and_a_move_resolved(store: Store) -> None:
    now = time.time()
    first, _token = _intent(store, "q", ["a"], now)
    second, _token = _intent(store, "q2", ["b"], now)
    assert store.open_before(first) == [(first, None)]
    assert sorted(store.open_before(second)) == [(first, None), (second, None)]
    assert store.moved() is None
    store.resolve_move("keep", now)  # nothing pending: harmless, nothing frozen
    assert store.moved() is None
    assert store.nonce_of(first)


@pytest.mark.slow
def test_budget_lines_come_in_the_order_asked_for_and_across_chunks(store: Store, db: str) -> None:
    ids = [f"r{i}" for i in range(520)]
    _enqueue(store, "q", ids)
    rids = [request_id(db, c, "q") for c in ids]
    wanted = [*reversed(rids), 10**9]  # more than one chunk of 500; an unknown id is left out
    got = store.budget_lines(wanted)
    assert [r for r, *_ in got] == list(reversed(rids))
    _rid, queue, text_bytes, body = got[0]
    assert queue == "q" and text_bytes > 0 and b'"messages"' in body


def test_results_feed_usage_receipts_failures_turnaround_and_flags(store: Store) -> None:
    now = time.time()
    batch, token = _intent(store, "q", ["ok", "bad", "unread"], now)
    store.record_submitted(batch, "batch-1", "file-1", now, token)
    attempt = _attempts(store, batch)
    rid = {c: d["id"] for c in ("ok", "bad", "unread") for d in store.request_detail(c, "q")}
    high = store.results_high()
    store.apply_outcomes(
        batch,
        [
            Outcome(
                attempt[rid["ok"]],
                "succeeded",
                200,
                "r1",
                b"{}",
                input_tokens=7,
                output_tokens=3,
                usage=UsageRecord(7, 3),
            ),
            Outcome(attempt[rid["bad"]], "failed", 400, "r2", b"{}", "invalid_request", "no"),
            Outcome(
                attempt[rid["unread"]],
                "succeeded",
                200,
                "r3",
                b"{}",
                usage=UsageRecord(None, None, flag="missing: usage"),
            ),
        ],
        now + 5,
        token,
    )
    assert store.usage_summary("q") == [("openai", MODEL, 3, 7, 3, 2)]
    assert store.usage_summary("elsewhere") == []
    assert store.flagged_results(batch) == [(rid["unread"], "q")]
    [fail] = store.recent_failures()
    assert (fail["custom_id"], fail["status_code"], fail["error_code"]) == (
        "bad",
        400,
        "invalid_request",
    )
    turn = store.turnaround(high, store.results_high())
    assert turn.count == 3 and turn.total_s >= 0
    assert store.turnaround(5, 5).count == 0
    [group] = store.receipt_groups(0, 0, batch_id=batch)
    assert (group.batch_id, group.queue, group.requests, group.succeeded) == (batch, "q", 3, 2)
    assert (group.input_tokens, group.output_tokens) == (7, 3)
    day = int((now + 5) // 86400)
    assert [g.requests for g in store.receipt_groups(day, day + 1, queue="q")] == [3]
    assert store.receipt_groups(day + 1, day + 2) == []
    rows = list(store.batch_result_rows(batch))
    assert sorted(r.custom_id for r in rows) == ["bad", "ok", "unread"]
    assert [r.attempt_id for r in rows] == sorted(r.attempt_id for r in rows)


def test_deadlines_missed_and_at_risk_and_the_one_read_of_observe(store: Store) -> None:
    now = time.time()
    _enqueue(store, "q", ["late"], deadline=now - 10)
    _enqueue(store, "q2", ["soon"], deadline=now + 60)
    _enqueue(store, "q2", ["later"], deadline=now + 7200)
    _enqueue(store, "q2", ["never"])
    assert store.deadline_risk(now, now + 600) == (1, 1)
    assert store.deadline_risk(now, now + 600, queue="q2") == (0, 1)
    seen = store.observe(now, now + 600)
    states = {(g.queue, g.state): g.n for g in seen.requests}
    assert states[("q", "queued")] == 1 and states[("q2", "queued")] == 3
    assert seen.batches == [] and seen.lease is None
    token = store.acquire_lease("engine", "me", 600, now)
    assert token is not None
    assert store.observe(now, now + 600).lease is not None


def test_a_batchs_queues_and_a_queues_states(store: Store) -> None:
    now = time.time()
    batch, _token = _intent(store, "q", ["a", "b"], now)
    _enqueue(store, "q", ["waiting"])
    [state] = store.batch_queues(batch)
    assert (state.queue, state.unfinished) == ("q", 3)  # the queue's unfinished, in or out
    # the batch's highest request id in the queue (what a drained queue is measured up to)
    assert state.high == max(d["id"] for c in "ab" for d in store.request_detail(c, "q"))
    assert store.queue_summary("q") == {"packed": 2, "queued": 1}
    assert store.queue_summary("none") == {}


def test_archives_are_asked_once_written_or_retried(store: Store, db: str) -> None:
    now = time.time()
    batch, token = _intent(store, "q", ["a"], now)
    store.record_submitted(batch, "batch-1", "file-1", now, token)
    store.archive_add(batch, now)
    store.archive_add(batch, now)  # asking again is harmless
    assert store.archive_due(now) == []  # not ingested yet
    store.mark_ingested(batch, now, token)
    [due] = store.archive_due(now)
    assert (due.batch_id, due.tries) == (batch, 0)
    info = store.archive_batch(batch)
    assert info is not None and info["provider_batch_id"] == "batch-1"
    assert store.archive_batch(batch + 1000) is None
    store.archive_failed(batch, now + 60, "the bucket is unreachable")
    assert store.archive_due(now) == []
    assert store.archive_waiting() == [(batch, 1, now + 60, "the bucket is unreachable")]
    [due] = store.archive_due(now + 61)
    assert due.tries == 1
    store.archive_done(batch, now + 62, "s3://bucket/x", from_store=False)
    assert store.archive_due(now + 1000) == [] and store.archive_waiting() == []
    assert sql(db, "SELECT state, location, from_store FROM archives") == [
        ("done", "s3://bucket/x", 0)
    ]


def test_webhook_events_are_added_once_delivered_or_retried(store: Store) -> None:
    now = time.time()
    assert store.outbox_waiting() == (0, None)
    store.outbox_add("ev-1", "batch.completed", None, b'{"n":1}', now)
    store.outbox_add("ev-1", "batch.completed", None, b'{"n":1}', now)  # once per event id
    store.outbox_add("ev-2", "queue.drained", None, b'{"n":2}', now + 1)
    due = store.outbox_due(now + 1)
    assert [(e.event_id, e.kind, e.payload, e.tries) for e in due] == [
        ("ev-1", "batch.completed", b'{"n":1}', 0),
        ("ev-2", "queue.drained", b'{"n":2}', 0),
    ]  # oldest first
    assert store.outbox_waiting() == (2, now)
    store.outbox_delivered(due[0].id, now + 2)
    store.outbox_failed(due[1].id, now + 30, "502 from the receiver")
    assert store.outbox_due(now + 2) == []
    assert store.outbox_waiting() == (1, now + 30)
    [again] = store.outbox_due(now + 31)
    assert (again.event_id, again.tries) == ("ev-2", 1)
