"""A store the previous code left mid-work, upgraded by this code and drained (the standing
rule for every schema change).

Each `tests/data/stores/vNNNN/` was made by `tests/data/stores/make_store.py` running the code
of schema version NNNN (see that script): a SQLite file and a PostgreSQL dump, each with the
data dir of the emulator it talked to. In each store: a batch in flight, an intent whose
create acted at the provider but was answered 500 (the store does not know the batch), an
intent whose create never acted, and requests never packed. This test copies a fixture,
starts the emulator on the copy of its data dir, opens the store (which migrates it) and
runs the engine until every request has its one result, and checks that no intent was
created twice: the batch in flight is ingested, the unknown one is found and adopted.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest

from helpers import fast_settings, request_states, results_per_request, sql
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.store.sqlstore import migrations

STORES = Path(__file__).parent.parent / "data" / "stores"
FIXTURES = sorted(p for p in STORES.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir())


def load_dump(dump: Path, dsn: str) -> None:
    """Restore a plain-SQL pg_dump into an empty database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(dump.read_text(encoding="utf-8"))  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_store_left_mid_work_by_the_previous_code_upgrades_and_drains(
    fixture: Path, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    made: dict[str, Any] = json.loads((fixture / "made.json").read_text())
    source = fixture / backend
    if not source.is_dir():
        pytest.skip(f"{fixture.name} has no {backend} store")
    shutil.copytree(source, tmp_path / backend)
    data_dir = tmp_path / backend / "emulator"
    if backend == "sqlite":
        db = str(tmp_path / backend / "llmbatch.db")
        # `*.db` is ignored by git: a fixture committed without its store must fail loudly.
        assert (source / "llmbatch.db").is_file(), f"{source}/llmbatch.db is not checked in"
    else:
        db = str(request.getfixturevalue("empty_pg_dsn"))
        load_dump(source / "dump.sql", db)
    before = {str(cid) for (cid,) in sql(db, "SELECT custom_id FROM requests")}
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(made["schema"]),)
    ]
    with running(data_dir=data_dir, seed=1) as emu:
        store = open_store(db)  # migrates
        latest = migrations("sqlite" if backend == "sqlite" else "postgres")[-1][0]
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
        engine = Engine(store, fast_settings(emu, delete_files=False))
        try:
            deadline = time.monotonic() + 60
            while store.unfinished_count():
                assert time.monotonic() < deadline, request_states(db)
                engine.tick(time.time())
                time.sleep(0.02)
        finally:
            engine.close()
            store.close()
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        store_id = str(sql(db, "SELECT value FROM meta WHERE key = 'store_id'")[0][0])
        per_intent = Counter(
            str((b.metadata or {}).get("llmbatch_intent"))
            for b in client.batches.list(limit=100)
            if (b.metadata or {}).get("llmbatch_store") == store_id
        )
    assert results_per_request(db) == dict.fromkeys(before, 1)
    assert request_states(db) == {"succeeded": len(before)}
    rows = sql(db, "SELECT id, provider_batch_id, state FROM batches ORDER BY id")
    assert {str(s) for _i, _p, s in rows} == {"ingested"}
    assert per_intent == Counter({str(i): 1 for i, _p, _s in rows}), per_intent  # none twice
    adopted = sql(db, "SELECT batch_id FROM events WHERE kind = 'adopted'")
    assert adopted == [(2,)], adopted  # the batch whose create was answered 500
