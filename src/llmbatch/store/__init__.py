"""Opening a store from `--db` / `LLMBATCH_DB`: a path, `sqlite:///…` or `postgresql://…`."""

from __future__ import annotations

import os

from llmbatch.store.base import Clash, Count, ImportInfo, ResultRow, Row, Store

DEFAULT_DB = "llmbatch.db"

__all__ = ["Clash", "Count", "ImportInfo", "ResultRow", "Row", "Store", "open_store", "resolve_db"]


def resolve_db(db: str | None = None) -> str:
    """The database to use: the argument, else LLMBATCH_DB, else ./llmbatch.db."""
    return db or os.environ.get("LLMBATCH_DB") or DEFAULT_DB


def open_store(db: str | None = None, *, busy_timeout: float | None = None) -> Store:
    """Open (and migrate) the store named by `db`."""
    target = resolve_db(db)
    if target.startswith(("postgresql://", "postgres://")):
        from llmbatch.store.postgres import PostgresStore

        return PostgresStore(target)
    from llmbatch.store.sqlite import DEFAULT_BUSY_TIMEOUT, SqliteStore

    path = target.removeprefix("sqlite:///")  # sqlite:////abs/path keeps its leading slash
    return SqliteStore(path, busy_timeout if busy_timeout is not None else DEFAULT_BUSY_TIMEOUT)
