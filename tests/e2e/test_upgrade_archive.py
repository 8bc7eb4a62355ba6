"""Migration 0008 (archives, the webhook outbox) on a store made by the previous schema with
batches in flight: it upgrades, and a worker with `[archive]` and `[webhooks]` drains it,
archiving every batch, those the previous code submitted included, and delivering a signed
event for each.

The previous store is made by running the current engine until three batches are in flight
at the emulator, then taking 0008 back out (its tables dropped, the schema version set back);
the test first checks that this leaves exactly the schema every migration before 0008 makes.
(tests/e2e/test_upgrade.py upgrades the stores the previous code itself made through 0008.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import (
    UNDO_0008,
    fast_settings,
    request_states,
    roll_back,
    sql,
    tick_until_finalizing,
)
from llmbatch import Queue
from llmbatch.archive import ArchiveSettings, from_archive
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.store.sqlstore import migrations
from llmbatch.webhooks import WebhookSettings
from receiver import Receiver

# on SQLite and PostgreSQL (migrations differ per dialect)
pytestmark = pytest.mark.both_backends

THIS = 8


def test_a_store_with_batches_in_flight_upgrades_and_every_batch_is_archived(
    db: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBATCH_TEST_WEBHOOK_SECRET", "upgrade-secret")
    with Queue(db, "q") as q:
        q.add_many(
            [
                {
                    "custom_id": f"r{i}",
                    "body": {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"{i}"}],
                    },
                }
                for i in range(12)
            ]
        )
    with running(seed=32) as emu:
        emu.control.next_batches(count=3, hold="finalizing")
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=4))
        tick_until_finalizing(engine, db, 3)

        # the previous code's store: 0008 taken back out
        roll_back(db, UNDO_0008, THIS, request, tmp_path)
        assert request_states(db) == {"submitted": 12}

        upgraded: Any = open_store(db)
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(migrations(upgraded.dialect)[-1][0]),)  # type: ignore[attr-defined]
        ]
        for (pid,) in sql(db, "SELECT provider_batch_id FROM batches"):
            emu.control.release(str(pid))
        root = tmp_path / "archive"
        rx = Receiver("upgrade-secret").__enter__()
        hooks = WebhookSettings(url=rx.url, secret_env="LLMBATCH_TEST_WEBHOOK_SECRET")
        archive = ArchiveSettings(url=f"file://{root}")
        engine = Engine(upgraded, fast_settings(emu, archive=archive, webhooks=hooks))
        deadline = time.monotonic() + 30
        try:
            while (
                upgraded.unfinished_count()
                or sql(db, "SELECT COUNT(*) FROM archives WHERE state = 'done'") != [(3,)]
                or sql(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL") != [(0,)]
            ):
                assert time.monotonic() < deadline, request_states(db)
                engine.tick(time.time())
                time.sleep(0.02)
        finally:
            engine.close()
            upgraded.close()
            rx.__exit__()
    assert request_states(db) == {"succeeded": 12}
    kinds = sorted(p["type"] for p in rx.verified().values())
    assert kinds == ["batch.ingested"] * 3 + ["queue.finished"]
    got = {orjson.loads(x)["custom_id"] for x in from_archive(f"file://{root}")}
    assert got == {f"r{i}" for i in range(12)}
