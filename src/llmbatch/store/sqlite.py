"""The SQLite store: the zero-set-up default, one file, safe for several processes.

WAL mode; every write transaction is `BEGIN IMMEDIATE` (a deferred transaction that later
upgrades to a write gets SQLITE_BUSY at once and ignores the busy timeout); writes are short
chunks so no one holds the lock for long; `synchronous=FULL` only for commits that record
money being spent (`durable=True`), NORMAL otherwise.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

from llmbatch.errors import NotFound, StoreError, StoreUnavailable
from llmbatch.store.sqlfiles import positional
from llmbatch.store.sqlstore import SqlStore
from llmbatch.store.types import ROW_COLUMNS, Clash, Row

DEFAULT_BUSY_TIMEOUT = 30.0
CACHE_KIB = 16 * 1024  # a capped page cache keeps the worker's memory flat at any queue size
MIN_CACHE_KIB = 2 * 1024  # a small queue's file: an eighth of it, at least this (cache_kib)
WAL_CHECKPOINT_PAGES = 8192  # a fixed page cache keeps the worker's memory flat at any queue size
# An import's bodies are written this many at a time (`_insert_bodies`): ~5 MB held (50,000
# held ~25 MB, the worker's peak at 1M past 10k's + 40 MB; issue 23's RSS floor)
BODY_ROWS = 10_000


def cache_kib(file_bytes: int) -> int:
    """The page cache for a file of this size: an eighth of it, from 2 MiB up to 16 MiB
    (reached at a 128 MB file, ~100,000 requests; the cap was chosen for 1M-request runs)."""
    return min(CACHE_KIB, max(MIN_CACHE_KIB, file_bytes // 8 // 1024))


class SqliteStore(SqlStore):
    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        *,
        migrate: bool = True,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if not create and not self.path.exists():
            hint = _near(self.path)
            raise NotFound(
                f"no llmbatch database at {self.path}{hint}; check --db / LLMBATCH_DB "
                "(`llmbatch enqueue` creates one)"
            )
        self._check_folder()
        try:
            _create_private(self.path)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._wal(busy_timeout)
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint (and fsync) every 32 MB of WAL rather than every 4 MB: bulk loads and
            # ingests write tens of MB, and each checkpoint's fsync costs more than its copy.
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._cache_kib = 0
            self._fit_cache()
            self._conn.execute("PRAGMA temp_store = FILE")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        self._lock = threading.RLock()
        # bodies of loading imports not written yet (hash, body), by import; `_loading` is the
        # import whose chunk is being written, `_flushed` whether that wrote its bodies
        self._bodies: dict[int, list[tuple[bytes, bytes]]] = {}
        self._loading: int | None = None
        self._flushed = False
        self.store_id = ""
        if migrate:
            self._migrate(create)

    def _fit_cache(self) -> None:
        """Grow the page cache with the file (`cache_kib`): a cache is filled as pages are
        read, so a 16 MiB one held most of a 20,000-request queue's 25 MB file in memory."""
        try:
            kib = cache_kib(os.path.getsize(self.path))
        except OSError:
            return
        if kib > self._cache_kib:
            self._conn.execute(f"PRAGMA cache_size = -{kib}")
            self._cache_kib = kib

    def _wal(self, busy_timeout: float) -> None:
        """Switch to WAL. Two processes opening a new file at once can get SQLITE_BUSY here
        without the busy handler being called, so wait for the other one ourselves."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _check_folder(self) -> None:
        folder = self.path.resolve().parent
        if not folder.is_dir():  # a name that is not there, as a misspelt path: usage
            raise NotFound(f"cannot open database {self.path}: folder {folder} does not exist")
        if not self.path.exists() and not os.access(folder, os.W_OK):
            raise StoreError(f"cannot create database {self.path}: folder {folder} is not writable")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(f"cannot write database {self.path}: the file is read-only")

    def close(self) -> None:
        self._conn.close()

    def _where(self) -> dict[str, Any] | None:
        """The file's device, inode and path: a copy has another inode, a move another path."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return {"device": st.st_dev, "inode": st.st_ino, "path": os.path.realpath(self.path)}

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            conn = self._conn
            try:
                self._fit_cache()  # a stat: the file grows only inside writes
                if durable:
                    conn.execute("PRAGMA synchronous = FULL")
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    conn.rollback()
                    raise
                cur.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:  # a COMMIT that failed leaves it open: never carry it on
                    conn.rollback()
                raise self._error(exc) from None
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
            except sqlite3.OperationalError as exc:
                raise self._error(exc) from None
            finally:
                cur.close()

    def _error(self, exc: sqlite3.OperationalError) -> StoreError:
        """Locked past the busy timeout is a wait, not a fault: another process holds the
        write lock (one paused, or in a long write) and will let it go, so a worker waits and
        tries again as through any outage instead of exiting."""
        primary = exc.sqlite_errorcode & 0xFF  # of an extended code such as BUSY_SNAPSHOT
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreUnavailable(f"{self.path}: {exc} (another process holds its write lock)")
        return StoreError(f"{self.path}: {exc}")

    def _insert_rows(
        self, cur: Any, queue: str, import_id: int, rows: Sequence[Row], now: float
    ) -> int:
        before = self._conn.total_changes
        self._by_row(cur, "insert_request", rows)
        return self._conn.total_changes - before

    def _by_row(self, cur: Any, name: str, rows: Sequence[Row]) -> None:
        """A statement over import rows (types.Row tuples), each parameter picked from a row
        by its name's place in ROW_COLUMNS, bound by position."""
        sql, names = positional(self.q(name))
        cur.executemany(sql, map(itemgetter(*(ROW_COLUMNS.index(n) for n in names)), rows))

    def _many(self, cur: Any, name: str, params: Sequence[Mapping[str, Any]]) -> None:
        """By position: SQLite binds a parameter by name at a cost per row, twice the insert's
        own on a wide row; picking the values in Python first costs next to nothing."""
        sql, names = positional(self.q(name))
        if len(names) == 1:
            cur.executemany(sql, ((p[names[0]],) for p in params))
        else:
            cur.executemany(sql, map(itemgetter(*names), params))

    def _many_rows(
        self, cur: Any, name: str, names: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """By position, the rows as they are when they name the statement's parameters in
        its order (else each picked into it)."""
        sql, order = positional(self.q(name))
        if tuple(names) == order:
            cur.executemany(sql, rows)
        else:
            cur.executemany(sql, map(itemgetter(*(names.index(n) for n in order)), rows))

    def load_rows(self, import_id: int, queue: str, rows: Sequence[Row]) -> list[Clash]:
        with self._lock:
            self._loading, self._flushed = import_id, False
            try:
                clashes = super().load_rows(import_id, queue, rows)
            finally:
                self._loading = None
            if self._flushed:  # committed with the chunk: they leave the buffer
                self._bodies.pop(import_id, None)
        return clashes

    def _insert_bodies(self, cur: Any, rows: Sequence[Row]) -> None:
        """Held back and written BODY_ROWS at a time, in hash order: each commit rewrites
        (in the WAL) every page of the hash index it touched, and hashes are random, so a
        commit of 10,000 touched most of the index's leaf pages once it outgrew them (at
        1,000,000 requests ~2.7 GB written for 440 MB of bodies). The rows are invisible
        until the import commits, which writes the rest first (`_flush_bodies`); a body
        comes after its row, so no clean-up sees it as no one's."""
        names = positional(self.q("insert_body"))[1]
        pick = itemgetter(*(ROW_COLUMNS.index(n) for n in names))
        if self._loading is None:
            self._write_bodies(cur, list(map(pick, rows)))
            return
        pending = self._bodies.setdefault(self._loading, [])
        pending.extend(map(pick, rows))
        if len(pending) >= BODY_ROWS:
            self._write_bodies(cur, pending)
            self._flushed = True

    def _write_bodies(self, cur: Any, bodies: list[Any]) -> None:
        """In hash order: the hash index then takes them as runs of neighbouring pages, not
        one random page a row; past the page cache (a million requests), each of those was a
        read. 1,000,000 bodies in chunks of 10,000: 9.0-9.6 -> 7.5 CPU s, the sort included."""
        sql, names = positional(self.q("insert_body"))
        bodies.sort(key=itemgetter(names.index("body_hash")))
        cur.executemany(sql, bodies)

    def _flush_bodies(self, cur: Any, import_id: int) -> None:
        pending = self._bodies.get(import_id)
        if pending:
            self._write_bodies(cur, pending)

    def commit_import(
        self, import_id: int, *, lines: int, added: int, unchanged: int, rejected: int
    ) -> None:
        super().commit_import(
            import_id, lines=lines, added=added, unchanged=unchanged, rejected=rejected
        )
        self._bodies.pop(import_id, None)

    def _drop_bodies(self, import_id: int) -> None:
        self._bodies.pop(import_id, None)

    def schema_snapshot(self) -> list[tuple[str, str, str]]:
        """(type, name, sql) of every schema object, for the migration-equality test."""
        with self._read() as cur:
            cur.execute(self.q("schema_objects"))
            rows = cur.fetchall()
        # whitespace is not schema: SQLite's ALTER TABLE ADD COLUMN writes ", col" where the
        # fresh schema has ",\n    col" (and keeps the newline before the closing parenthesis)
        return [
            (t, n, re.sub(r"\s+([,)])", r"\1", " ".join((s or "").split()))) for t, n, s in rows
        ]


def _create_private(path: Path) -> None:
    """Create a new database file readable by its owner only (0600): it holds users' prompts
    and results. SQLite gives its -wal and -shm files the database file's mode. An existing
    file keeps the mode its owner chose."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _near(path: Path) -> str:
    """`(did you mean X?)` when a database file with a similar name sits in the same folder."""
    import difflib

    try:
        names = [p.name for p in path.resolve().parent.iterdir() if p.suffix in (".db", ".sqlite")]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {path.with_name(close[0])}?)" if close else ""
