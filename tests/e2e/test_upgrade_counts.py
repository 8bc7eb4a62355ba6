"""Migration 0009 (request counts kept by the store) on a store made by the previous schema
with batches in flight: it upgrades, the counts it seeds equal a fresh GROUP BY, and they
still do once a worker has drained the store.

The previous store is made by running the current engine until three batches are in flight
at the emulator, then taking 0009 back out (its triggers, tables and index dropped, the
schema version set back); the test first checks that this leaves exactly the schema every
migration before 0009 makes. (tests/e2e/test_upgrade.py upgrades the stores the previous
code itself made through 0009.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    UNDO_0009,
    assert_counts_exact,
    fast_settings,
    kept_counts,
    migration_before,
    request_states,
    schema_before,
    sql,
)
from llmbatch import Queue
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.store.sqlstore import migrations

THIS = 9


def _items(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]},
        }
        for i in range(n)
    ]


def test_a_store_with_batches_in_flight_upgrades_and_its_counts_stay_exact(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with Queue(db, "q") as q:
        q.add_many(_items("r", 12))
    with running(seed=33) as emu:
        emu.control.next_batches(count=3, hold="finalizing")
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=4))
        deadline = time.monotonic() + 20
        while (
            sql(db, "SELECT COUNT(*) FROM batches WHERE provider_status = 'finalizing'")[0][0] < 3
        ):
            assert time.monotonic() < deadline, request_states(db)
            engine.tick(time.time())
            time.sleep(0.02)
        engine.close()
        engine.store.close()
        # work enqueued after the batches left, with a deadline already missed
        with Queue(db, "late") as q:
            q.add_many(_items("l", 3), deadline=time.time() - 60)

        # the previous code's store: 0009 taken back out
        store: Any = open_store(db)
        with store._write() as cur:
            for statement in UNDO_0009[store.dialect]:
                cur.execute(statement)
            cur.execute(
                store._dialect("UPDATE meta SET value = ? WHERE key = 'schema_version'"),
                [str(migration_before(store.dialect, THIS))],
            )
        assert store.schema_snapshot() == schema_before(THIS, db, request, tmp_path)
        store.close()
        assert request_states(db) == {"submitted": 12, "queued": 3}

        upgraded: Any = open_store(db)
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(migrations(upgraded.dialect)[-1][0]),)  # type: ignore[attr-defined]
        ]
        assert_counts_exact(db, "seeded by the migration")
        assert kept_counts(db) == {
            ("q", "openai", "gpt-4o-mini", "submitted"): (12, 0, 0),
            ("late", "openai", "gpt-4o-mini", "queued"): (3, 0, 0),
        }
        seen = upgraded.observe(time.time(), time.time() + 86400)
        assert seen.deadlines == {"late": (3, 0)}
        assert set(seen.oldest) == {"q", "late"}

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
    assert request_states(db) == {"succeeded": 15}
    assert_counts_exact(db, "drained")
    assert kept_counts(db) == {
        ("q", "openai", "gpt-4o-mini", "succeeded"): (12, 0, 0),
        ("late", "openai", "gpt-4o-mini", "succeeded"): (3, 0, 0),
    }
    assert sql(db, "SELECT COUNT(*) FROM request_ages") == [(0,)]
