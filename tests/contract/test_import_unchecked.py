"""Migration 0016: `requests.import_id` is no longer a foreign key PostgreSQL checks once per
inserted request (the check cost the enqueue ~0.35 s of server CPU per 100,000 requests).
What it guarded is the import's own bookkeeping, tested in test_store.py: a chunk goes in
only while its import is loading, and an import is deleted only once no request names it.
Here: a store made before 0016, with batches in flight, upgrades and drains; on PostgreSQL no
foreign key is left on `requests`. The real engine on both stores; the in-process provider on
a virtual clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import UNDO_0016, enqueue_hi, is_pg, memory_engine, request_states, roll_back, sql
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.store.sqlstore import migrations

FOREIGN_KEYS = (
    "SELECT conname FROM pg_constraint WHERE conrelid = 'requests'::regclass AND contype = 'f'"
)


def test_a_store_made_before_0016_with_batches_in_flight_upgrades_and_drains(
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
    roll_back(db, UNDO_0016, 16, request, tmp_path)  # the previous code's store
    if is_pg(db):
        assert sql(db, FOREIGN_KEYS) == [("requests_import_id_fkey",)]
    enqueue_hi(db, range(5, 8))  # opening it upgrades it; an import after the upgrade
    latest = migrations("postgres" if is_pg(db) else "sqlite")[-1][0]
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
    if is_pg(db):
        assert sql(db, FOREIGN_KEYS) == []
    upgraded = memory_engine(db, memory, clock)
    try:
        for _ in range(100):
            upgraded.tick(clock())
            clock.advance(300.0)
            if not (upgraded.store.has_unfinished() or upgraded.store.open_batches()):
                break
        assert request_states(db) == {"succeeded": 8}
    finally:
        upgraded.close()
        upgraded.store.close()
