"""Shared fixtures: a real SQLite file and a real PostgreSQL database per test.

PostgreSQL tests run against the server named by LLMBATCH_TEST_PG (a DSN whose user may
create databases); each test gets a fresh database cloned from a migrated template, so it
starts clean in milliseconds. Without the variable they skip with a visible reason, except
under CI (CI=true), where a missing PostgreSQL is an error.

Under pytest-xdist each worker is a session of its own: its own template and databases, named
after LLMBATCH_TEST_PG's database and the worker (`llmbatch_ci_gw1_t_…`), so no two workers
share a database and a leftover says which run left it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import psycopg.sql
import pytest

from helpers import RefusingService
from llmbatch.store import Store, open_store

PG_DSN = os.environ.get("LLMBATCH_TEST_PG")
PG_SKIP = "PostgreSQL tests need LLMBATCH_TEST_PG=postgresql://… (a user that may CREATE DATABASE)"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")  # gw0, gw1, … under pytest -n


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The PostgreSQL tests skipped without a server, in one line rather than one each."""
    skipped = terminalreporter.stats.get("skipped", [])
    pg = sum(1 for r in skipped if "LLMBATCH_TEST_PG" in str(r.longrepr))
    if pg:
        terminalreporter.write_line(f"{pg} PostgreSQL tests skipped: {PG_SKIP}", yellow=True)
    if len(skipped) > pg:
        terminalreporter.write_line(f"{len(skipped) - pg} other tests skipped (-rs lists them)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow run first: under pytest-xdist the long ones start at once on every
    worker, rather than one of them ending the run alone while the others idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish() -> None:
    """Under coverage (`.ci/run` sets COVERAGE_PROCESS_START), this process's data are saved
    now, not at exit: pytest-xdist SIGKILLs a worker still exiting 10 s after its session
    (execnet's terminate), and on a loaded machine one was, its data lost with it (a run
    printed 89.8 %, modules the engine runs in process at 27-56 %, where the run before
    printed 93.1 %)."""
    try:
        import coverage
    except ImportError:
        return
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.stop()
        cov.save()


def _dsn_for(dbname: str) -> str:
    """LLMBATCH_TEST_PG with another database, as a URL: `--db` only knows postgresql://…."""
    assert PG_DSN is not None
    parts = urlsplit(PG_DSN)
    if not parts.scheme.startswith("postgres"):
        pytest.fail("LLMBATCH_TEST_PG must be a postgresql://… URL")
    return urlunsplit(parts._replace(path="/" + dbname))


def _db_name(kind: str) -> str:
    """A new database's name: LLMBATCH_TEST_PG's database, this worker, what it is for, and a
    random tail (two runs on one server never meet either); well under PostgreSQL's 63."""
    assert PG_DSN is not None
    base = urlsplit(PG_DSN).path.lstrip("/")[:24] or "llmbatch"
    return f"{base}_{WORKER}_{kind}_{uuid.uuid4().hex[:10]}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    assert PG_DSN is not None
    return psycopg.connect(PG_DSN, autocommit=True)


# Every table, sequence and column outside PostgreSQL's own schemas, as one digest: a test
# that changed the schema (the upgrade tests take migrations back out) leaves a database
# that is dropped rather than reused.
_SCHEMA_DIGEST = """
SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
    SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || ':'
        || coalesce(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                    || ' ' || a.attnotnull::text, '') AS x
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
) s"""


class _PgPool:
    """This session's test databases, each cloned once from the migrated template and then
    handed to one test after another, put back the way the clone left it in between.

    Cloning (CREATE DATABASE … TEMPLATE) and dropping cost 0.2-1 s each on a quiet 2-core
    machine and several seconds under load, a PostgreSQL test's largest cost; putting a
    database back (its connections ended, every table emptied, the template's rows and
    sequence positions restored) costs a few statements. A database whose schema a test
    changed, or that cannot be put back, is dropped and a new clone takes its place."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.free: list[str] = []
        self.made: list[str] = []
        self.dropping: list[threading.Thread] = []
        with psycopg.connect(_dsn_for(template), autocommit=True) as conn:
            self.digest = conn.execute(_SCHEMA_DIGEST).fetchone()[0]  # type: ignore[index]
            self.tables = [
                str(t)
                for (t,) in conn.execute(
                    "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                    "FROM pg_tables WHERE schemaname = 'public'"
                )
            ]
            self.sequences = conn.execute(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename), "
                "coalesce(last_value, start_value), last_value IS NOT NULL "
                "FROM pg_sequences WHERE schemaname = 'public'"
            ).fetchall()
            self.rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
            for table in self.tables:
                cur = conn.execute(f"SELECT * FROM {table}")
                rows = cur.fetchall()
                if rows:
                    names = [
                        psycopg.sql.Identifier(d.name).as_string(conn)
                        for d in cur.description or ()
                    ]
                    self.rows[table] = (names, rows)

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = _db_name("t")
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.made.append(name)
        return name

    def give_back(self, name: str) -> None:
        try:
            self._reset(name)
        except Exception:
            # dropped in the background: a DROP DATABASE takes seconds under load, and no
            # test waits for it (the name is never handed out again; close() joins these)
            dropping = threading.Thread(target=self._drop_quietly, args=(name,), daemon=True)
            dropping.start()
            self.dropping.append(dropping)
        else:
            self.free.append(name)

    def _reset(self, name: str) -> None:
        with psycopg.connect(_dsn_for(name), autocommit=True) as conn:
            # end every other connection, and wait for them to be gone: a dying backend
            # still holds its locks, and a thread the test left may connect again (then the
            # database is dropped, as it would have been before)
            others = (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            deadline = time.monotonic() + 2.0
            while conn.execute(others).fetchall():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: connections keep coming")
                time.sleep(0.02)
            if conn.execute(_SCHEMA_DIGEST).fetchone()[0] != self.digest:  # type: ignore[index]
                raise LookupError(f"{name}: a test changed its schema")
            conn.execute("SET lock_timeout = '2s'")
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")  # no FK order
                for table in self.tables:
                    conn.execute(f"DELETE FROM {table}")
                for table, (names, rows) in self.rows.items():
                    marks = ", ".join(["%s"] * len(names))
                    with conn.cursor() as cur:
                        cur.executemany(
                            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", rows
                        )
                for sequence, value, called in self.sequences:
                    conn.execute("SELECT setval(%s, %s, %s)", (sequence, value, called))

    def drop(self, name: str) -> None:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.made:
            self.made.remove(name)

    def _drop_quietly(self, name: str) -> None:
        """drop(), leaving a failure to close() (the name stays in `made`)."""
        with suppress(Exception):
            self.drop(name)

    def close(self) -> None:
        for dropping in self.dropping:
            dropping.join(timeout=60)
        for name in list(self.made):
            self.drop(name)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for this test session."""
    if not PG_DSN:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set LLMBATCH_TEST_PG (.ci/run does)")
        pytest.skip(PG_SKIP)
    name = _db_name("tpl")
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    open_store(_dsn_for(name)).close()
    yield name
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _pg_pool(pg_template: str) -> Iterator[_PgPool]:
    pool = _PgPool(pg_template)
    yield pool
    pool.close()


@pytest.fixture
def pg_dsn(_pg_pool: _PgPool) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test: as the template left it (one of
    this session's clones, put back after the test before it)."""
    name = _pg_pool.take()
    yield _dsn_for(name)
    _pg_pool.give_back(name)


@pytest.fixture(scope="session")
def _background_drops() -> Iterator[list[threading.Thread]]:
    """Databases being dropped in the background (a DROP DATABASE takes seconds under load
    and no test waits for it), all done before the session ends."""
    drops: list[threading.Thread] = []
    yield drops
    for drop in drops:
        drop.join(timeout=60)


def _drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_dsn(_background_drops: list[threading.Thread]) -> Iterator[str]:
    """An empty PostgreSQL database (no schema), for migration tests."""
    if not PG_DSN:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set LLMBATCH_TEST_PG (.ci/run does)")
        pytest.skip(PG_SKIP)
    name = _db_name("e")
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _dsn_for(name)
    drop = threading.Thread(target=_drop_database, args=(name,), daemon=True)
    drop.start()
    _background_drops.append(drop)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return str(tmp_path / "llmbatch.db")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The location of a fresh store, once per backend: every contract test runs on both."""
    if request.param == "sqlite":
        return str(tmp_path / "llmbatch.db")
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    s = open_store(db)
    yield s
    s.close()


@contextmanager
def _echoing(status: int) -> Iterator[RefusingService]:
    """A service answering every call with `status` and the key it was sent in the message."""
    service = RefusingService("")

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            service.seen.append(f"{self.command} {self.path}")
            self.rfile.read(int(self.headers.get("content-length") or 0))
            key = (
                self.headers.get("api-key")
                or self.headers.get("x-api-key")
                or self.headers.get("authorization", "")
            )
            payload = orjson.dumps({"error": {"message": f"Incorrect API key provided: {key}.",
                                              "type": "invalid_request_error", "code": "invalid_api_key"}})  # fmt: skip
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _refuse

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def refusing() -> Iterator[RefusingService]:
    """Refuses every key with 401, echoing it (as OpenAI does a revoked one)."""
    with _echoing(401) as service:
        yield service


@pytest.fixture
def rejecting() -> Iterator[RefusingService]:
    """A gateway that answers 400 and echoes the key in the body: not an auth error, so the
    engine records and prints the message."""
    with _echoing(400) as service:
        yield service
