"""Small helpers shared by the store, CLI and API tests: input lines and plain SQL.

Tests reach the database with their own connection and plain SQL (the way an operator with
`sqlite3` or `psql` would), never through private methods of the store under test.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result

from llmbatch.cli import main
from llmbatch.engine import Engine, EngineSettings
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store
from llmbatch.store.sqlstore import migrations, split_script

CHAT = "/v1/chat/completions"
# A statement of an UNDO_* chain: plain SQL, or (dialect, SQL) for one dialect only.
Undo = str | tuple[str, str]


def _sqlite_table_before(table: str, number: int) -> list[str]:
    """The CREATE statements of a SQLite table and its indexes as the migrations before
    `number` leave them (table first)."""
    conn = sqlite3.connect(":memory:")
    for n, script in migrations("sqlite"):
        if n < number:
            for statement in split_script(script):
                conn.execute(statement)
    found = conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
        "ORDER BY type DESC, name",
        (table,),
    ).fetchall()
    conn.close()
    return [str(s) for (s,) in found]


_REQUEST_COLUMNS = (
    "id, queue, custom_id, import_id, line, provider, endpoint, model, body_hash, state, "
    "priority, deadline, text_chars, text_bytes, inputs, attempts, expiries, not_before, "
    "reason, created_at, updated_at, rejections"
)
# Migration 0018 (on PostgreSQL, the waiting requests' indexes read `waiting`, not `state`;
# requests' pages half free) taken back out: dropping the column drops its three indexes.
UNDO_0018: tuple[Undo, ...] = (
    ("postgres", "ALTER TABLE requests DROP COLUMN waiting"),
    ("postgres", "CREATE INDEX requests_ready ON requests (provider, endpoint, model, "
                 "priority DESC, id) WHERE state = 'queued'"),
    ("postgres", "CREATE INDEX requests_waiting ON requests (not_before) "
                 "WHERE state = 'retry_wait'"),
    ("postgres", "CREATE INDEX requests_held ON requests (queue) WHERE state = 'held'"),
    ("postgres", "ALTER TABLE requests RESET (fillfactor)"),
)  # fmt: skip
# Migration 0017 (attempts' and results' foreign keys not checked on PostgreSQL, attempts'
# pages half free) taken back out, and every later one.
UNDO_0017: tuple[Undo, ...] = (
    *UNDO_0018,
    ("postgres", "ALTER TABLE attempts ADD CONSTRAINT attempts_request_id_fkey "
                 "FOREIGN KEY (request_id) REFERENCES requests (id)"),
    ("postgres", "ALTER TABLE attempts ADD CONSTRAINT attempts_batch_id_fkey "
                 "FOREIGN KEY (batch_id) REFERENCES batches (id)"),
    ("postgres", "ALTER TABLE results ADD CONSTRAINT results_attempt_id_fkey "
                 "FOREIGN KEY (attempt_id) REFERENCES attempts (id)"),
    ("postgres", "ALTER TABLE results ADD CONSTRAINT results_request_id_fkey "
                 "FOREIGN KEY (request_id) REFERENCES requests (id)"),
    ("postgres", "ALTER TABLE attempts RESET (fillfactor)"),
)  # fmt: skip
# Migration 0016 (requests.import_id not a foreign key PostgreSQL checks) taken back out, and
# every later one.
UNDO_0016: tuple[Undo, ...] = (
    *UNDO_0017,
    ("postgres", "ALTER TABLE requests ADD CONSTRAINT requests_import_id_fkey "
                 "FOREIGN KEY (import_id) REFERENCES imports (id)"),
)  # fmt: skip
# Migration 0015 (the poll and sweep schedule in the store) taken back out, and every later one.
UNDO_0015: tuple[Undo, ...] = (
    *UNDO_0016,
    "ALTER TABLE batches DROP COLUMN poll_at",
    "ALTER TABLE batches DROP COLUMN poll_every",
    "DROP TABLE schedules",
)
# Migration 0014 (a batch id unique per provider) taken back out: unique across providers
# again. SQLite cannot give a column its UNIQUE back, so the table is made again.
UNDO_0014: tuple[Undo, ...] = (
    *UNDO_0015,
    ("sqlite", "CREATE TABLE batches_0014 AS SELECT * FROM batches"),
    ("sqlite", "DROP TABLE batches"),
    ("sqlite", _sqlite_table_before("batches", 14)[0]),
    ("sqlite", "INSERT INTO batches SELECT * FROM batches_0014"),
    ("sqlite", "DROP TABLE batches_0014"),
    *(("sqlite", index) for index in _sqlite_table_before("batches", 14)[1:]),
    ("postgres", "DROP INDEX batches_provider_id"),
    ("postgres", "ALTER TABLE batches ADD CONSTRAINT batches_provider_batch_id_key "
                 "UNIQUE (provider_batch_id)"),
)  # fmt: skip
# Migration 0013 (workers sharing the work: their tokens, claims) taken back out; the claims
# the engine took go too (the code before it knew only the engine lease).
UNDO_0013: tuple[Undo, ...] = (
    *UNDO_0014,
    "DROP TABLE workers",
    "DELETE FROM leases WHERE name <> 'engine'",
    "ALTER TABLE leases DROP COLUMN since",
    "ALTER TABLE batches DROP COLUMN queue",
)
# Migration 0012 (request bodies in their own table) taken back out, and every later one:
# each request gets its body back. SQLite cannot put a column back in its place, so its table
# is made again.
UNDO_0012: tuple[Undo, ...] = (
    *UNDO_0013,
    ("sqlite", "CREATE TABLE requests_0012 AS SELECT r.*, b.body AS body FROM requests r "
               "JOIN request_bodies b ON b.hash = r.body_hash"),
    ("sqlite", "DROP TABLE requests"),
    ("sqlite", _sqlite_table_before("requests", 12)[0]),
    ("sqlite", f"INSERT INTO requests ({_REQUEST_COLUMNS}, body) "
               f"SELECT {_REQUEST_COLUMNS}, body FROM requests_0012"),
    ("sqlite", "DROP TABLE requests_0012"),
    *(("sqlite", index) for index in _sqlite_table_before("requests", 12)[1:]),
    ("postgres", "ALTER TABLE requests ADD COLUMN body BYTEA"),
    ("postgres", "UPDATE requests SET body = b.body FROM request_bodies b "
                 "WHERE b.hash = requests.body_hash"),
    ("postgres", "ALTER TABLE requests ALTER COLUMN body SET NOT NULL"),
    "DROP TABLE request_bodies",
)  # fmt: skip
# Migration 0011 (the model a provider says ran a batch) taken back out, and every later one.
UNDO_0011: tuple[Undo, ...] = (*UNDO_0012, "ALTER TABLE provider_usage DROP COLUMN model")
# Migration 0008 (archives and the webhook outbox) taken back out, and every later one.
UNDO_0008: tuple[Undo, ...] = (*UNDO_0011, "DROP TABLE archives", "DROP TABLE outbox")
# Migration 0005 (proof of ownership) taken back out.
UNDO_0005 = (
    "DROP TABLE judged_batches",
    "ALTER TABLE batches DROP COLUMN proof_wait_until",
    "ALTER TABLE batches DROP COLUMN nonce",
)
# What migration 0004 (budgets in the store, the ledger) adds, taken back out: a store made by
# today's code, put back the way the code before 0004 left it (the upgrade tests), with every
# later migration taken out too (a store made before 0004 has none of them).
UNDO_0004: tuple[Undo, ...] = (
    *UNDO_0008,
    *UNDO_0005,
    "DROP TABLE batch_tally",
    "DROP TABLE provider_usage",
    "DROP TABLE budget_policy",
    "ALTER TABLE spend DROP COLUMN worst",
    "ALTER TABLE spend DROP COLUMN kind",
    "ALTER TABLE spend DROP COLUMN unpriced",
    "ALTER TABLE spend DROP COLUMN prices",
)


def body(text: str = "hi", model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def line(custom_id: Any, text: str = "hi", model: str = "gpt-4o-mini", **overrides: Any) -> bytes:
    """One OpenAI batch input line (without newline); `overrides` replace top-level fields."""
    obj: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": body(text, model),
    }
    obj.update(overrides)
    return orjson.dumps(obj)


def jsonl(*lines: bytes) -> bytes:
    return b"".join(ln + b"\n" for ln in lines)


def is_pg(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def sql(db: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (`?` placeholders) on its own connection; rows if it returns any."""
    if is_pg(db):
        with psycopg.connect(db, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(statement.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []
    lite = sqlite3.connect(db, timeout=30)
    try:
        with lite:
            return list(lite.execute(statement, tuple(params)).fetchall())
    finally:
        lite.close()


def request_id(db: str, custom_id: str, queue: str = "default") -> int:
    rows = sql(db, "SELECT id FROM requests WHERE queue = ? AND custom_id = ?", (queue, custom_id))
    assert rows, f"no request {custom_id!r} in queue {queue!r}"
    return int(rows[0][0])


def add_result(
    db: str,
    custom_id: str,
    *,
    queue: str = "default",
    succeeded: bool = True,
    response: dict[str, Any] | None = None,
    status_code: int = 200,
    provider_request_id: str = "req_1",
    error: tuple[str, str] = ("server_error", "the model crashed"),
    tokens: tuple[int, int] = (12, 3),
) -> None:
    """Record a terminal outcome as the engine will: an attempt, its result, the request state."""
    rid = request_id(db, custom_id, queue)
    now = time.time()
    sql(
        db,
        "INSERT INTO attempts (request_id, line, state, outcome, created_at, finished_at) "
        "VALUES (?, 1, 'done', ?, ?, ?)",
        (rid, "succeeded" if succeeded else "failed", now, now),
    )
    attempt = int(sql(db, "SELECT MAX(id) FROM attempts WHERE request_id = ?", (rid,))[0][0])
    if succeeded:
        payload = orjson.dumps(response if response is not None else chat_response("ok"))
        values: tuple[Any, ...] = (status_code, provider_request_id, payload, None, None)
    else:
        values = (None, None, None, error[0], error[1])
    sql(
        db,
        "INSERT INTO results (attempt_id, request_id, status_code, provider_request_id, body, "
        "error_code, error_message, input_tokens, output_tokens, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (attempt, rid, *values, *tokens, now),
    )
    state = "succeeded" if succeeded else "failed"
    sql(db, "UPDATE requests SET state = ?, attempts = attempts + 1 WHERE id = ?", (state, rid))


def chat_response(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def all_requests(db: str) -> list[tuple[Any, ...]]:
    """Every stored request row that matters to a user, visible or not, in a stable order."""
    return sql(
        db,
        "SELECT queue, custom_id, body_hash, state, priority FROM requests ORDER BY queue, custom_id",
    )


LLMBATCH = str(Path(sys.executable).parent / "llmbatch")  # the installed console script

# The lease holder of a worker on this host whose process is gone (no pid is this high): a
# new engine breaks its lease at once, as it does a killed worker's. Its lease stays live
# until then, so the fenced writes a test makes in its name go through.
DEAD_HOLDER = f"{socket.gethostname()}:4194305:0/dead"


def free_port() -> int:
    """A free loopback port for a server a test starts itself (and may restart on the same port).

    Below the kernel's ephemeral range (32768 and up), so no outgoing connection of any
    process takes it while the server is down, and in this pytest-xdist worker's own slice of
    2,000, so two workers never pick the same one; random inside it, so two runs seldom do.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = 12_000 + (int(worker) % 10 if worker.isdigit() else 0) * 2_000
    for _ in range(200):
        port = random.randrange(low, low + 2_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{low + 1_999}")


def cli(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `llmbatch ARGS` in this process, as a user would type it; a crash is re-raised."""
    result = CliRunner().invoke(main, list(args), input=input, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def visible(db: str) -> dict[str, Any]:
    """What `llmbatch status --format json` reports."""
    result = cli("--db", db, "status", "--format", "json")
    assert result.exit_code == 0, result.output
    return dict(orjson.loads(result.stdout))


# -- end-to-end runs against the emulator --------------------------------------------------------

E2E_KEY_ENV = "LLMBATCH_E2E_KEY"  # set to a fake key for every e2e test (tests/e2e/conftest.py)


def _services() -> list[str]:
    """The shipped OpenAI-compatible services (none in code from before them)."""
    try:
        from llmbatch.providers.compatible import SHIPPED
    except ImportError:
        return []
    return list(SHIPPED)


def enqueue_hi(db: str, ids: range) -> None:
    """Queue `q` of `db`: one tiny chat request `r{i}` for each i in `ids`."""
    from llmbatch import Queue

    items = [{"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body()} for i in ids]
    with Queue(db, "q", provider="openai") as q:
        assert q.add_many(items).added == len(ids)


def memory_engine(db: str, memory: Any, clock: Any) -> Engine:
    """An engine on `db` sending to the in-process `memory` provider on a virtual `clock`."""
    settings = EngineSettings(settle_seconds=0.0, backoff_seconds=10.0)
    return Engine(open_store(db), settings, providers={"openai": memory}, clock=clock)


def fast_settings(emu: Any, **overrides: Any) -> EngineSettings:
    """Engine settings for tests: fast polling, short retry and settle delays, both OpenAI
    surfaces, Anthropic and Gemini pointed at a running emulator (`emu` is a RunningEmulator)."""
    values: dict[str, Any] = {
        "poll_interval": 0.05,
        "max_poll_interval": 0.2,
        "settle_seconds": 0.5,
        # after an unknown create outcome the engine waits this client timeout plus the settle
        # window before it may create again
        "submit_timeout": 1.0,
        "backoff_seconds": 0.1,
        "retry": RetryPolicy(base_seconds=0.05, max_seconds=0.1),
        "providers": {
            "openai": {"base_url": emu.base_url, "api_key_env": E2E_KEY_ENV},
            "azure": {"endpoint": emu.url, "api_key_env": E2E_KEY_ENV},
            "anthropic": {"base_url": emu.url, "api_key_env": E2E_KEY_ENV},
            "gemini": {"base_url": emu.url, "api_key_env": E2E_KEY_ENV},
            **{
                name: {"base_url": f"{emu.url}/compatible/{name}/v1", "api_key_env": E2E_KEY_ENV}
                for name in _services()
            },
        },
    }
    values.update(overrides)
    if "submit_timeout" not in overrides:  # it must fit in a short lease a test sets
        values["submit_timeout"] = min(1.0, 0.8 * values.get("lease_ttl", 600.0))
    known = {f.name for f in dataclasses.fields(EngineSettings)}
    # settings an older EngineSettings lacks are left out (tests run against older code too)
    return EngineSettings(**{k: v for k, v in values.items() if k in known})


def drain(db: str, settings: EngineSettings, max_seconds: float = 60.0) -> None:
    """Tick an engine over `db` until nothing is unfinished, as `llmbatch wait` does."""
    engine = Engine(open_store(db), settings)
    deadline = time.monotonic() + max_seconds
    try:
        while engine.store.unfinished_count():
            engine.tick(time.time())
            assert time.monotonic() < deadline, "not drained in time"
            time.sleep(0.02)
    finally:
        engine.close()
        engine.store.close()


def results_per_request(db: str) -> dict[str, int]:
    """custom_id -> how many results it has (exactly 1 once it is done)."""
    rows = sql(
        db,
        "SELECT r.custom_id, COUNT(x.id) FROM requests r LEFT JOIN results x ON x.request_id = r.id "
        "GROUP BY r.custom_id",
    )
    return {str(c): int(n) for c, n in rows}


def request_states(db: str) -> dict[str, int]:
    """state -> how many requests are in it."""
    return {
        str(s): int(n) for s, n in sql(db, "SELECT state, COUNT(*) FROM requests GROUP BY state")
    }


@dataclass
class RefusingService:
    """A service that refuses every key with 401, as OpenAI does a revoked one (the emulator
    takes any non-empty key), and echoes the key back in its message, as some services do."""

    url: str
    seen: list[str] = field(default_factory=list)  # "METHOD /path" of every call


def sent_ids(db: str) -> dict[int, str]:
    """attempt id -> the custom id it was sent under (`<store>-<nonce>-<attempt>`; before
    migration 0005, `<store>-<attempt>`)."""
    store_id = str(sql(db, "SELECT value FROM meta WHERE key = 'store_id'")[0][0])
    rows = sql(db, "SELECT a.id, b.nonce FROM attempts a JOIN batches b ON b.id = a.batch_id")
    return {int(a): f"{store_id}-{nonce}-{a}" if nonce else f"{store_id}-{a}" for a, nonce in rows}


def attempt_of(custom_id: str) -> int:
    """The attempt id a custom id we sent names."""
    return int(custom_id.rsplit("-", 1)[1])


def migration_before(dialect: str, number: int) -> int:
    """The newest migration older than `number`: the schema version the code before it left."""
    return max(n for n, _ in migrations(dialect) if n < number)


def schema_before(
    number: int, db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> list[Any]:
    """The schema every migration before `number` makes, on an empty database."""
    if is_pg(db):
        from llmbatch.store.postgres import PostgresStore

        store: Any = PostgresStore(request.getfixturevalue("empty_pg_dsn"), migrate=False)
    else:
        from llmbatch.store.sqlite import SqliteStore

        store = SqliteStore(tmp_path / "reference.db", migrate=False)
    with store._write() as cur:
        for n, script in migrations(store.dialect):
            if n < number:
                for statement in split_script(script):
                    cur.execute(statement)
    snapshot = store.schema_snapshot()
    store.close()
    return list(snapshot)


def tick_until_finalizing(engine: Engine, db: str, count: int, seconds: float = 20.0) -> None:
    """Tick until `count` batches wait at the provider in `finalizing` (batches in flight
    for an upgrade test), then close the engine and its store."""
    deadline = time.monotonic() + seconds
    held = "SELECT COUNT(*) FROM batches WHERE provider_status = 'finalizing'"
    while sql(db, held)[0][0] < count:
        assert time.monotonic() < deadline, request_states(db)
        engine.tick(time.time())
        time.sleep(0.02)
    engine.close()
    engine.store.close()


def undo_statements(undo: Sequence[Undo], dialect: str) -> list[str]:
    """The statements of an UNDO_* chain for one dialect."""
    return [
        u if isinstance(u, str) else u[1] for u in undo if isinstance(u, str) or u[0] == dialect
    ]


def roll_back(
    db: str, undo: Sequence[Undo], number: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Make `db` the store the code before migration `number` left: its `undo` statements,
    the schema version before it, and the schema checked equal to that code's."""
    store: Any = open_store(db)
    with store._write() as cur:
        for statement in undo_statements(undo, store.dialect):
            cur.execute(statement)
        cur.execute(
            store.q("set_meta"),
            {"key": "schema_version", "value": str(migration_before(store.dialect, number))},
        )
    assert store.schema_snapshot() == schema_before(number, db, request, tmp_path)
    store.close()


# Azure and the shipped OpenAI-compatible services speak OpenAI's batch shape, each with its
# differences: a contract test parametrised over every provider runs them in `.ci/run`'s slow
# stage (`-m slow`), and OpenAI, Anthropic and Gemini (the three shapes) in the README's test
# command too. docs/test-suite.md says so.
OPENAI_SHAPED_VARIANTS = frozenset({"azure", "groq", "together", "cerebras"})


def provider_params(names: Sequence[str]) -> list[Any]:
    """`names` as pytest params, the OpenAI-shaped variants marked `slow`."""
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in OPENAI_SHAPED_VARIANTS else n for n in names
    ]
