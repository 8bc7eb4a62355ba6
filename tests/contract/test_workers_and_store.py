"""Workers and the store (issue 14): telling live workers apart, an abort that races a
commit, a lease that ran out, and files created for the owner only. On every store."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import body, sql
from llmbatch.engine import Engine
from llmbatch.importer import RowDefaults
from llmbatch.requests import make_request
from llmbatch.store import Store, open_store
from llmbatch.store.batching import LeaseLost
from llmbatch.store.sqlstore import owner_alive, owner_tag

GROUP = ("openai", "/v1/chat/completions", "gpt-4o-mini")


def test_an_abort_racing_a_commit_deletes_nothing_of_the_committed_import(
    store: Store, db: str
) -> None:
    """The interleaving replayed: a clean-up judged an import dead while it was loading, the
    import committed, then the clean-up's abort ran. Its 100 requests are the queue's now."""
    imp = store.begin_import("q", "racing.jsonl")
    d = RowDefaults("q", imp)
    now = time.time()
    rows = [d.row(make_request(f"r{n}", body(f"t{n}")), n, now) for n in range(1, 101)]
    assert store.load_rows(imp, "q", rows) == []
    store.commit_import(imp, lines=100, added=100, unchanged=0, rejected=0)
    store.abort_import(imp, "the importing process died; nothing from it was kept")
    assert store.get_import(imp).state == "committed"
    assert sql(db, "SELECT COUNT(*) FROM requests WHERE import_id = ?", [imp]) == [(100,)]
    assert store.unfinished_count("q") == 100
    store.clean_dead_imports()
    assert store.unfinished_count("q") == 100


def test_a_write_under_a_lease_that_ran_out_is_refused(store: Store) -> None:
    """Nobody took it over yet, but the lease is over: the holder's write is refused (it may
    have been paused past its lease while a standby is about to act)."""
    token = store.acquire_lease("engine", "me", 0.2, time.time())
    assert token is not None
    store.release_due_retries(time.time(), token)  # live: fine
    time.sleep(0.3)
    with pytest.raises(LeaseLost, match="ran out"):
        store.release_due_retries(time.time(), token)
    # renewing (nobody took it) gives the same token back, and writes go through again
    assert store.acquire_lease("engine", "me", 60, time.time()) == token
    store.release_due_retries(time.time(), token)


def test_an_owner_in_another_pid_namespace_is_judged_by_its_heartbeat() -> None:
    """Two containers on one host name (host networking) with their own PID namespaces: a pid
    from the other namespace names nothing here, so it is never looked up."""
    host = socket.gethostname()
    mine = owner_tag()
    assert mine.startswith(f"{host}:{os.getpid()}:")
    space = mine.rsplit(":", 1)[1]
    assert space, "this Linux says its boot id and PID namespace"
    other = f"{host}:4194305:123:{space.split('.')[0]}.4026999999"  # a pid dead here
    now = time.time()
    assert owner_alive(other, now, now)  # fresh heartbeat: alive
    assert not owner_alive(other, now - 3600, now)  # stale: dead
    assert not owner_alive(f"{host}:4194305:123:{space}", now, now)  # our namespace: looked up
    assert not owner_alive(f"{host}:4194305:123", now, now)  # a tag from before: looked up
    assert owner_alive(mine, now, now)


def test_a_live_worker_in_another_pid_namespace_keeps_its_lease(store: Store) -> None:
    host = socket.gethostname()
    boot = owner_tag().rsplit(":", 1)[1].split(".")[0]
    theirs = f"{host}:7:99:{boot}.4026999999/abc"  # pid 7 of their namespace
    now = time.time()
    assert store.acquire_lease("engine", theirs, 600, now) is not None
    engine = Engine(store, holder=f"{owner_tag()}/mine")
    try:
        for _ in range(3):  # it shares the work, but the engine lease stays theirs
            assert not engine.tick(now).engine_lease
    finally:
        engine.close()
    assert store.lease_holder("engine", now) == theirs


def test_a_new_sqlite_file_and_its_wal_are_for_the_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "fresh.db"
        store = open_store(str(db))
        try:
            token = store.acquire_lease("engine", "me", 60, time.time())
            assert token is not None
            store.release_due_retries(time.time(), token)  # a write: the -wal and -shm exist
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()
            }
        finally:
            store.close()
        assert {"fresh.db", "fresh.db-wal", "fresh.db-shm"} <= set(modes)
        assert set(modes.values()) == {0o600}, modes
        existing = tmp_path / "theirs.db"
        existing.touch(mode=0o640)
        open_store(str(existing)).close()
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # an existing file keeps its mode
    finally:
        os.umask(old)


def test_an_import_broken_off_with_its_connection_frees_its_custom_ids(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database restarts while an import loads: the import raises, and failing it raises
    too (the connection is gone). It stayed `loading`, its owner (this live process) holding
    its custom_ids: every retry of the same requests was refused as "being enqueued right
    now", for as long as the process lived (bench_outages' feeder, 30 minutes). Now the
    abort is tried again on a new connection, or by the next import on the store."""
    from llmbatch import Queue
    from llmbatch.errors import StoreUnavailable
    from llmbatch.store.sqlstore import SqlStore

    monkeypatch.setattr("llmbatch.importer.CHUNK_ROWS", 10)
    items = [{"custom_id": f"r{i}", "body": body(f"q {i}")} for i in range(40)]

    def cut_off() -> Any:
        yield from items[:25]  # two chunks loaded
        raise StoreUnavailable("server closed the connection unexpectedly")

    abort = SqlStore.abort_import
    unreachable = {"left": 2}  # the first abort and its retry both meet the outage

    def abort_while_down(self: SqlStore, import_id: int, error: str) -> None:
        if unreachable["left"]:
            unreachable["left"] -= 1
            raise StoreUnavailable("the database is restarting")
        abort(self, import_id, error)

    monkeypatch.setattr(SqlStore, "abort_import", abort_while_down)
    with Queue(db, "q") as q, pytest.raises(StoreUnavailable):
        q.add_many(cut_off())
    with Queue(db, "q") as q:  # the database is back: the same requests again
        assert q.add_many(items).added == 40
    states = sql(db, "SELECT state FROM imports ORDER BY id")
    assert [s for (s,) in states] == ["failed", "committed"]
