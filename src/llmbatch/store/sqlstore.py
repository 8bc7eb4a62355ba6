"""The dialect-neutral half of both stores: migrations, imports, the read side.

A backend subclass supplies a connection, `_write()` / `_read()` transactions, and
`_insert_rows()` (executemany on SQLite, COPY on PostgreSQL). Queries live in `sql/`.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, cast

from llmbatch.errors import NotFound, StoreError
from llmbatch.store.archive import ArchiveOps
from llmbatch.store.batching import BatchingOps
from llmbatch.store.budgets import BudgetOps
from llmbatch.store.claims import ClaimOps
from llmbatch.store.ledger import LedgerOps
from llmbatch.store.manage import ManageOps
from llmbatch.store.observe import ObserveOps
from llmbatch.store.ownership import OwnershipOps
from llmbatch.store.recovery import RecoveryOps
from llmbatch.store.rows import by_name, column, named, scalar
from llmbatch.store.setbacks import SetbackOps
from llmbatch.store.sqlfiles import as_list, dialect_queries, fresh_schema
from llmbatch.store.sqlfiles import migrations as migrations  # where tests and tools look
from llmbatch.store.sqlfiles import split_script as split_script
from llmbatch.store.types import ROW_COLUMNS, Clash, CostGroup, Count, ImportInfo, Row
from llmbatch.store.watch import WatchOps

# An import on another machine whose heartbeat is this old is presumed dead.
IMPORT_STALE_AFTER = 600.0
DELETE_CHUNK = 5000
_CUSTOM_ID, _LINE, _BODY_HASH = (ROW_COLUMNS.index(c) for c in ("custom_id", "line", "body_hash"))


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


@cache
def _pid_space() -> str:
    """This machine's boot and this process's PID namespace (`<boot id>.<namespace inode>`):
    two containers on one host name (host networking) have their own PID namespaces, and a
    pid means nothing outside its own. Empty where /proc does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip().replace("-", "")[:12]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}.{namespace}"


