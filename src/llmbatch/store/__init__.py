"""Opening a store from `--db` / `LLMBATCH_DB`: a path, `sqlite:///…` or `postgresql://…`."""

from __future__ import annotations

import os
import re

from llmbatch.errors import ConfigError
from llmbatch.store.base import Store
from llmbatch.store.types import Clash, Count, ImportInfo, ResultRow, Row

DEFAULT_DB = "llmbatch.db"

__all__ = ["Clash", "Count", "ImportInfo", "ResultRow", "Row", "Store", "open_store", "resolve_db"]


def resolve_db(db: str | None = None) -> str:
    """The database to use: the argument, else LLMBATCH_DB, else ./llmbatch.db."""
    return db or os.environ.get("LLMBATCH_DB") or DEFAULT_DB


def open_store(
    db: str | None = None, *, busy_timeout: float | None = None, create: bool = True
) -> Store:
    """Open (and migrate) the store named by `db`; without `create`, one that does not exist
    yet is NotFound instead of made empty (read commands: a typo must not look like success)."""
    target = resolve_db(db)
    _refuse_unknown_form(target)
    if target.startswith(("postgresql://", "postgres://")):
        from llmbatch.store.postgres import PostgresStore

        return PostgresStore(target, create=create)
    from llmbatch.store.sqlite import DEFAULT_BUSY_TIMEOUT, SqliteStore

    path = target.removeprefix("sqlite:///")  # sqlite:////abs/path keeps its leading slash
    timeout = busy_timeout if busy_timeout is not None else DEFAULT_BUSY_TIMEOUT
    return SqliteStore(path, timeout, create=create)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_KEYWORDS = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service)\s*=", re.I)


def _refuse_unknown_form(target: str) -> None:
    """A URL of another database, or a key=value DSN, would otherwise become a SQLite file
    named after it (password included); say what `--db` takes instead, never echoing it."""
    scheme = _SCHEME.match(target)
    if scheme and scheme.group(1).lower() not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            f"--db: unsupported scheme '{scheme.group(1)}://'; use a path, sqlite:///PATH or "
            "postgresql://USER@HOST/DBNAME"
        )
    if _KEYWORDS.match(target):
        raise ConfigError(
            "--db: a key=value PostgreSQL DSN is not supported; write it as a URL, "
            "postgresql://USER@HOST:PORT/DBNAME"
        )
