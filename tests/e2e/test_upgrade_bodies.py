"""Migration 0012 (request bodies in their own table, keyed by the canonical body hash) on a
store made by the previous schema with batches in flight and requests still queued: it
upgrades, every body moves once (requests with the same body share one row), and a worker
drains it: the queued requests are packed from the new table, the batches in flight are read
back, and `show` and the estimate still see each request's body.

The previous store is made by running the current engine until three batches are in flight
at the emulator, then taking 0012 back out (each request given its body back, the table
dropped, the schema version set back); the test first checks that this leaves exactly the
schema every migration before 0012 makes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import (
    UNDO_0012,
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

THIS = 12


def _body(i: int) -> dict[str, Any]:
    # r0..r5, r12 and r13 say the same thing: eight requests, one body
    text = "same" if i < 6 or i in (12, 13) else f"hi {i}"
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def test_a_store_with_batches_in_flight_upgrades_its_bodies_once_and_drains(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with Queue(db, "q") as q:
        q.add_many([{"custom_id": f"r{i}", "body": _body(i)} for i in range(12)])
    with running(seed=12) as emu:
        emu.control.next_batches(count=2, hold="finalizing")
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=4))
        tick_until_finalizing(engine, db, 2)
        with Queue(db, "q") as q:  # and requests still queued
            q.add_many([{"custom_id": f"r{i}", "body": _body(i)} for i in range(12, 16)])
        with_bodies = (
            "SELECT r.custom_id, b.body FROM requests r "
            "JOIN request_bodies b ON b.hash = r.body_hash"
        )
        before = {c: bytes(b) for c, b in sql(db, with_bodies)}
        assert sql(db, "SELECT COUNT(*) FROM requests WHERE state = 'queued'") == [(4,)]

        # the previous code's store: 0012 taken back out
        roll_back(db, UNDO_0012, THIS, request, tmp_path)
        rolled = sql(db, "SELECT custom_id, body FROM requests")
        assert {c: bytes(b) for c, b in rolled} == before

        upgraded: Any = open_store(db)
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(migrations(upgraded.dialect)[-1][0]),)
        ]
        # every body once, keyed by its hash, and none left in requests
        assert sql(db, "SELECT COUNT(*) FROM request_bodies") == [(9,)]
        assert {c: bytes(b) for c, b in sql(db, with_bodies)} == before
        columns = (
            "SELECT name FROM pragma_table_info('requests')"
            if upgraded.dialect == "sqlite"
            else "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'"
        )
        assert "body" not in {c for (c,) in sql(db, columns)}

        for (pid,) in sql(
            db, "SELECT provider_batch_id FROM batches WHERE provider_status = 'finalizing'"
        ):
            emu.control.release(str(pid))
        engine = Engine(upgraded, fast_settings(emu, max_batch_requests=4))
        deadline = time.monotonic() + 30
        try:
            while upgraded.unfinished_count():
                assert time.monotonic() < deadline, request_states(db)
                engine.tick(time.time())
                time.sleep(0.02)
        finally:
            engine.close()
            upgraded.close()
    assert request_states(db) == {"succeeded": 16}
    shown = orjson.loads(cli("--db", db, "show", "r14", "--format", "json").stdout)
    assert "hi 14" in orjson.dumps(shown).decode()
    # the requests' bodies are the same after draining: no state change touched them
    assert sql(db, "SELECT COUNT(*) FROM request_bodies") == [(9,)]
