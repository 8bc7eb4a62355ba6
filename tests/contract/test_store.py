"""The Store contract: every test here runs unchanged on SQLite and on PostgreSQL.

The `store` fixture is a real store (a SQLite file, or a PostgreSQL database cloned from a
migrated template); `db` is where it lives, for plain SQL on a separate connection.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from helpers import add_result, body, sql
from llmbatch.errors import StoreError
from llmbatch.importer import RowDefaults
from llmbatch.requests import make_request
from llmbatch.store import Clash, Row, Store, open_store
from llmbatch.store.base import Count
from llmbatch.store.sqlite import SqliteStore
from llmbatch.store.sqlstore import migrations


def rows(
    import_id: int, *items: tuple[str, str], queue: str = "default", first: int = 1
) -> list[Row]:
    """Rows for (custom_id, text) pairs, on consecutive lines from `first`."""
    d = RowDefaults(queue, import_id)
    now = time.time()
    return [
        d.row(make_request(cid, body(text)), n, now) for n, (cid, text) in enumerate(items, first)
    ]


def load(store: Store, *items: tuple[str, str], queue: str = "default") -> int:
    """A committed import of `items`; returns its id."""
    imp = store.begin_import(queue, "test")
    assert store.load_rows(imp, queue, rows(imp, *items, queue=queue)) == []
    store.commit_import(imp, lines=len(items), added=len(items), unchanged=0, rejected=0)
    return imp


def bodies(db: str) -> int:
    return int(sql(db, "SELECT COUNT(*) FROM request_bodies")[0][0])


def stored(db: str, import_id: int | None = None) -> int:
    """Rows physically in `requests` (visible or not), optionally of one import."""
    if import_id is None:
        return int(sql(db, "SELECT COUNT(*) FROM requests")[0][0])
    return int(sql(db, "SELECT COUNT(*) FROM requests WHERE import_id = ?", (import_id,))[0][0])


# -- imports ---------------------------------------------------------------------------------


def test_an_import_is_invisible_until_it_commits(store: Store, db: str) -> None:
    imp = store.begin_import("default", "file.jsonl")
    assert store.load_rows(imp, "default", rows(imp, ("a", "x"), ("b", "y"))) == []
    assert store.load_rows(imp, "default", rows(imp, ("c", "z"), first=3)) == []
    assert stored(db, imp) == 3  # written ...
    assert store.counts() == []  # ... but invisible
    assert store.request_detail("a") == []
    assert not store.has_requests("default") and store.counts("default") == []
    assert store.get_import(imp).state == "loading"

    store.commit_import(imp, lines=3, added=3, unchanged=0, rejected=0)

    assert store.has_requests("default") and not store.has_requests("defaul")

    assert store.counts() == [Count("default", "openai", "gpt-4o-mini", "queued", 3)]
    assert store.counts("default") == store.counts() and store.counts("defaul") == []
    [detail] = store.request_detail("a")
    assert (detail["custom_id"], detail["state"], detail["line"]) == ("a", "queued", 1)
    assert detail["attempts"] == [] and detail["result"] is None
    info = store.get_import(imp)
    assert (info.state, info.lines, info.added, info.queue, info.source) == (
        "committed", 3, 3, "default", "file.jsonl",
    )  # fmt: skip
    kinds = [e["kind"] for e in store.recent_events() if e["import_id"] == imp]
    assert kinds == ["import_committed", "import_started"]  # newest first


def test_abort_deletes_the_rows_and_records_why(store: Store, db: str) -> None:
    keep = load(store, ("kept", "x"))
    imp = store.begin_import("default", "bad.jsonl")
    store.load_rows(imp, "default", rows(imp, ("a", "x"), ("b", "y")))
    store.abort_import(imp, "3 invalid lines")
    assert stored(db, imp) == 0
    assert stored(db, keep) == 1
    assert bodies(db) == 1  # "x", which the kept request shares; "y" went with its request
    info = store.get_import(imp)
    assert (info.state, info.error) == ("failed", "3 invalid lines")
    assert sum(c.n for c in store.counts()) == 1
    # a finished import takes no more rows and cannot commit
    with pytest.raises(StoreError, match="no longer loading"):
        store.load_rows(imp, "default", rows(imp, ("c", "z")))
    with pytest.raises(StoreError, match="aborted or cleaned up"):
        store.commit_import(imp, lines=2, added=2, unchanged=0, rejected=0)
    assert stored(db, imp) == 0


def test_get_import_of_an_unknown_id_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no import 999"):
        store.get_import(999)


def test_requests_with_the_same_body_share_one_stored_body(store: Store, db: str) -> None:
    load(store, ("a", "same"), ("b", "same"), ("c", "other"))
    assert bodies(db) == 2
    [(hashed,)] = sql(db, "SELECT COUNT(DISTINCT body_hash) FROM requests")
    assert hashed == 2
    detail = {r["custom_id"]: r["body"] for r in store.request_detail("b")}
    assert b"same" in detail["b"]


def test_a_line_that_does_not_go_in_leaves_no_body(store: Store, db: str) -> None:
    load(store, ("a", "x"))
    imp = store.begin_import("default", "changed")
    clashes = store.load_rows(imp, "default", rows(imp, ("a", "CHANGED"), ("b", "y"), ("b", "z")))
    assert [c.kind for c in clashes] == ["conflict", "duplicate"]
    stored_bodies = [bytes(b) for (b,) in sql(db, "SELECT body FROM request_bodies")]
    assert len(stored_bodies) == 2 and not any(b"CHANGED" in b or b"z" in b for b in stored_bodies)


# -- clashes ---------------------------------------------------------------------------------


def test_a_custom_id_twice_in_one_import_is_a_duplicate(store: Store, db: str) -> None:
    imp = store.begin_import("default", "f")
    clashes = store.load_rows(imp, "default", rows(imp, ("a", "x"), ("b", "y"), ("a", "z")))
    assert clashes == [Clash(3, "a", "duplicate", other_line=1)]
    # across chunks of the same import too
    clashes = store.load_rows(imp, "default", rows(imp, ("b", "w"), first=4))
    assert clashes == [Clash(4, "b", "duplicate", other_line=2)]
    assert stored(db, imp) == 2


def test_clashes_after_chunks_that_went_in_keep_each_row_and_body_once(
    store: Store, db: str
) -> None:
    """A body stored before, then a duplicate custom_id, each after a chunk that went in
    whole (PostgreSQL copies chunks straight in until one clashes, then stages the rest of
    the import): the same rows and bodies as ever, and the next import is as any other."""
    load(store, ("old", "shared"))
    imp = store.begin_import("default", "f")
    assert store.load_rows(imp, "default", rows(imp, ("a", "x"), ("b", "y"))) == []
    assert store.load_rows(imp, "default", rows(imp, ("c", "shared"), ("d", "x"), first=3)) == []
    assert store.load_rows(imp, "default", rows(imp, ("e", "z"), ("a", "w"), first=5)) == [
        Clash(6, "a", "duplicate", other_line=1)
    ]
    assert store.load_rows(imp, "default", rows(imp, ("f", "v"), ("g", "v"), first=7)) == []
    store.commit_import(imp, lines=8, added=7, unchanged=0, rejected=0)
    query = "SELECT custom_id, line FROM requests WHERE import_id = ? ORDER BY id"
    assert [(c, int(n)) for c, n in sql(db, query, (imp,))] == [
        ("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 7), ("g", 8),
    ]  # fmt: skip
    assert bodies(db) == 5  # shared, x, y, z, v: never w
    later = load(store, ("h", "y"), ("i", "u"))
    assert stored(db, later) == 2 and bodies(db) == 6
    [orphans] = sql(
        db,
        "SELECT COUNT(*) FROM requests r WHERE NOT EXISTS "
        "(SELECT 1 FROM request_bodies b WHERE b.hash = r.body_hash)",
    )
    assert orphans == (0,)


def test_the_same_request_again_is_unchanged(store: Store, db: str) -> None:
    first = load(store, ("a", "x"), ("b", "y"))
    imp = store.begin_import("default", "again")
    clashes = store.load_rows(imp, "default", rows(imp, ("b", "y"), ("c", "z")))
    assert clashes == [Clash(1, "b", "unchanged", other_line=2, other_import=first)]
    assert stored(db, imp) == 1


def test_the_same_custom_id_with_another_body_is_a_conflict(store: Store) -> None:
    first = load(store, ("a", "x"))
    imp = store.begin_import("default", "changed")
    clashes = store.load_rows(imp, "default", rows(imp, ("a", "CHANGED")))
    assert clashes == [Clash(1, "a", "conflict", other_line=1, other_import=first)]


def test_a_custom_id_another_import_is_loading_is_busy(store: Store) -> None:
    a = store.begin_import("default", "a")
    store.load_rows(a, "default", rows(a, ("x", "1")))
    b = store.begin_import("default", "b")
    assert store.load_rows(b, "default", rows(b, ("x", "1"))) == [
        Clash(1, "x", "busy", other_import=a)
    ]


def test_queues_are_separate_namespaces(store: Store) -> None:
    load(store, ("a", "x"), queue="one")
    load(store, ("a", "other body"), queue="two")  # no clash: another queue
    assert [c.queue for c in store.counts()] == ["one", "two"]
    assert [c.queue for c in store.counts("two")] == ["two"]
    assert len(store.request_detail("a")) == 2
    [only] = store.request_detail("a", "two")
    assert only["queue"] == "two"


def test_counts_group_by_queue_provider_model_and_state(store: Store, db: str) -> None:
    imp = store.begin_import("q", "f")
    d = RowDefaults("q", imp)
    now = time.time()
    reqs = [
        make_request("a", body(model="m1")),
        make_request("b", body(model="m1")),
        make_request("c", body(model="m2")),
        make_request(
            "d", {"model": "claude", "max_tokens": 5, "messages": []}, provider="anthropic"
        ),
    ]
    store.load_rows(imp, "q", [d.row(r, n, now) for n, r in enumerate(reqs, 1)])
    store.commit_import(imp, lines=4, added=4, unchanged=0, rejected=0)
    add_result(db, "b", queue="q")
    assert store.counts() == [
        Count("q", "anthropic", "claude", "queued", 1),
        Count("q", "openai", "m1", "queued", 1),
        Count("q", "openai", "m1", "succeeded", 1),
        Count("q", "openai", "m2", "queued", 1),
    ]


# -- dead imports ----------------------------------------------------------------------------

DYING_IMPORT = textwrap.dedent(
    """
    import os, sys, time
    from llmbatch.importer import RowDefaults
    from llmbatch.requests import make_request
    from llmbatch.store import open_store

    store = open_store(sys.argv[1])
    imp = store.begin_import("default", "dying.jsonl")
    d = RowDefaults("default", imp)
    rows = [d.row(make_request(f"d{n}", {"model": "m"}), n, time.time()) for n in range(1, 6)]
    store.load_rows(imp, "default", rows)
    print(imp, flush=True)
    os.kill(os.getpid(), 9)
    """
)


def test_an_import_whose_process_died_is_aborted_and_its_rows_deleted(
    store: Store, db: str
) -> None:
    live = store.begin_import("default", "mine")  # this process is alive: left alone
    store.load_rows(live, "default", rows(live, ("mine", "x")))
    proc = subprocess.run(
        [sys.executable, "-c", DYING_IMPORT, db], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    dead = int(proc.stdout)
    assert stored(db, dead) == 5
    assert store.get_import(dead).state == "loading"

    assert store.clean_dead_imports() == [dead]

    assert stored(db, dead) == 0
    info = store.get_import(dead)
    assert info.state == "failed" and "died" in (info.error or "")
    assert store.get_import(live).state == "loading" and stored(db, live) == 1
    assert store.clean_dead_imports() == []


def test_an_import_on_another_host_is_dead_only_when_its_heartbeat_is_stale(
    store: Store, db: str
) -> None:
    stale = store.begin_import("default", "stale")
    store.load_rows(stale, "default", rows(stale, ("s", "x")))
    fresh = store.begin_import("default", "fresh")
    store.load_rows(fresh, "default", rows(fresh, ("f", "x")))
    now = time.time()
    sql(db, "UPDATE imports SET owner = 'elsewhere:1:1', heartbeat_at = ? WHERE id = ?",
        (now - 3600, stale))  # fmt: skip
    sql(db, "UPDATE imports SET owner = 'elsewhere:2:1', heartbeat_at = ? WHERE id = ?",
        (now, fresh))  # fmt: skip
    assert store.clean_dead_imports() == [stale]
    assert stored(db, stale) == 0 and stored(db, fresh) == 1


def test_rows_left_by_an_interrupted_abort_are_deleted_on_cleanup(store: Store, db: str) -> None:
    imp = store.begin_import("default", "f")
    store.load_rows(imp, "default", rows(imp, ("a", "x"), ("b", "y")))
    # the process marked the import failed, then died before deleting its rows
    sql(db, "UPDATE imports SET state = 'failed' WHERE id = ?", (imp,))
    assert stored(db, imp) == 2
    assert store.clean_dead_imports() == []
    assert stored(db, imp) == 0


# -- results ---------------------------------------------------------------------------------


def test_iter_results_pages_in_recorded_order_and_resumes_after_a_cursor(
    store: Store, db: str
) -> None:
    ids = [f"r{i}" for i in range(7)]
    load(store, *((cid, cid) for cid in ids))
    load(store, ("elsewhere", "x"), queue="other")
    order = ["r3", "r0", "r6", "r1", "r5", "r2"]  # r4 has no result yet
    for cid in order:
        add_result(db, cid, succeeded=cid != "r5")
    add_result(db, "elsewhere", queue="other")

    everything = list(store.iter_results(queue="default", page=2))
    assert [r.custom_id for r in everything] == order
    cursors = [r.cursor for r in everything]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert [r.custom_id for r in store.iter_results(page=4)] == [*order, "elsewhere"]

    resumed = list(store.iter_results(queue="default", after=cursors[2], page=2))
    assert [r.custom_id for r in resumed] == order[3:]
    assert list(store.iter_results(queue="default", after=cursors[-1])) == []

    failed = list(store.iter_results(state="failed"))
    assert [(r.custom_id, r.state, r.error_code, r.body) for r in failed] == [
        ("r5", "failed", "server_error", None)
    ]
    ok = everything[0]
    assert (ok.state, ok.status_code, ok.provider_request_id, ok.provider) == (
        "succeeded", 200, "req_1", "openai",
    )  # fmt: skip
    assert isinstance(ok.body, bytes) and b"chat.completion" in ok.body
    assert (ok.input_tokens, ok.output_tokens) == (12, 3)


def test_request_detail_includes_attempts_and_the_result(store: Store, db: str) -> None:
    load(store, ("a", "x"))
    add_result(db, "a", succeeded=False)
    [d] = store.request_detail("a")
    assert d["state"] == "failed"
    assert [a["outcome"] for a in d["attempts"]] == ["failed"]
    assert d["result"]["error_code"] == "server_error"


# -- identity and schema ---------------------------------------------------------------------


def test_store_id_is_made_once_and_kept_across_reopen(store: Store, db: str) -> None:
    assert store.store_id.startswith("lb") and len(store.store_id) > 6
    again = open_store(db)
    try:
        assert again.store_id == store.store_id
    finally:
        again.close()


def test_each_new_store_gets_its_own_id(tmp_path: Path) -> None:
    a, b = open_store(str(tmp_path / "a.db")), open_store(str(tmp_path / "b.db"))
    assert a.store_id != b.store_id
    a.close()
    b.close()


def test_a_schema_newer_than_this_llmbatch_is_refused(store: Store, db: str) -> None:
    sql(db, "UPDATE meta SET value = '9999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this llmbatch knows"):
        open_store(db)


def test_fresh_schema_records_the_latest_migration(store: Store, db: str) -> None:
    latest = migrations("sqlite" if not db.startswith("postgres") else "postgres")[-1][0]
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]


def test_sqlite_migrating_from_zero_equals_the_fresh_schema(tmp_path: Path) -> None:
    fresh = SqliteStore(tmp_path / "fresh.db")
    migrated = SqliteStore(tmp_path / "migrated.db", migrate=False)
    assert migrated.schema_snapshot() == []
    migrated.migrate_from_zero()
    assert migrated.schema_snapshot() == fresh.schema_snapshot()
    assert len(fresh.schema_snapshot()) > 6


def test_postgres_migrating_from_zero_equals_the_fresh_schema(
    pg_dsn: str, empty_pg_dsn: str
) -> None:
    from llmbatch.store.postgres import PostgresStore

    fresh = PostgresStore(pg_dsn)
    migrated = PostgresStore(empty_pg_dsn, migrate=False)
    try:
        assert migrated.schema_snapshot() == []
        migrated.migrate_from_zero()
        assert migrated.schema_snapshot() == fresh.schema_snapshot()
        assert len(fresh.schema_snapshot()) > 20
    finally:
        fresh.close()
        migrated.close()


# -- SQLite specifics ------------------------------------------------------------------------


def test_sqlite_runs_in_wal_with_a_busy_timeout_of_at_least_30_s(sqlite_db: str) -> None:
    store = SqliteStore(sqlite_db)
    try:
        assert sql(sqlite_db, "PRAGMA journal_mode") == [("wal",)]  # persistent, seen by all
        (timeout_ms,) = store._conn.execute("PRAGMA busy_timeout").fetchone()
        assert timeout_ms >= 30_000
    finally:
        store.close()


def _hold_write_lock(path: str, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def test_sqlite_writers_wait_for_the_lock_instead_of_failing(sqlite_db: str) -> None:
    store = SqliteStore(sqlite_db)
    held = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(sqlite_db, 1.0, held))
    holder.start()
    held.wait(5)
    started = time.monotonic()
    imp = store.begin_import("default", "waits")  # blocks until the other writer commits
    waited = time.monotonic() - started
    holder.join()
    assert waited > 0.5
    assert store.get_import(imp).state == "loading"
    store.close()


def test_sqlite_busy_timeout_is_configurable(sqlite_db: str) -> None:
    SqliteStore(sqlite_db).close()
    impatient = SqliteStore(sqlite_db, busy_timeout=0.1)
    held = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(sqlite_db, 1.0, held))
    holder.start()
    held.wait(5)
    with pytest.raises(StoreError, match="locked"):
        impatient.begin_import("default", "gives up")
    holder.join()
    impatient.close()
