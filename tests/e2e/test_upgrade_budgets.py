"""Migration 0004 (budgets in the store, the ledger) on a store made by the previous schema,
with batches in flight and their worst case reserved: it upgrades, and the batches drain,
settle and are checked against the provider.

The previous store is made by running the current engine until three batches are in flight
at the emulator, then taking 0004 back out (its tables and columns dropped, the schema version
set back); the test first checks that this leaves exactly the schema every migration before
0004 makes, so the store is the one the previous code would have left. (A store made by the
previous code itself, tests/data/stores/v0003, is upgraded by tests/e2e/test_upgrade.py; this
test adds budgets with reservations in flight, which that fixture has none of.)
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import (
    E2E_KEY_ENV,
    UNDO_0004,
    fast_settings,
    request_states,
    roll_back,
    sql,
    tick_until_finalizing,
)
from llmbatch import Queue
from llmbatch.budget import Budget, BudgetSettings
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import batching, open_store

# on SQLite and PostgreSQL (migrations differ per dialect)
pytestmark = pytest.mark.both_backends

THIS = 4


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


def test_a_store_with_batches_in_flight_upgrades_and_drains(
    db: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the code before 0005 drew no nonce: its batches' custom ids are `<store>-<attempt>`
    before_0005 = [True]
    drawn = batching.new_nonce
    monkeypatch.setattr(batching, "new_nonce", lambda: None if before_0005[0] else drawn())
    with Queue(db, "q") as q:
        q.add_many(
            [
                {
                    "custom_id": f"r{i}",
                    "body": {
                        "model": "gpt-4o-mini",
                        "max_tokens": 20,
                        "messages": [{"role": "user", "content": f"q {i}"}],
                    },
                }
                for i in range(12)
            ]
        )
    budget = BudgetSettings((Budget(None, "day", Decimal(1)),))
    with running(seed=31) as emu:
        emu.control.next_batches(count=3, hold="finalizing")
        settings = fast_settings(emu, max_batch_requests=4, budgets=budget)
        engine = Engine(open_store(db), settings)
        tick_until_finalizing(engine, db, 3)

        # the previous code's store: 0004 taken back out
        roll_back(db, UNDO_0004, THIS, request, tmp_path)
        reserved = int(sql(db, "SELECT SUM(reserved) FROM spend")[0][0])
        assert reserved > 0 and request_states(db) == {"submitted": 12}

        # upgraded by opening it, then drained by a worker with no budget of its own: the
        # budget its predecessors last enforced is the store's now
        before_0005[0] = False
        upgraded = open_store(db)
        assert [int(w) for (w,) in sql(db, "SELECT worst FROM spend")] == [
            int(r) for (r,) in sql(db, "SELECT reserved FROM spend")
        ]
        assert [(b.queue, b.period, b.limit_micro) for b in upgraded.stored_budgets()[0]] == [
            ("*", "day", 1_000_000)
        ]
        for (pid,) in sql(db, "SELECT provider_batch_id FROM batches"):
            emu.control.release(str(pid))
        engine = Engine(upgraded, fast_settings(emu))
        deadline = time.monotonic() + 20
        try:
            while upgraded.unfinished_count():
                assert time.monotonic() < deadline, request_states(db)
                engine.tick(time.time())
                time.sleep(0.02)
        finally:
            engine.close()
    assert request_states(db) == {"succeeded": 12}
    assert int(sql(db, "SELECT SUM(reserved) FROM spend")[0][0]) == 0
    assert 0 < int(sql(db, "SELECT SUM(spent) FROM spend")[0][0]) < reserved
    checks = upgraded.usage_checks(every=True)
    assert len(checks) == 3 and not any(c.differs for c in checks)
    upgraded.close()
