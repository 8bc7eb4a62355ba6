"""Migration 0003 on a store made before it, with batches in flight: every request that had
ended without a result row (cancelled while waiting or in its batch, too large for any
batch) gets one, the export then has one line per request, and the queue drains.

The old store is made with today's code and put back the way the code before 0003 left
it: schema version 2 or lower, no result rows (nor batchless attempts) for such ends, and
nothing of the later migrations (0004's tables and columns).
"""

from __future__ import annotations

import time

import pytest

from helpers import UNDO_0004, fast_settings, is_pg, sql, undo_statements
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.export import export
from llmbatch.importer import enqueue_requests
from llmbatch.requests import make_request
from llmbatch.store import open_store
from llmbatch.store.batching import Outcome
from llmbatch.store.sqlstore import migrations

# on SQLite and PostgreSQL (migrations differ per dialect)
pytestmark = pytest.mark.both_backends

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _as_before_0003(db: str) -> None:
    """Remove what 0003 and the code since add, as a store made before it has none."""
    sql(
        db,
        "DELETE FROM results WHERE attempt_id IN (SELECT id FROM attempts WHERE outcome IN "
        "('unsent', 'cancelled'))",
    )
    sql(db, "DELETE FROM attempts WHERE outcome = 'unsent'")
    for statement in undo_statements(UNDO_0004, "postgres" if is_pg(db) else "sqlite"):
        sql(db, statement)
    # the version before 0003 (0002 is another change's, already in this store's schema)
    sql(db, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def test_upgrading_gives_every_ended_request_its_result_and_drains(db: str) -> None:
    with running() as emu:
        settings = fast_settings(emu)
        store = open_store(db)
        enqueue_requests(store, (make_request(f"r{i}", BODY) for i in range(8)), queue="q")
        engine = Engine(store, settings)
        now = time.time()
        emu.control.next_batches(hold="validating")
        engine.tick(now)  # one batch of 8 in flight, held there
        [batch] = store.open_batches()
        enqueue_requests(store, (make_request(f"w{i}", BODY) for i in range(3)), queue="q")
        store.request_cancel(store.scope_request_ids("q", ["w0", "w1"], None), now)
        token = store.acquire_lease("engine", engine.holder, 600, now)
        assert token is not None
        assert store.fail_unsendable(
            int(store.request_detail("w2", "q")[0]["id"]), "too large", now, token
        )
        # one request of the batch in flight is cancelled in it (as a user's cancel ends)
        [(attempt, _req, _line), *_] = store.unfinished_attempts(batch.id)
        store.apply_outcomes(
            batch.id, [Outcome(attempt, "cancelled", error_code="batch_cancelled")], now, token
        )
        engine.close()
        store.close()
        _as_before_0003(db)
        assert sql(db, "SELECT COUNT(*) FROM results") == [(0,)]

        store = open_store(db)  # migrates
        latest = migrations(store.dialect)[-1][0]  # type: ignore[attr-defined]
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
        ended = {r.custom_id: (r.state, r.error_code) for r in export(store, queue="q")}
        assert ended["w0"] == ended["w1"] == ("cancelled", "cancelled")
        assert ended["w2"] == ("failed", "too_large")
        assert ("cancelled", "batch_cancelled") in ended.values()
        # nothing that cost nothing is counted in the cost totals
        assert sql(db, "SELECT COALESCE(SUM(requests), 0) FROM cost_totals") == [(0,)]
        engine = Engine(store, settings)
        emu.control.release(str(batch.provider_batch_id))
        deadline = time.monotonic() + 60
        while store.unfinished_count():
            engine.tick(time.time())
            assert time.monotonic() < deadline
            time.sleep(0.02)
        engine.close()
        lines = list(export(store, queue="q").lines())
        store.close()
    assert len(lines) == 11  # one per request: 7 answered, 1 cancelled in its batch, 3 without
