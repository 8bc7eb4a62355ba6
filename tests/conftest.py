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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
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


@pytest.fixture
def pg_dsn(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = _db_name("t")
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _dsn_for(name)
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_dsn() -> Iterator[str]:
    """An empty PostgreSQL database (no schema), for migration tests."""
    if not PG_DSN:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set LLMBATCH_TEST_PG (.ci/run does)")
        pytest.skip(PG_SKIP)
    name = _db_name("e")
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _dsn_for(name)
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
