"""The SQL files: named queries (`-- name: x` blocks of sql/*.sql), each dialect's own
statements (sql/<dialect>/queries.sql: its catalog, its locks, its clock), each dialect's fresh
schema and numbered migrations. Read once, cached.

One parameter style everywhere: `:name`. A list is one parameter (`as_list`), read as a table
(`json_each(:ids)`). What a driver wants instead is derived here, once per statement:
psycopg's `%(name)s` (`for_dialect`), or SQLite's positional `?` for a bulk insert whose
rows are already tuples (`positional`)."""

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


_FILES = (
    "queries.sql",
    "engine.sql",
    "budgets.sql",
    "ledger.sql",
    "manage.sql",
    "watch.sql",
    "observe.sql",
    "archive.sql",
    "ownership.sql",
    "claims.sql",
)


def _named(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        out[name.strip()] = "\n".join(lines).strip()
    return out


@cache
def queries() -> dict[str, str]:
    """The named queries every store shares (sql/*.sql), as written: SQLite runs them as they
    are."""
    return _named("\n".join(_sql_text(f) for f in _FILES))


@cache
def dialect_queries(dialect: str) -> dict[str, str]:
    """The shared queries with a dialect's own (sql/<dialect>/queries.sql; a name there
    replaces the shared one), each in its driver's parameter style."""
    own = _named(_sql_text(f"{dialect}/queries.sql"))
    if dialect == "postgres":  # its set-based packing and ingest (arrays, COPY staging)
        own |= _named(_sql_text("postgres/bulk.sql"))
    return {name: for_dialect(dialect, sql) for name, sql in (queries() | own).items()}


# `IN (SELECT ... FROM json_each(:list))`, the list's values as they are or as BIGINT
_IN_LIST = re.compile(
    r"(?<!NOT )\bIN \((SELECT (?:CAST\(value AS BIGINT\)|value) FROM json_each\(:\w+\))\)"
)


# A condition that a request is in one of the states it waits to be packed in
_WAITING = re.compile(r"\b(WHERE|AND)(\s+)(\w+\.)?state = '(queued|held|retry_wait)'")


def for_dialect(dialect: str, sql: str) -> str:
    """A statement in our style (`:name`, `json_each(:list)`) as a dialect's driver takes it:
    SQLite as written; psycopg with `%(name)s` and PostgreSQL's `json_array_elements_text`."""
    if dialect == "sqlite":
        return sql
    # `state = 'queued'` (or 'held', 'retry_wait') in a condition as `waiting = 'queued'`: the
    # same rows (`waiting` is `state` in those three states, migration 0018), and what the
    # partial indexes that find them read; a SET of `state` stays as it is.
    sql = _WAITING.sub(r"\1\2\3waiting = '\4'", sql)
    # `x IN (SELECT ... FROM json_each(:list))` as `x = ANY(ARRAY(SELECT ...))`: the list is
    # parsed once (an InitPlan) and probed through x's index. As a subquery, the planner (which
    # guesses 100 elements) may put it inside a nested loop under a selective outer scan and
    # parse the whole list again for every row: quadratic (test_pg_id_lists.py).
    sql = _IN_LIST.sub(r"= ANY(ARRAY(\1))", sql)
    sql = re.sub(r"\bjson_each\(:(\w+)\)", r"json_array_elements_text(CAST(:\1 AS json))", sql)
    sql = sql.replace("%", "%%")
    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", r"%(\1)s", sql)


@cache
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """A statement with its `:name` parameters as SQLite's `?`, and the names in order: a bulk
    insert of rows that are tuples already binds them by position (binding a million rows by
    name takes SQLite twice as long)."""
    names = tuple(re.findall(r"(?<![:\w]):([a-z_][a-z0-9_]*)", sql))
    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", "?", sql), names


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
