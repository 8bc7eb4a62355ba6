"""Make a store as a given version of llmbatch leaves it mid-work, for the upgrade test.

Run it with the code of the version the fixture stands for (its `src` first on PYTHONPATH),
not with the code under test: the point is a store written by the previous code.

    git archive <commit> src | tar -x -C /tmp/llmbatch-old
    PYTHONPATH=/tmp/llmbatch-old/src .venv/bin/python tests/data/stores/make_store.py \\
        tests/data/stores/v0001 --pg postgresql://postgres@127.0.0.1:5432/postgres

It writes, per backend, `OUT/<backend>/`: the store (`llmbatch.db`, or `dump.sql` from
pg_dump, plain SQL) and `emulator/`, the data dir of the emulator the store talked to. The
emulator's clock is frozen (time scale 0), so what was in flight is still in flight when a
test starts the emulator again on a copy of that folder. In the store:

- intent 1 (gpt-4o-mini, 10 requests): submitted, its batch in flight;
- intent 2 (gpt-4o, 10): uploaded, its create acted at the provider but answered 500: the
  batch exists, the store does not know it;
- intent 3 (gpt-4.1-mini, 10): uploaded, its create answered 500 before acting: nothing exists;
- 10 requests (gpt-4o-mini) queued, never packed.

Only the public API is used (Queue, Engine, EngineSettings, the emulator and its control
API), so later versions can make their own fixture (v0002/, ...) with this same script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

KEY_ENV = "LLMBATCH_FIXTURE_KEY"
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")


def items(model: str, prefix: str, n: int = 10) -> list[dict[str, object]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "body": {"model": model, "messages": [{"role": "user", "content": f"{prefix} {i}"}]},
        }
        for i in range(n)
    ]


def fill(db: str, folder: Path) -> dict[str, object]:
    """Leave the store at `db` and the emulator in `folder/emulator` mid-work."""
    from llmbatch import Queue
    from llmbatch.emulator import running
    from llmbatch.engine import Engine, EngineSettings
    from llmbatch.store import open_store

    os.environ[KEY_ENV] = "sk-fixture-not-a-secret"
    with running(data_dir=folder / "emulator", time_scale=0.0, seed=1) as emu:
        settings = EngineSettings(
            poll_interval=0.05, settle_seconds=0.5, backoff_seconds=0.1, delete_files=False,
            providers={"openai": {"base_url": emu.base_url, "api_key_env": KEY_ENV}},
        )  # fmt: skip
        faults = (None, "after", "before")  # intent 2's create acts, intent 3's never does
        for model, prefix, fault in zip(MODELS, ("a", "b", "c"), faults, strict=True):
            with Queue(db, "q") as q:
                q.add_many(items(model, prefix))
            if fault is not None:
                emu.control.add_fault("batches.create", "500", mode=fault, count=1)
            engine = Engine(open_store(db), settings)
            try:
                engine.tick(time.time())
            finally:
                engine.close()
                engine.store.close()
        with Queue(db, "q") as q:
            q.add_many(items(MODELS[0], "d"))
        calls = emu.control.calls()
    version = open_store(db)
    try:
        batches = version.batch_overview()
    finally:
        version.close()
    return {"creates": sum(1 for c in calls if c["path"] == "/v1/batches" and c["method"] == "POST"),
            "batches": len(batches)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the fixture folder, e.g. tests/data/stores/v0001")
    parser.add_argument("--pg", help="a PostgreSQL DSN whose user may create databases")
    parser.add_argument("--commit", default="unknown", help="the commit whose code runs this")
    args = parser.parse_args()
    from llmbatch.store.sqlstore import migrations

    made: dict[str, object] = {"commit": args.commit, "schema": migrations("sqlite")[-1][0]}
    sqlite = args.out / "sqlite"
    shutil.rmtree(sqlite, ignore_errors=True)
    sqlite.mkdir(parents=True)
    made["sqlite"] = fill(str(sqlite / "llmbatch.db"), sqlite)
    if args.pg:
        postgres = args.out / "postgres"
        shutil.rmtree(postgres, ignore_errors=True)
        postgres.mkdir(parents=True)
        name = f"llmbatch_fixture_{uuid.uuid4().hex[:8]}"
        admin = args.pg
        subprocess.run(["psql", admin, "-qc", f'CREATE DATABASE "{name}"'], check=True)
        dsn = urlunsplit(urlsplit(admin)._replace(path="/" + name))
        try:
            made["postgres"] = fill(dsn, postgres)
            dump = subprocess.run(
                ["pg_dump", "--inserts", "--no-owner", "--no-privileges", "--no-comments", dsn],
                check=True, capture_output=True,
            ).stdout  # fmt: skip
            # plain SQL any client runs: psql's meta-commands (\restrict) left out
            lines = [ln for ln in dump.splitlines(keepends=True) if not ln.startswith(b"\\")]
            (postgres / "dump.sql").write_bytes(b"".join(lines))
        finally:
            subprocess.run(
                ["psql", admin, "-qc", f'DROP DATABASE "{name}" WITH (FORCE)'], check=True
            )
    (args.out / "made.json").write_text(json.dumps(made, indent=2) + "\n")
    print(json.dumps(made), file=sys.stderr)


if __name__ == "__main__":
    main()
