"""Migration 0011 (the model a provider says ran a batch, beside its usage) on a store made by
the previous schema with batches in flight: it upgrades, a worker drains it, and the model
each Batch object names is read into the store and shown by `show` and the receipt.

The previous store is made by running the current engine until three batches are in flight
at the emulator, then taking 0011 back out (its column dropped, the schema version set back);
the test first checks that this leaves exactly the schema every migration before 0011 makes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import (
    UNDO_0011,
    cli,
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

# on SQLite and PostgreSQL (migrations differ per dialect)
pytestmark = pytest.mark.both_backends

THIS = 11


def test_a_store_with_batches_in_flight_upgrades_and_records_the_model_that_ran(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with Queue(db, "q") as q:
        q.add_many([{"custom_id": f"r{i}", "body": body} for i in range(12)])
    with running(seed=33) as emu:
        emu.control.next_batches(count=3, hold="finalizing")
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=4))
        tick_until_finalizing(engine, db, 3)

        # the previous code's store: 0011 taken back out
        roll_back(db, UNDO_0011, THIS, request, tmp_path)

        upgraded: Any = open_store(db)
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(migrations(upgraded.dialect)[-1][0]),)
        ]
        # what the previous code recorded has no model: it is read at the next poll
        assert sql(db, "SELECT COUNT(*) FROM provider_usage WHERE model IS NOT NULL") == [(0,)]
        for (pid,) in sql(db, "SELECT provider_batch_id FROM batches"):
            emu.control.release(str(pid))
        engine = Engine(upgraded, fast_settings(emu))
        deadline = time.monotonic() + 30
        try:
            while upgraded.unfinished_count():
                assert time.monotonic() < deadline, request_states(db)
                engine.tick(time.time())
                time.sleep(0.02)
        finally:
            engine.close()
            upgraded.close()
    assert request_states(db) == {"succeeded": 12}
    assert sql(db, "SELECT DISTINCT model FROM provider_usage") == [("gpt-4o-mini",)]
    listed = orjson.loads(cli("--db", db, "batches", "--format", "json").stdout)
    assert {b["provider_model"] for b in listed} == {"gpt-4o-mini"}
    assert "ran" in cli("--db", db, "batches", "--wide").output
    shown = cli("--db", db, "show", "r0")
    assert "provider says: it ran gpt-4o-mini, the whole batch used" in shown.output
    (pid,) = sql(db, "SELECT provider_batch_id FROM batches ORDER BY id LIMIT 1")[0]
    receipt = cli("--db", db, "report", "--batch", str(pid))
    said = " ".join(receipt.output.split())
    assert "output tokens (it ran gpt-4o-mini), as we counted" in said, said
