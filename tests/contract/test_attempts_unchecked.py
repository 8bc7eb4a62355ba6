"""Migration 0017: on PostgreSQL the foreign keys of `attempts` (its request, its batch) and
`results` (its attempt, its request) are no longer checked row by row, and `attempts` leaves
half of each page free for its two updates (issue 23: ~2 s of server CPU per 100,000
requests went to the checks). What the keys guarded is held by the code that writes the
rows, as on SQLite, which never enforced them: test_store.py and the engine's tests.
Here: a store made before 0017, with batches in flight, upgrades and drains, and every result
names an attempt and a request that exist. The real engine on both stores; the in-process
provider on a virtual clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import UNDO_0017, enqueue_hi, is_pg, memory_engine, request_states, roll_back, sql
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.store.sqlstore import migrations

FOREIGN_KEYS = (
    "SELECT conname FROM pg_constraint WHERE conrelid IN ('attempts'::regclass, "
    "'results'::regclass) AND contype = 'f' ORDER BY conname"
)
FILLFACTOR = "SELECT reloptions FROM pg_class WHERE oid = 'attempts'::regclass"
ORPHANS = (
    "SELECT COUNT(*) FROM results s WHERE NOT EXISTS (SELECT 1 FROM attempts a "
    "WHERE a.id = s.attempt_id AND a.request_id = s.request_id) "
    "OR NOT EXISTS (SELECT 1 FROM requests r WHERE r.id = s.request_id)"
)


def test_a_store_made_before_0017_with_batches_in_flight_upgrades_and_drains(
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
    roll_back(db, UNDO_0017, 17, request, tmp_path)  # the previous code's store
    if is_pg(db):
        assert len(sql(db, FOREIGN_KEYS)) == 4 and sql(db, FILLFACTOR) == [(None,)]
    enqueue_hi(db, range(5, 8))  # opening it upgrades it; an import after the upgrade
    latest = migrations("postgres" if is_pg(db) else "sqlite")[-1][0]
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
    if is_pg(db):
        assert sql(db, FOREIGN_KEYS) == [] and sql(db, FILLFACTOR) == [(["fillfactor=50"],)]
    upgraded = memory_engine(db, memory, clock)
    try:
        for _ in range(100):
            upgraded.tick(clock())
            clock.advance(300.0)
            if not (upgraded.store.has_unfinished() or upgraded.store.open_batches()):
                break
        assert request_states(db) == {"succeeded": 8}
        assert sql(db, ORPHANS) == [(0,)] and sql(db, "SELECT COUNT(*) FROM results") == [(8,)]
    finally:
        upgraded.close()
        upgraded.store.close()
