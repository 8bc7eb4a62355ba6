"""Migration 0013 (workers that share the work: a token per worker, per-batch claims) on a
store made by the previous schema with batches in flight: it upgrades, and two workers
drain it together, each taking some of the batches, every request answered once.

The previous store is made by running the current engine until three batches are in flight
at the emulator, then taking 0013 back out (its table and columns dropped, the claims gone,
the schema version set back) and giving the engine lease the token the previous code had
drawn; the test first checks that this leaves exactly the schema every migration before
0013 makes. Tokens drawn after the upgrade start past every token held before it, so a
worker of the previous code still holding the lease can never pass for a new one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    UNDO_0013,
    fast_settings,
    request_states,
    roll_back,
    sql,
    tick_until_finalizing,
)
from llmbatch import Queue
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.store.sqlstore import migrations

THIS = 13


def test_a_store_with_batches_in_flight_upgrades_and_two_workers_share_its_drain(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with Queue(db, "q") as q:
        q.add_many([{"custom_id": f"r{i}", "body": body} for i in range(16)])
    with running(seed=13) as emu:
        emu.control.next_batches(count=4, hold="finalizing")
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=4))
        tick_until_finalizing(engine, db, 4)

        # the previous code's store: 0013 taken back out, its lease token as it drew them
        roll_back(db, UNDO_0013, THIS, request, tmp_path)
        sql(db, "UPDATE leases SET token = 41")

        upgraded: Any = open_store(db)
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(migrations(upgraded.dialect)[-1][0]),)
        ]
        assert sql(db, "SELECT COUNT(*) FROM batches WHERE queue IS NOT NULL") == [(0,)]
        settings = fast_settings(emu, lease_ttl=30.0)
        engines = [Engine(open_store(db), settings) for _ in range(2)]
        try:
            for _ in range(3):  # both serving: the batches in flight are shared out
                for e in engines:
                    e.tick(time.time())
            for (pid,) in sql(db, "SELECT provider_batch_id FROM batches"):
                emu.control.release(str(pid))
            deadline = time.monotonic() + 40
            while upgraded.unfinished_count():
                assert time.monotonic() < deadline, request_states(db)
                for e in engines:
                    e.tick(time.time())
                time.sleep(0.02)
            tokens = [e.lease.token for e in engines]
            ingested = {w.holder: w.ingested for w in upgraded.workers(0.0)}
        finally:
            for e in engines:
                e.close()
                e.store.close()
            upgraded.close()
    assert min(tokens) > 41 and len(set(tokens)) == 2  # never a token held before
    # both ingested batches of the store made before
    assert sum(ingested.values()) == 4 and min(ingested.values()) >= 1, ingested
    assert request_states(db) == {"succeeded": 16}
    assert sql(db, "SELECT COUNT(*) FROM results") == [(16,)]
    batch_claims = "SELECT COUNT(*) FROM leases WHERE substr(name, 1, 6) = 'batch:'"
    assert sql(db, batch_claims) == [(0,)]  # each dropped with its ingest
