"""The verbs waiting clients use, on every store: `watch`, `lookup`, `queue_requests`."""

from __future__ import annotations

import time

from helpers import add_result, request_id, sql
from llmbatch.importer import enqueue_requests
from llmbatch.requests import make_request
from llmbatch.store import Store

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _add(store: Store, queue: str, *ids: str) -> None:
    enqueue_requests(store, (make_request(i, BODY) for i in ids), queue=queue)


def test_watch_gives_the_newest_result_of_each_request_finished_after_the_cursor(
    store: Store, db: str
) -> None:
    _add(store, "q", "a", "b", "c")
    _add(store, "other", "a")
    start = store.results_high()
    add_result(db, "a", queue="q", succeeded=False)
    add_result(db, "a", queue="other")
    add_result(db, "b", queue="q")
    add_result(db, "a", queue="q")  # sent again, finished again: only this one counts
    seen = store.watch("q", start, float("inf"))
    assert [(r.custom_id, r.state) for r in seen.results] == [
        ("b", "succeeded"),
        ("a", "succeeded"),
    ]
    assert seen.held == []
    first = seen.results[0]
    assert (first.model, first.endpoint, first.provider) == (
        "gpt-4o-mini",
        "/v1/chat/completions",
        "openai",
    )
    assert first.body is not None and first.input_tokens == 12
    assert (seen.high, seen.scanned) == (start + 4, 4)
    after = store.watch("q", seen.high, float("inf"))
    assert (after.results, after.high, after.scanned) == ([], seen.high, 0)
    # a scan of `limit` results, whatever their queue: the cursor moves past the others'
    two = store.watch("q", start, float("inf"), limit=2)
    assert (two.results, two.high, two.scanned) == ([], start + 2, 2)
    three = store.watch("q", two.high, float("inf"), limit=2)
    assert [r.custom_id for r in three.results] == ["b", "a"] and three.high == start + 4


def test_watch_gives_held_requests_since_a_time_of_the_stores_own(store: Store, db: str) -> None:
    _add(store, "q", "h1", "h2", "free")
    token = store.acquire_lease("engine", "me", 60, time.time())
    assert token is not None
    store.hold([request_id(db, "h1", "q")], "budget 1.00 USD", 100.0, token)
    store.hold([request_id(db, "h2", "q")], "budget 1.00 USD", 200.0, token)
    held = store.watch("q", 0, float("-inf")).held
    assert sorted((r.custom_id, r.state, r.error_message, r.recorded_at) for r in held) == [
        ("h1", "held", "budget 1.00 USD", 100.0), ("h2", "held", "budget 1.00 USD", 200.0)]  # fmt: skip
    assert [r.custom_id for r in store.watch("q", 0, 150.0).held] == ["h2"]
    assert store.watch("other", 0, float("-inf")).held == []


def test_lookup_finds_committed_requests_by_custom_id_with_their_newest_result(
    store: Store, db: str
) -> None:
    _add(store, "q", "done", "waiting")
    add_result(db, "done", queue="q", succeeded=False)
    add_result(db, "done", queue="q")
    found = store.lookup("q", ["done", "waiting", "absent", "done"])
    assert set(found) == {"done", "waiting"}
    assert found["done"].state == "succeeded" and found["done"].result is not None
    assert found["done"].result.state == "succeeded" and found["done"].result.error_code is None
    assert found["waiting"].result is None and found["waiting"].state == "queued"
    assert found["waiting"].body_hash == make_request("waiting", BODY).body_hash
    # sent again after failing: the old result is not its answer
    sql(db, "UPDATE requests SET state = 'queued' WHERE custom_id = 'done'")
    assert store.lookup("q", ["done"])["done"].result is None
    assert store.lookup("other", ["done"]) == {}
    many = [f"m{i}" for i in range(1200)]  # more than one chunk of the IN list
    _add(store, "q", *many)
    assert len(store.lookup("q", many)) == 1200


def test_queue_requests_streams_a_queues_requests_in_some_states(store: Store, db: str) -> None:
    _add(store, "q", *(f"r{i}" for i in range(5)))
    _add(store, "other", "x")
    add_result(db, "r1", queue="q")
    got = list(store.queue_requests("q", ["queued"], page=2))
    assert [g[0] for g in got] == ["r0", "r2", "r3", "r4"]
    _cid, provider, endpoint, model, body = got[0]
    assert (provider, endpoint, model) == ("openai", "/v1/chat/completions", "gpt-4o-mini")
    assert b'"hi"' in body
