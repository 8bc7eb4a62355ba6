"""PostgreSQL: a chunk with no clash is COPYed straight into `requests` and `request_bodies`,
its bytea columns through psycopg's C dumper. Before, each chunk was COPYed into a staging
table and moved with two `INSERT … SELECT … ON CONFLICT DO NOTHING` (the staging table, the
conflict probe per row and the speculative insertion were half the server's enqueue CPU), and
`set_types(["bytea"])` found the DB-API `Binary` wrapper's Python-level dumper by the type's
oid (issue 23). The rows and bodies such an import leaves are the contract tests' concern."""

from __future__ import annotations

import time

from psycopg.pq import Format

from helpers import body
from llmbatch.importer import RowDefaults
from llmbatch.requests import make_request
from llmbatch.store import open_store
from llmbatch.store.postgres import PostgresStore


def test_a_chunk_without_clashes_goes_in_without_a_staging_table(pg_dsn: str) -> None:
    store = open_store(pg_dsn)
    assert isinstance(store, PostgresStore)
    try:
        imp = store.begin_import("q", "f")
        d, now = RowDefaults("q", imp), time.time()
        rows = [d.row(make_request(f"r{n}", body(f"t{n % 3}")), n, now) for n in range(1, 9)]
        assert store.load_rows(imp, "q", rows) == []
        staging = "SELECT to_regclass('pg_temp.import_staging') IS NOT NULL"
        assert store._conn.execute(staging).fetchone() == (False,)
        dumper = store._conn.adapters.get_dumper_by_oid(17, Format.BINARY)  # bytea
        assert dumper.__name__ == "BytesBinaryDumper"  # not dbapi20's BinaryBinaryDumper
    finally:
        store.close()