def owner_tag() -> str:
    """Who runs an import or holds a lease: host, pid, process start time (so a reused pid is
    not alive) and the PID space the pid belongs to (boot and PID namespace)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}:{_pid_space()}"


def owner_alive(owner: str, heartbeat_at: float, now: float) -> bool:
    """Whether an owner tag names a live process. Only a process in our own PID space can be
    looked up; any other (another machine, another container on this host name) is alive
    while its heartbeat is fresh. A tag without a PID space (written before it was recorded)
    is looked up by pid, as it always was."""
    host, _, rest = owner.partition(":")
    pid_s, _, rest = rest.partition(":")
    start, _, space = rest.partition(":")
    if host != socket.gethostname() or (space and space != _pid_space()):
        return now - heartbeat_at < IMPORT_STALE_AFTER
    try:
        pid = int(pid_s)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return _process_start(pid) == start


class SqlStore(
    ArchiveOps,
    BatchingOps,
    ClaimOps,
    BudgetOps,
    LedgerOps,
    RecoveryOps,
    ManageOps,
    SetbackOps,
    WatchOps,
    ObserveOps,
    OwnershipOps,
):
    """Shared implementation of the Store protocol over a DB-API-like cursor."""

    dialect: str
    store_id: str
    location: str

    # -- backend hooks -------------------------------------------------------------------
    def _write(self, durable: bool = False) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _insert_rows(
        self, cur: Any, queue: str, import_id: int, rows: Sequence[Row], now: float
    ) -> int:
        raise NotImplementedError

    def _insert_bodies(self, cur: Any, rows: Sequence[Row]) -> None:
        """Store the bodies of rows `_insert_rows` put in (once per hash), if it did not."""

    def _has_schema(self, cur: Any) -> bool:
        cur.execute(self.q("has_schema"))
        return bool(scalar(cur))

    def _forget_bodies(self, cur: Any) -> None:
        """Delete the bodies no request refers to any more (a purge, a failed import)."""
        cur.execute(self.q("delete_orphan_bodies"))

    def _lock_schema(self, cur: Any) -> None:
        """Serialise migrations between processes (the write transaction does it on SQLite)."""

    def q(self, name: str) -> str:
        """A named query (sql/*.sql, or this dialect's own) as this backend's driver takes it."""
        return dialect_queries(self.dialect)[name]

    def _many(self, cur: Any, name: str, params: Sequence[Mapping[str, Any]]) -> None:
        """A named statement once per parameter set (a mapping by name, like every other)."""
        cur.executemany(self.q(name), params)

    def _many_rows(
        self, cur: Any, name: str, names: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """A named statement once per row, each row the values of `names` in that order."""
        cur.executemany(self.q(name), [dict(zip(names, r, strict=True)) for r in rows])

    def close(self) -> None:
        raise NotImplementedError

    # -- schema --------------------------------------------------------------------------
    def _migrate(self, create: bool = True) -> None:
        """Bring the schema up to date; without `create`, a database with no llmbatch schema
        is NotFound (a misspelt name must not become a new, empty store)."""
        steps = migrations(self.dialect)
        latest = steps[-1][0]
        with self._write() as cur:
            self._lock_schema(cur)
            if not self._has_schema(cur):
                if not create:
                    raise NotFound(
                        f"{self.location} holds no llmbatch data; check --db / LLMBATCH_DB "
                        "(`llmbatch enqueue` creates a store)"
                    )
                for stmt in split_script(fresh_schema(self.dialect)):
                    cur.execute(stmt)
                version = latest
                self._set_meta(cur, "store_id", "lb" + secrets.token_hex(5))
            else:
                version = int(self._get_meta(cur, "schema_version") or 0)
                if version > latest:
                    raise StoreError(
                        f"{self.location} has schema version {version}, newer than this llmbatch "
                        f"knows ({latest}); upgrade llmbatch"
                    )
                for number, script in steps:
                    if number > version:
                        for stmt in split_script(script):
                            cur.execute(stmt)
                        version = number
            self._set_meta(cur, "schema_version", str(version))
            self.store_id = str(self._get_meta(cur, "store_id"))
            self._check_home(cur, time.time())

    def migrate_from_zero(self) -> None:
        """Apply every migration to an empty database (for the schema-equality test)."""
        with self._write() as cur:
            for _, script in migrations(self.dialect):
                for stmt in split_script(script):
                    cur.execute(stmt)

    def _get_meta(self, cur: Any, key: str) -> str | None:
        cur.execute(self.q("get_meta"), {"key": key})
        value = scalar(cur)
        return None if value is None else str(value)

    def _set_meta(self, cur: Any, key: str, value: str) -> None:
        cur.execute(self.q("set_meta"), {"key": key, "value": value})

    # -- imports -------------------------------------------------------------------------
    def begin_import(self, queue: str, source: str) -> int:
        now = time.time()
        with self._write() as cur:
            cur.execute(self.q("max_request_id"))
            low_water = int(scalar(cur))
            params = {
                "queue": queue,
                "source": source,
                "owner": owner_tag(),
                "low_water": low_water,
                "now": now,
            }
            cur.execute(self.q("insert_import"), params)
            import_id = int(scalar(cur))
            self._event(cur, "import_started", import_id=import_id, detail=f"{queue} <- {source}")
        return import_id

    def load_rows(self, import_id: int, queue: str, rows: Sequence[Row]) -> list[Clash]:
        now = time.time()
        with self._write() as cur:
            cur.execute(
                self.q("heartbeat_import"),
                {"now": now, "lines": rows[-1][_LINE] if rows else 0, "id": import_id},
            )
            if cur.rowcount != 1:
                raise StoreError(
                    f"import {import_id} is no longer loading (it was aborted or cleaned up)"
                )
            inserted = self._insert_rows(cur, queue, import_id, rows, now)
            if inserted == len(rows):
                self._insert_bodies(cur, rows)
                return []
            clashes = self._clashes(cur, queue, import_id, rows)
            # a body only for a row that went in: a clash's body would be no one's
            skipped = {c.line for c in clashes}
            self._insert_bodies(cur, [r for r in rows if r[_LINE] not in skipped])
            return clashes

    def _clashes(self, cur: Any, queue: str, import_id: int, rows: Sequence[Row]) -> list[Clash]:
        """Classify the rows an `ON CONFLICT DO NOTHING` insert skipped."""
        existing: dict[str, tuple[bytes, int, int, str]] = {}
        ids = as_list({cast(str, r[_CUSTOM_ID]) for r in rows})
        cur.execute(self.q("clash_rows"), {"queue": queue, "ids": ids})
        for r in by_name(cur):
            existing[r["custom_id"]] = (
                bytes(r["body_hash"]),
                int(r["import_id"]),
                int(r["line"] or 0),
                str(r["import_state"]),
            )
        out: list[Clash] = []
        for row in rows:
            cid, line = cast(str, row[_CUSTOM_ID]), cast(int, row[_LINE])
            h = cast(bytes, row[_BODY_HASH])
            h0, imp, line0, imp_state = existing[cid]
            if imp == import_id:
                if line0 != line:
                    out.append(Clash(line, cid, "duplicate", other_line=line0))
            elif imp_state != "committed":
                out.append(Clash(line, cid, "busy", other_import=imp))
            elif h0 == h:
                out.append(Clash(line, cid, "unchanged", other_line=line0, other_import=imp))
            else:
                out.append(Clash(line, cid, "conflict", other_line=line0, other_import=imp))
        return out

    def commit_import(
        self, import_id: int, *, lines: int, added: int, unchanged: int, rejected: int
    ) -> None:
        now = time.time()
        params = {
            "id": import_id,
            "lines": lines,
            "added": added,
            "unchanged": unchanged,
            "rejected": rejected,
            "now": now,
        }
        with self._write() as cur:
            cur.execute(self.q("commit_import"), params)
            if cur.rowcount != 1:
                raise StoreError(
                    f"import {import_id} was aborted or cleaned up before it could commit"
                )
            self._event(
                cur,
                "import_committed",
                import_id=import_id,
                detail=f"added {added}, unchanged {unchanged}",
            )

    def abort_import(self, import_id: int, error: str) -> None:
        """Fail a loading import and delete its rows. An import that committed meanwhile (a
        clean-up racing the commit) is left alone: its rows are the queue's now."""
        with self._write() as cur:
            cur.execute(
                self.q("fail_import"), {"id": import_id, "error": error[:2000], "now": time.time()}
            )
            if cur.rowcount != 1:
                return  # committed, or failed already (then its rows are being deleted)
            self._event(cur, "import_failed", import_id=import_id, detail=error[:2000])
        self._delete_rows(import_id)

    def _delete_rows(self, import_id: int) -> None:
        with self._read() as cur:
            cur.execute(self.q("get_import"), {"id": import_id})
            low_water = int(by_name(cur)[0]["low_water"])
        while True:
            with self._write() as cur:
                cur.execute(
                    self.q("delete_import_rows"),
                    {"low_water": low_water, "id": import_id, "n": DELETE_CHUNK},
                )
                if cur.rowcount < DELETE_CHUNK:
                    self._forget_bodies(cur)
                    return

    def clean_dead_imports(self) -> list[int]:
        now = time.time()
        with self._read() as cur:
            cur.execute(self.q("loading_imports"))
            loading = cur.fetchall()
        dead = [int(i) for i, owner, hb in loading if not owner_alive(str(owner), float(hb), now)]
        for import_id in dead:
            self.abort_import(import_id, "the importing process died; nothing from it was kept")
        with self._read() as cur:
            cur.execute(self.q("failed_imports_with_rows"))
            leftovers = [int(i) for i in column(cur)]
        for import_id in leftovers:
            self._delete_rows(import_id)
        return dead

    def get_import(self, import_id: int) -> ImportInfo:
        with self._read() as cur:
            cur.execute(self.q("get_import"), {"id": import_id})
            found = by_name(cur)
        if not found:
            raise StoreError(f"no import {import_id} in {self.location}")
        r = found[0]
        return ImportInfo(
            id=int(r["id"]),
            queue=r["queue"],
            source=r["source"],
            state=r["state"],
            lines=int(r["lines"]),
            added=int(r["added"]),
            unchanged=int(r["unchanged"]),
            rejected=int(r["rejected"]),
            error=r["error"],
        )

    def _event(
        self,
        cur: Any,
        kind: str,
        *,
        import_id: int | None = None,
        batch_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        params = {
            "now": time.time(),
            "kind": kind,
            "import_id": import_id,
            "batch_id": batch_id,
            "detail": detail,
        }
        cur.execute(self.q("insert_event"), params)

    # -- read side -----------------------------------------------------------------------
    def counts(self, queue: str | None = None) -> list[Count]:
        with self._read() as cur:
            if queue is None:
                cur.execute(self.q("counts"))
            else:
                cur.execute(self.q("counts_of_queue"), {"queue": queue})
            return named(Count, cur)

    def request_detail(self, custom_id: str, queue: str | None = None) -> list[dict[str, Any]]:
        out = []
        with self._read() as cur:
            cur.execute(self.q("get_request"), {"custom_id": custom_id, "queue": queue})
            for req in by_name(cur):
                req["body"] = bytes(req["body"])
                cur.execute(self.q("request_attempts"), {"request_id": req["id"]})
                req["attempts"] = by_name(cur)
                cur.execute(self.q("request_result"), {"request_id": req["id"]})
                results = by_name(cur)
                req["result"] = results[0] if results else None
                out.append(req)
        return out

    def usage_summary(self, queue: str | None = None) -> list[tuple[str, str, int, int, int, int]]:
        """(provider, model, results, input tokens, output tokens, succeeded) per model."""
        with self._read() as cur:
            cur.execute(self.q("usage_summary"), {"queue": queue})
            return [
                (
                    r["provider"],
                    r["model"],
                    int(r["results"]),
                    int(r["input_tokens"]),
                    int(r["output_tokens"]),
                    int(r["succeeded"]),
                )
                for r in by_name(cur)
            ]

    def cost_groups(self, since: float, until: float, queue: str | None = None) -> list[CostGroup]:
        """Usage of results recorded in [since, until) per pricing aggregate: from the running
        totals when both ends are UTC midnights, else summed from the results."""
        days = (since / 86400, until / 86400)
        with self._read() as cur:
            if days[0].is_integer() and days[1].is_integer():
                cur.execute(
                    self.q("cost_totals"),
                    {"since_day": int(days[0]), "until_day": int(days[1]), "queue": queue},
                )
            else:
                cur.execute(self.q("cost_groups"), {"since": since, "until": until, "queue": queue})
            return named(CostGroup, cur)

    def batch_overview(self, recent: int = 5, queue: str | None = None) -> list[dict[str, Any]]:
        """Every batch still open, and the most recently finished ones (of `queue`'s requests)."""
        with self._read() as cur:
            cur.execute(self.q("batch_overview"), {"recent": recent, "queue": queue})
            return by_name(cur)

    def deadline_risk(
        self, now: float, horizon: float, queue: str | None = None
    ) -> tuple[int, int]:
        """(missed, at risk): unfinished requests whose deadline has passed, or falls before
        `horizon` (the latest a batch sent now may finish)."""
        with self._read() as cur:
            cur.execute(self.q("deadline_risk"), {"now": now, "horizon": horizon, "queue": queue})
            risk = by_name(cur)[0]
        return int(risk["missed"] or 0), int(risk["at_risk"] or 0)

    def recent_events(self, n: int = 20) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(self.q("recent_events"), {"n": n})
            return by_name(cur)
