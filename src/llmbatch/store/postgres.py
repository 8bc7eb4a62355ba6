"""The PostgreSQL store, for many workers on many machines sharing one queue.

psycopg 3; an enqueue COPYs each chunk straight into `requests` and `request_bodies`, or,
once a row clashes, into a per-session staging table moved with one set-based insert; claims
(in the engine) use `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any, cast

import psycopg
from psycopg import conninfo
from psycopg.types.string import BytesBinaryDumper

from llmbatch.errors import StoreError, StoreUnavailable
from llmbatch.store.batching import _detail, _reason, attempt_of
from llmbatch.store.sqlfiles import _sql_text
from llmbatch.store.sqlstore import SqlStore
from llmbatch.store.types import Outcome, Row, Succeeded

# sql/postgres/bulk.sql's outcome_staging, column by column
_OUTCOME_COLUMNS = (
    "int8 int8 text int8 text bytea text text int8 int8 int8 int8 int8 int8 text int8 float8 int8 "
    "int8 text"
)
_OUTCOME_TYPES = _OUTCOME_COLUMNS.split()
_STAGING_TYPES = [
    "text",
    "text",
    "int8",
    "int8",
    "text",
    "text",
    "text",
    "bytea",
    "bytea",
    "int8",
    "float8",
    "int8",
    "int8",
    "int8",
    "float8",
    "float8",
]
# the staging row less its body (index 7): a row of requests as copy_requests lists it
_REQUEST_TYPES = _STAGING_TYPES[:7] + _STAGING_TYPES[8:]
_BODY, _HASH, _IMPORT = 7, 8, 2
_by_hash = itemgetter(_HASH)


def describe_dsn(dsn: str) -> str:
    """host:port/dbname as user — never the password."""
    try:
        p = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unparseable PostgreSQL DSN"
    host = p.get("host") or "localhost"
    where = f"{host}:{p.get('port') or 5432}/{p.get('dbname') or '?'}"
    return f"{where} as {p['user']}" if p.get("user") else where


class PostgresStore(SqlStore):
    dialect = "postgres"

    def __init__(self, dsn: str, *, migrate: bool = True, create: bool = True) -> None:
        self.location = describe_dsn(dsn)
        self._dsn = dsn
        self._conn = self._connect()
        self._lock = threading.RLock()
        self._staging_ready = False
        self._staged = 0  # rows in the staging table (the last chunk's; 0: copied straight)
        # the import whose requests / bodies clashed once: its later chunks are staged
        self._rows_clash: int | None = None
        self._bodies_clash: int | None = None
        self.store_id = ""
        if migrate:
            self._migrate(create)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = _scrub(_first_line(exc), self._dsn)
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self.location}: {reason}"
            ) from None
        # A COPY's `set_types(["bytea"])` finds its dumper by the type's oid, where psycopg's
        # DB-API `Binary` wrapper registered a Python-level one (an isinstance check, then the
        # C dumper): the C dumper of `bytes` itself, ~0.3 CPU s per 100,000 rows of enqueue.
        conn.adapters.register_dumper(None, BytesBinaryDumper)
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        """The session, opened again if the last one was lost (a restart, a failover, a
        terminated backend): the caller's transaction starts on a live connection. A store
        closed on purpose stays closed."""
        if self._conn.broken:
            self._conn = self._connect()
            self._staging_ready = False  # a temporary table dies with its session
        return self._conn

    def _failed(self, exc: psycopg.OperationalError) -> StoreError:
        if self._conn.broken:
            return StoreUnavailable(
                f"lost the connection to PostgreSQL at {self.location}: {_first_line(exc)}"
            )
        return StoreError(f"PostgreSQL at {self.location}: {exc}")

    def close(self) -> None:
        self._conn.close()

    def _where(self) -> dict[str, Any] | None:
        """The cluster's `system_identifier` and the database's name: a failover to a physical
        replica keeps both, a dump restored elsewhere changes one. None where the server
        does not let us read the identifier (then a copy is not noticed)."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:  # a savepoint inside a transaction
                    cur.execute(self.q("where_am_i"))
                    sysid, database = cur.fetchone() or (None, None)
            except psycopg.Error:
                return None
        return {"system_identifier": str(sysid), "database": str(database)}

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                raise self._failed(exc) from None

    @contextmanager
    def _read(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                raise self._failed(exc) from None

    def _insert_rows(
        self, cur: Any, queue: str, import_id: int, rows: Sequence[Row], now: float
    ) -> int:
        """A chunk COPYed straight into requests in a savepoint; should a row be there already
        (a re-enqueue, a duplicate, a concurrent import), staged and inserted with ON CONFLICT
        as before, as is the rest of that import. The staging table and the per-row conflict
        probe were ~60 % of the server's enqueue work (issue 23)."""
        if self._rows_clash != import_id:
            try:
                with cur.connection.transaction(), cur.copy(self.q("copy_requests")) as copy:
                    copy.set_types(_REQUEST_TYPES)
                    for r in rows:
                        copy.write_row(r[:_BODY] + r[_HASH:])
            except psycopg.errors.UniqueViolation:
                self._rows_clash = import_id
            else:
                self._staged = 0
                return len(rows)
        self._stage(cur)
        with cur.copy(self.q("copy_staging")) as copy:
            copy.set_types(_STAGING_TYPES)
            for r in rows:
                copy.write_row(r)
        cur.execute(self.q("load_staged"))
        self._staged = len(rows)
        return int(cur.rowcount)

    def _copy_bodies(self, cur: Any, query: str, rows: Sequence[Row]) -> None:
        """One (body, hash) per hash, in hash order: the index takes them at a third less
        server CPU than in line order. A sort by key: sorting pairs compares tuples, ~5x the
        CPU."""
        last = None
        with cur.copy(self.q(query)) as copy:
            copy.set_types(["bytea", "bytea"])
            for r in sorted(rows, key=_by_hash):
                if r[_HASH] != last:
                    last = r[_HASH]
                    copy.write_row(r[_BODY : _HASH + 1])

    def _stage(self, cur: Any) -> None:
        if not self._staging_ready:
            cur.execute(_sql_text("postgres/staging.sql"))
            self._staging_ready = True

    def _insert_bodies(self, cur: Any, rows: Sequence[Row]) -> None:
        """The bodies of `rows` (those `_insert_rows` put in). Copied straight: one per hash
        into request_bodies, or, where one is there already, staged and inserted with ON
        CONFLICT (as for the rest of the import). Staged: from the staging table, all of it
        when every staged row went in, else those of the rows that did; then empty it."""
        if not self._staged:
            import_id = rows[0][_IMPORT]
            if self._bodies_clash != import_id:
                try:
                    with cur.connection.transaction():
                        self._copy_bodies(cur, "copy_bodies", rows)
                    return
                except psycopg.errors.UniqueViolation:
                    self._bodies_clash = cast(int, import_id)
            self._stage(cur)
            self._copy_bodies(cur, "copy_staged_bodies", rows)
            cur.execute(self.q("load_staged_bodies"))
        elif len(rows) == self._staged:
            cur.execute(self.q("load_staged_bodies"))
        elif rows:
            cur.execute(self.q("load_staged_bodies_added"))
        cur.execute(self.q("clear_staging"))

    def _forget_bodies(self, cur: Any) -> None:
        """As on SQLite, but first wait for every import writing bodies to commit and hold
        new ones back until this commits: a request inserted meanwhile may refer to a body
        this statement's snapshot sees no request for."""
        cur.execute(self.q("lock_bodies"))
        super()._forget_bodies(cur)

    def _pack(self, cur: Any, batch_id: int, request_ids: Sequence[int], now: float) -> int:
        """As on SQLite, with the ids as one BIGINT[] parameter."""
        ids = list(request_ids)
        cur.execute(self.q("pack_requests"), {"ids": ids, "now": now})
        packed = int(cur.rowcount)
        if packed == len(ids):
            cur.execute(self.q("insert_attempts"), {"ids": ids, "batch_id": batch_id, "now": now})
        return packed

    def _record_outcomes(
        self, cur: Any, todo: Sequence[Outcome | Succeeded], waiting: dict[int, int], now: float
    ) -> None:
        """The chunk's outcomes COPYed into a staging table (binary, one pass), then one
        statement each for the attempts, the results, the cost totals (from the staged rows)
        and the requests."""
        if not todo:
            return
        q = self.q
        # every time: a CREATE rolled back with its transaction leaves no table behind
        cur.execute(q("outcome_staging"))
        with cur.copy(q("copy_outcomes")) as copy:
            copy.set_types(_OUTCOME_TYPES)
            for o in todo:
                if isinstance(o, tuple):
                    copy.write_row(_staged_success(o, waiting[o[0]]))
                else:
                    copy.write_row(_staged(o, waiting[o.attempt_id]))
        ids = [attempt_of(o) for o in todo]
        cur.execute(q("finish_staged_attempts"), {"now": now, "ids": ids})
        day = int(now // 86400)
        cur.execute(q("insert_staged_results"), {"now": now, "day": day})
        kinds = ["succeeded" if isinstance(o, tuple) else o.kind for o in todo]
        if "succeeded" in kinds or "failed" in kinds:
            cur.execute(q("add_staged_cost_totals"), {"day": day})
        for kind in sorted(set(kinds)):
            cur.execute(q(f"staged_{kind}"), {"now": now})
        cur.execute(q("clear_outcome_staging"))

    def _lock_schema(self, cur: Any) -> None:
        cur.execute(self.q("lock_schema"))

    def schema_snapshot(self) -> list[tuple[str, ...]]:
        """Columns, constraints and indexes of our tables, for the migration-equality test."""
        with self._read() as cur:
            cur.execute(self.q("schema_columns"))
            cols = [tuple(map(str, r)) for r in cur.fetchall()]
            cur.execute(self.q("schema_indexes"))
            idx = [tuple(map(str, r)) for r in cur.fetchall()]
            cur.execute(self.q("schema_constraints"))
            keys = [tuple(map(str, r)) for r in cur.fetchall()]
            cur.execute(self.q("schema_storage"))
            storage = [tuple(map(str, r)) for r in cur.fetchall()]
        return cols + idx + keys + storage


def _staged(o: Outcome, request_id: int) -> tuple[Any, ...]:
    """An outcome as a row of sql/postgres/bulk.sql's outcome_staging."""
    reason = None if o.kind == "succeeded" else _reason(o)
    head = (o.attempt_id, request_id, o.kind, o.status_code, o.provider_request_id, o.body)
    tokens = (o.error_code, o.error_message, o.input_tokens, o.output_tokens, *_detail(o))
    return (*head, *tokens, o.not_before, int(o.charge_expiry), int(o.charge_rejection), reason)


def _staged_success(s: Succeeded, request_id: int) -> tuple[Any, ...]:
    """A `Succeeded` tuple as a row of outcome_staging (`_staged` of its `Outcome`)."""
    a, status, rid, body, inp, out, cached, w5m, w1h, reasoning, flag, tier = s
    head = (a, request_id, "succeeded", status, rid, body, None, None, inp, out)
    return (*head, cached, w5m, w1h, reasoning, flag, tier, None, 0, 0, None)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _scrub(text: str, dsn: str) -> str:
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        # unparseable, so psycopg's message may quote the whole DSN: blank what looks secret
        text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
        return re.sub(r"(password\s*=\s*)[^&\s\"']+", r"\1***", text, flags=re.I)
    return text.replace(str(password), "***") if password else text
