"""The store's SQL lives in sql/*.sql, in one parameter style (`:name`), and nowhere else.

No statement in src/llmbatch/store/*.py (a backend's connection settings aside: PRAGMA, BEGIN,
COMMIT); no `?` or `%s` in a named query; what a driver takes instead is derived in one place
(sqlfiles.for_dialect, sqlfiles.positional), and the bulk insert's positional order is the
order the importer builds its rows in.
"""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

import pytest

from llmbatch.store.sqlfiles import dialect_queries, for_dialect, positional, queries
from llmbatch.store.types import ROW_COLUMNS

DIALECTS = ("sqlite", "postgres")
STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|COPY|TRUNCATE|CREATE|ALTER)\b")


def _own(dialect: str) -> set[str]:
    text = resources.files("llmbatch.store").joinpath("sql", dialect, "queries.sql").read_text()
    return set(re.findall(r"^-- name: (\w+)", text, flags=re.M))


def test_no_statement_is_written_in_the_store_code() -> None:
    folder = resources.files("llmbatch").joinpath("store")
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".py"):
            continue
        tree = ast.parse(entry.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts
                text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            else:
                continue
            if STATEMENT.match(text):
                found.append(f"{entry.name}:{node.lineno}: {text[:60]!r}")
    assert not found, "SQL belongs in sql/*.sql:\n" + "\n".join(found)


@pytest.mark.parametrize("dialect", [None, *DIALECTS])
def test_every_named_query_takes_named_parameters_only(dialect: str | None) -> None:
    written = (
        queries() if dialect is None else {n: s for n, s in _named_as_written(dialect).items()}
    )
    for name, sql in written.items():
        bare = re.sub(r"'[^']*'", "''", sql)  # a literal may hold anything
        assert "?" not in bare, f"{name}: a positional `?` parameter; name it (:name)"
        assert not re.search(r"%(\(\w+\))?s", bare), f"{name}: a driver's parameter style"
        assert "{" not in bare, f"{name}: a template; pass a list parameter (as_list)"


def _named_as_written(dialect: str) -> dict[str, str]:
    """A dialect's own queries as its file writes them (before any driver's style)."""
    text = resources.files("llmbatch.store").joinpath("sql", dialect, "queries.sql").read_text()
    out = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        out[name.strip()] = "\n".join(
            ln for ln in body.splitlines() if not ln.lstrip().startswith("--")
        )
    return out


def test_a_dialects_own_query_replaces_the_shared_one_of_its_name() -> None:
    pg, lite = dialect_queries("postgres"), dialect_queries("sqlite")
    assert "clock_timestamp()" in pg["fence"] and "FOR SHARE" in pg["fence"]
    assert ":now" in lite["fence"]
    assert pg["budgets_over"].rstrip().endswith("FOR UPDATE")
    assert "FOR UPDATE" not in lite["budgets_over"]
    assert {"has_schema"} <= _own("sqlite") & _own("postgres")
    assert set(queries()) <= set(pg) and set(queries()) <= set(lite)


def test_psycopgs_style_is_derived_once_per_statement() -> None:
    sql = "SELECT x::text, '%' FROM t WHERE a = :a AND b IN (SELECT value FROM json_each(:ids_2))"
    assert for_dialect("postgres", sql) == (
        "SELECT x::text, '%%' FROM t WHERE a = %(a)s AND b = ANY(ARRAY("
        "SELECT value FROM json_array_elements_text(CAST(%(ids_2)s AS json))))"
    )
    assert for_dialect("sqlite", sql) == sql
    # NOT IN keeps its subquery (= ANY would not say it)
    negated = "SELECT 1 FROM t WHERE b NOT IN (SELECT value FROM json_each(:ids))"
    assert "NOT IN (SELECT value FROM json_array_elements_text" in for_dialect("postgres", negated)


def test_the_bulk_insert_binds_by_position_in_the_rows_order() -> None:
    sql, names = positional(queries()["insert_request"])
    assert names == tuple(c for c in ROW_COLUMNS if c != "body")  # the body: insert_body
    assert ":" not in sql and sql.count("?") == len(names)
    assert set(positional(queries()["insert_body"])[1]) == {"body_hash", "body"}
    copy = dialect_queries("postgres")["copy_staging"]
    listed = re.search(r"\(([^)]*)\)", copy)
    assert listed is not None
    assert tuple(c.strip() for c in listed.group(1).split(",")) == ROW_COLUMNS


def test_sqlite_binds_a_parameter_set_by_name_or_by_position_alike(tmp_path: Path) -> None:
    from llmbatch.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "x.db")
    try:
        with store._write() as cur:
            store._many(cur, "set_meta", [{"key": "a", "value": "1"}, {"value": "2", "key": "b"}])
        with store._read() as cur:
            assert store._get_meta(cur, "a") == "1" and store._get_meta(cur, "b") == "2"
    finally:
        store.close()


def test_no_row_is_read_by_position_in_the_store_code() -> None:
    """rows.py reads a one-column statement's value; every other read names its column."""
    folder = resources.files("llmbatch").joinpath("store")
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".py") or entry.name == "rows.py":
            continue
        for node in ast.walk(ast.parse(entry.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Subscript):
                continue
            index = node.slice
            if not (isinstance(index, ast.Constant) and isinstance(index.value, int)):
                continue
            target = node.value
            rowish = isinstance(target, ast.Name) and target.id in ("r", "row", "res")
            fetched = isinstance(target, ast.Call) and "fetch" in ast.unparse(target.func)
            last = isinstance(target, ast.Subscript) and ast.unparse(target) == "rows[-1]"
            if rowish or fetched or last:
                found.append(f"{entry.name}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "read the column by name (store/rows.py):\n" + "\n".join(found)
