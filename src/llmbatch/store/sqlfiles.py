"""The SQL files: named queries (`-- name: x` blocks of sql/*.sql, in SQLite's parameter
style), each dialect's fresh schema and numbered migrations. Read once, cached."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib import resources

import orjson


def as_list(values: Iterable[int | str]) -> str:
    """A list parameter: SQL reads it as a table (`IN (SELECT value FROM json_each(:ids))`;
    PostgreSQL's dialect says `json_array_elements_text`), so a list of any length is one
    statement with one parameter, never an id list written into the SQL."""
    return orjson.dumps(list(values)).decode()


@cache
def _sql_text(name: str) -> str:
    return resources.files("llmbatch.store").joinpath("sql", name).read_text(encoding="utf-8")


@cache
def queries() -> dict[str, str]:
    """Named queries from sql/*.sql (queries, engine, budgets, ledger, manage, watch, observe), in
    SQLite's parameter style."""
    files = (
        "queries.sql",
        "engine.sql",
        "budgets.sql",
        "ledger.sql",
        "manage.sql",
        "watch.sql",
        "observe.sql",
        "archive.sql",
        "ownership.sql",
    )
    return _named("\n".join(_sql_text(f) for f in files))


@cache
def bulk_queries(dialect: str) -> dict[str, str]:
    """A dialect's own set-based statements for packing and ingest (sql/<dialect>/bulk.sql), in
    its driver's parameter style: where one statement over many rows needs what only that
    dialect has (PostgreSQL's arrays, COPY's staging tables)."""
    return _named(_sql_text(f"{dialect}/bulk.sql"))


def _named(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        out[name.strip()] = "\n".join(lines).strip()
    return out


def split_script(script: str) -> list[str]:
    """Statements of a schema or migration file (no semicolons inside our DDL strings)."""
    body = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(number, script) of every migration file of a dialect, in order."""
    folder = resources.files("llmbatch.store").joinpath("sql", dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        m = re.match(r"(\d{4})_.*\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def fresh_schema(dialect: str) -> str:
    return _sql_text(f"{dialect}/schema.sql")
