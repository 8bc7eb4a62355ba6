"""SQLite's page cache grows with the file, up to 16 MiB: a fixed 16 MiB cache held most of a
small queue's file in memory (~15 MB of the API flow's peak RSS at 20,000 requests, issue 23)."""

from __future__ import annotations

from pathlib import Path

from llmbatch.store.sqlite import CACHE_KIB, MIN_CACHE_KIB, SqliteStore, cache_kib


def test_the_cache_is_an_eighth_of_the_file_between_2_and_16_mib() -> None:
    assert cache_kib(0) == MIN_CACHE_KIB == 2048
    assert cache_kib(25 << 20) == 3200
    assert cache_kib(1 << 30) == CACHE_KIB == 16384


def test_a_new_store_has_a_small_cache_that_grows_with_its_file(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = SqliteStore(db)
    try:
        assert store._conn.execute("PRAGMA cache_size").fetchone()[0] == -MIN_CACHE_KIB
        with store._write() as cur:
            cur.execute("CREATE TABLE pad (b BLOB)")
            cur.executemany("INSERT INTO pad VALUES (zeroblob(65536))", [()] * 400)
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with store._write() as cur:
            cur.execute("DELETE FROM pad WHERE rowid = 1")
        assert store._conn.execute("PRAGMA cache_size").fetchone()[0] == -cache_kib(
            db.stat().st_size
        )
        assert db.stat().st_size > 24 << 20
    finally:
        store.close()
