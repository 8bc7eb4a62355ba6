"""SQLite writes an import's bodies BODY_ROWS at a time in hash order and the rest in its
commit (issue 23): a commit of 10,000 random hashes rewrote most of the hash index's leaf
pages in the WAL each time (1,000,000 requests: 3.4 GB written for a 665 MB file)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import body
from llmbatch.importer import RowDefaults
from llmbatch.requests import make_request
from llmbatch.store import Row
from llmbatch.store import sqlite as sqlite_store
from llmbatch.store.sqlite import SqliteStore


def _rows(imp: int, first: int, n: int) -> list[Row]:
    d, now = RowDefaults("q", imp), time.time()
    return [d.row(make_request(f"r{i}", body(f"t{i}")), i, now) for i in range(first, first + n)]


def _bodies(store: SqliteStore) -> int:
    return int(store._conn.execute("SELECT COUNT(*) FROM request_bodies").fetchone()[0])


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqliteStore:
    monkeypatch.setattr(sqlite_store, "BODY_ROWS", 3)
    return SqliteStore(tmp_path / "q.db")


def test_bodies_go_in_a_few_chunks_at_a_time_and_the_rest_with_the_commit(
    store: SqliteStore,
) -> None:
    imp = store.begin_import("q", "t")
    assert store.load_rows(imp, "q", _rows(imp, 1, 2)) == []
    assert _bodies(store) == 0  # held back
    assert store.load_rows(imp, "q", _rows(imp, 3, 2)) == []
    assert _bodies(store) == 4  # BODY_ROWS reached: written with that chunk
    assert store.load_rows(imp, "q", _rows(imp, 5, 1)) == []
    assert _bodies(store) == 4
    store.commit_import(imp, lines=5, added=5, unchanged=0, rejected=0)
    assert _bodies(store) == 5 and store._bodies == {}
    detail = {r["custom_id"]: r["body"] for r in store.request_detail("r5")}
    assert b"t5" in detail["r5"]


def test_an_aborted_import_leaves_no_body_written_or_held(store: SqliteStore) -> None:
    imp = store.begin_import("q", "t")
    store.load_rows(imp, "q", _rows(imp, 1, 4))
    store.load_rows(imp, "q", _rows(imp, 5, 1))
    assert _bodies(store) == 4 and store._bodies
    store.abort_import(imp, "test")
    assert _bodies(store) == 0 and store._bodies == {}


def test_a_chunk_that_rolls_back_keeps_its_bodies_held(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies leave the buffer only once the transaction that wrote them commits."""
    imp = store.begin_import("q", "t")
    store.load_rows(imp, "q", _rows(imp, 1, 2))
    write = store._write_bodies

    def write_then_fail(cur: object, bodies: list[tuple[bytes, bytes]]) -> None:
        write(cur, bodies)
        raise RuntimeError("after the bodies")

    monkeypatch.setattr(store, "_write_bodies", write_then_fail)
    with pytest.raises(RuntimeError):
        store.load_rows(imp, "q", _rows(imp, 3, 2))
    monkeypatch.undo()
    assert _bodies(store) == 0 and len(store._bodies[imp]) == 4
    store.load_rows(imp, "q", _rows(imp, 3, 2))  # the chunk again, as a retry would
    store.commit_import(imp, lines=4, added=4, unchanged=0, rejected=0)
    assert _bodies(store) == 4
