"""Migration 0018: on PostgreSQL the indexes that find waiting requests (queued, held,
retry_wait) read `waiting`, a column computed from `state` that is NULL once a request is
packed, and `requests` leaves half of each page free: a request's state changes after packing
(submitted, its outcome) are HOT updates, with no new index entries (issue 23: each was ~0.8 s
of server CPU per 100,000 requests). PostgreSQL's dialect says `waiting = 'queued'` where the
shared SQL says `state = 'queued'` (store/sqlfiles.py).
Here: a store made before 0018, with batches in flight and requests queued, held and waiting
to retry, upgrades and drains; on PostgreSQL no index reads `state`, the drain's updates after
packing are HOT, and the queries that find waiting requests go through their indexes. The real
engine on both stores; the in-process provider on a virtual clock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from helpers import (
    UNDO_0018,
    enqueue_hi,
    is_pg,
    memory_engine,
    request_states,
    roll_back,
    sql,
)
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.store import open_store
from llmbatch.store.sqlfiles import dialect_queries
from llmbatch.store.sqlstore import migrations

# the columns of requests that any index of it reads, in its keys or its predicate
INDEXED = (
    "SELECT DISTINCT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    "WHERE i.indrelid = 'requests'::regclass AND a.attnum > 0 AND (a.attnum = ANY(i.indkey) "
    "OR position(a.attname IN pg_get_expr(i.indpred, i.indrelid)) > 0) ORDER BY 1"
)
UPDATES = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'requests'"


def test_a_store_made_before_0018_with_batches_in_flight_upgrades_and_drains(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    clock = VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=3_600.0, max_requests=2)
    enqueue_hi(db, range(5))
    first = memory_engine(db, memory, clock)
    first.tick(clock())
    first.close()
    first.store.close()
    assert request_states(db) == {"submitted": 5} and len(memory.batches) == 3  # in flight
    enqueue_hi(db, range(5, 8))  # waiting, as the code before left them
    roll_back(db, UNDO_0018, 18, request, tmp_path)  # the previous code's store
    sql(db, f"UPDATE requests SET state = 'retry_wait', not_before = {clock() - 1} "
            "WHERE custom_id = 'r5'")  # fmt: skip
    sql(db, "UPDATE requests SET state = 'held', reason = 'over budget' WHERE custom_id = 'r6'")
    if is_pg(db):
        assert "state" in [r[0] for r in sql(db, INDEXED)]
    store = open_store(db)  # opening it upgrades it
    try:
        assert store.held_count() == 1
    finally:
        store.close()
    latest = migrations("postgres" if is_pg(db) else "sqlite")[-1][0]
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
    if is_pg(db):
        assert "state" not in [r[0] for r in sql(db, INDEXED)]
        assert sorted(sql(db, "SELECT custom_id, waiting FROM requests WHERE waiting IS NOT NULL")) == [
            ("r5", "retry_wait"), ("r6", "held"), ("r7", "queued")
        ]  # fmt: skip
    sql(db, "UPDATE requests SET state = 'queued', reason = NULL WHERE custom_id = 'r6'")
    upgraded = memory_engine(db, memory, clock)
    try:
        for _ in range(100):
            upgraded.tick(clock())
            clock.advance(300.0)
            if not (upgraded.store.has_unfinished() or upgraded.store.open_batches()):
                break
        assert request_states(db) == {"succeeded": 8}
        assert sql(db, "SELECT COUNT(*) FROM results") == [(8,)]
    finally:
        upgraded.close()
        upgraded.store.close()
    if is_pg(db):
        assert sql(db, "SELECT COUNT(*) FROM requests WHERE waiting IS NOT NULL") == [(0,)]


def _hot_updates(dsn: str, at_least: int, seconds: float = 20.0) -> tuple[int, int]:
    """(updates, HOT updates) of `requests` once the statistics count `at_least` HOT updates,
    or after `seconds` (a backend reports its counts when it goes idle or ends)."""
    deadline = time.monotonic() + seconds
    while True:
        (done, hot), *_ = sql(dsn, UPDATES)
        if hot >= at_least or time.monotonic() > deadline:
            return int(done), int(hot)
        time.sleep(0.2)


def test_a_requests_changes_after_packing_are_hot_updates(pg_dsn: str) -> None:
    """20 requests in 10 batches: each request's submit and its outcome rewrite no index."""
    (before, hot_before), *_ = sql(pg_dsn, UPDATES)
    clock = VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=60.0, max_requests=2)
    enqueue_hi(pg_dsn, range(20))
    engine = memory_engine(pg_dsn, memory, clock)
    try:
        for _ in range(100):
            engine.tick(clock())
            clock.advance(300.0)
            if not (engine.store.has_unfinished() or engine.store.open_batches()):
                break
    finally:
        engine.close()
        engine.store.close()
    assert request_states(pg_dsn) == {"succeeded": 20}
    # packed, submitted, succeeded: the last two of each HOT where its page had room (pruned
    # of its old versions, which a snapshot held elsewhere can delay); not one before 0018
    done, hot = _hot_updates(pg_dsn, hot_before + 20)
    assert done - before >= 60 and hot - hot_before >= 20, (done - before, hot - hot_before)


@pytest.mark.parametrize(
    ("name", "index", "params"),
    [
        (
            "ready_candidates",
            "requests_ready",
            {"provider": "openai", "endpoint": "/v1/chat/completions", "model": "m", "n": 10},
        ),
        ("ready_groups", "requests_ready", {}),
        ("release_due_retries", "requests_waiting", {"now": 0.0}),
        ("held_count", "requests_held", {"queue": "q"}),
    ],
)
def test_the_queries_that_find_waiting_requests_use_their_indexes(
    pg_dsn: str, name: str, index: str, params: dict[str, Any]
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(
            str(r[0]) for r in conn.execute("EXPLAIN " + dialect_queries("postgres")[name], params)
        )
    assert index in plan, plan
