"""Persistence under the data directory: one SQLite database plus content files.

Layout::

    DATA_DIR/emulator.sqlite3   files, batches (public object + progress), settings, call log
    DATA_DIR/files/FILE_ID      file contents, uploads and batch outputs alike
    DATA_DIR/work/BATCH_ID.*    a running batch's line index and partial output/error files

A batch's progress (lines done, bytes written to its partial files, counts, usage) is saved
in the same transaction after each processed chunk, so a restart truncates the partial files
to the saved sizes and carries on: nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

Json = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    flavor TEXT NOT NULL,
    purpose TEXT NOT NULL,
    expires_at INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0,
    obj TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_flavor ON files (flavor, deleted);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    flavor TEXT NOT NULL,
    status TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    created REAL NOT NULL,
    obj TEXT NOT NULL,
    internal TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status INTEGER NOT NULL,
    body_sha256 TEXT,
    started REAL,
    made TEXT
);
"""

#: Active batch states; `canceling` (one l) is an Anthropic Message Batch's, the
#: `BATCH_STATE_*` ones a Gemini batch's.
ACTIVE = (
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "canceling",
    "BATCH_STATE_PENDING",
    "BATCH_STATE_RUNNING",
)
TERMINAL = ("completed", "failed", "expired", "cancelled")


def _status(obj: Json) -> str:
    """An OpenAI batch's `status`, or an Anthropic Message Batch's `processing_status`."""
    return str(obj["status"] if "status" in obj else obj["processing_status"])


class Batch:
    """A batch row: the public `obj` (the API's Batch, or an Anthropic Message Batch as
    stored) and the emulator's `internal` state."""

    __slots__ = ("flavor", "internal", "obj", "seq")

    def __init__(self, seq: int, flavor: str, obj: Json, internal: Json) -> None:
        self.seq, self.flavor, self.obj, self.internal = seq, flavor, obj, internal

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def status(self) -> str:
        return _status(self.obj)


class State:
    """The emulator's database. Thread-safe: one connection behind one lock, short
    transactions only, so the event loop never waits long on the worker."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.work_dir = data_dir / "work"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            data_dir / "emulator.sqlite3", check_same_thread=False, isolation_level=None
        )
        # No fsync (set first: switching a new file to WAL syncs as the mode in force says):
        # a killed process loses nothing, the OS has every write; only a machine crash could
        # lose the last ones. The syncs cost each of the suite's ~700 emulators 5-10 ms to
        # start and as much to stop on a busy disk.
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        # A data dir from before the call log said when a call arrived and what it made.
        have = {r[1] for r in self._db.execute("PRAGMA table_info(calls)")}
        for column, kind in (("started", "REAL"), ("made", "TEXT")):
            if column not in have:
                self._db.execute(f"ALTER TABLE calls ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- paths ---------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def work_path(self, batch_id: str, suffix: str) -> Path:
        return self.work_dir / f"{batch_id}.{suffix}"

    # --- settings ------------------------------------------------------------------------

    def get_setting(self, key: str) -> Any:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return orjson.loads(rows[0][0]) if rows else None

    def put_setting(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, orjson.dumps(value).decode()),
            )

    # --- files ---------------------------------------------------------------------------

    def add_file(self, flavor: str, obj: Json) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (id, flavor, purpose, expires_at, obj) VALUES (?, ?, ?, ?, ?)",
                (obj["id"], flavor, obj["purpose"], obj["expires_at"], orjson.dumps(obj)),
            )

    def get_file(self, flavor: str, file_id: str, now: float) -> Json | None:
        """A live file: not deleted and not expired at virtual time `now`."""
        rows = self._query(
            "SELECT obj FROM files WHERE id = ? AND flavor = ? AND deleted = 0"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (file_id, flavor, now),
        )
        return orjson.loads(rows[0][0]) if rows else None

    def list_files(
        self,
        flavor: str,
        now: float,
        *,
        purpose: str | None,
        limit: int,
        after: str | None,
        descending: bool,
    ) -> tuple[list[Json], bool]:
        """One page of live files and whether more follow."""
        sql = (
            "SELECT obj FROM files WHERE flavor = ? AND deleted = 0"
            " AND (expires_at IS NULL OR expires_at > ?)"
        )
        args: list[Any] = [flavor, now]
        if purpose is not None:
            sql += " AND purpose = ?"
            args.append(purpose)
        if after is not None:
            sql += f" AND seq {'<' if descending else '>'} (SELECT seq FROM files WHERE id = ?)"
            args.append(after)
        sql += f" ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?"
        args.append(limit + 1)
        rows = self._query(sql, tuple(args))
        return [orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def count_files(self, flavor: str, now: float) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM files WHERE flavor = ? AND deleted = 0"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (flavor, now),
        )
        return int(rows[0][0])

    def delete_file(self, flavor: str, file_id: str, now: float) -> bool:
        """Mark a live file deleted; its bytes go unless a running batch still reads them."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE files SET deleted = 1 WHERE id = ? AND flavor = ? AND deleted = 0"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (file_id, flavor, now),
            )
            if cur.rowcount == 0:
                return False
            in_use = db.execute(
                f"SELECT 1 FROM batches WHERE input_file_id = ? AND status IN {ACTIVE}",
                (file_id,),
            ).fetchone()
        if not in_use:
            self.file_path(file_id).unlink(missing_ok=True)
        return True

    # --- batches -------------------------------------------------------------------------

    def add_batch(self, flavor: str, obj: Json, internal: Json) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO batches (id, flavor, status, input_file_id, created, obj, internal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    obj["id"],
                    flavor,
                    _status(obj),
                    obj.get("input_file_id", ""),
                    internal["created"],
                    orjson.dumps(obj),
                    orjson.dumps(internal),
                ),
            )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Batch:
        return Batch(row[0], row[1], orjson.loads(row[2]), orjson.loads(row[3]))

    def get_batch(self, batch_id: str, flavor: str | None = None) -> Batch | None:
        sql = "SELECT seq, flavor, obj, internal FROM batches WHERE id = ?"
        args: tuple[Any, ...] = (batch_id,)
        if flavor is not None:
            sql += " AND flavor = ?"
            args = (batch_id, flavor)
        rows = self._query(sql, args)
        return self._row(rows[0]) if rows else None

    def list_batches(
        self,
        flavor: str,
        *,
        limit: int,
        after: str | None,
        hide_after: float | None,
        before: str | None = None,
    ) -> tuple[list[Json], bool]:
        """One page of batches, newest first: older than `after`, or the newer ones just
        before `before` (then `has_more` says whether even newer ones exist). `hide_after`
        hides batches created later (the list-lag fault)."""
        sql = "SELECT obj FROM batches WHERE flavor = ?"
        args: list[Any] = [flavor]
        if hide_after is not None:
            sql += " AND created <= ?"
            args.append(hide_after)
        if after is not None:
            sql += " AND seq < (SELECT seq FROM batches WHERE id = ?)"
            args.append(after)
        if before is not None:
            sql += " AND seq > (SELECT seq FROM batches WHERE id = ?)"
            args.append(before)
        sql += f" ORDER BY seq {'ASC' if before is not None else 'DESC'} LIMIT ?"
        args.append(limit + 1)
        rows = self._query(sql, tuple(args))
        page = [orjson.loads(r[0]) for r in rows[:limit]]
        if before is not None:
            page.reverse()
        return page, len(rows) > limit

    def delete_batch(self, batch_id: str) -> None:
        """Forget a batch row (an Anthropic Message Batch delete)."""
        with self._tx() as db:
            db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    def active_batches(self) -> list[Batch]:
        rows = self._query(
            f"SELECT seq, flavor, obj, internal FROM batches WHERE status IN {ACTIVE} ORDER BY seq"
        )
        return [self._row(r) for r in rows]

    def enqueued_tokens(self, flavor: str, model: str) -> int:
        """Prompt tokens of this model's batches that are in progress (the quota's use)."""
        rows = self._query(
            "SELECT COALESCE(SUM(json_extract(internal, '$.tokens')), 0) FROM batches"
            " WHERE flavor = ? AND status IN ('in_progress', 'finalizing')"
            " AND json_extract(obj, '$.model') = ?",
            (flavor, model),
        )
        return int(rows[0][0])

    def model_busy_until(self, flavor: str, model: str) -> float:
        """The latest end of processing (`last_t`) among this model's batches: where a
        per-model capacity's clock resumes after a restart (0 when none ran)."""
        rows = self._query(
            "SELECT MAX(json_extract(internal, '$.last_t')) FROM batches WHERE flavor = ?"
            " AND COALESCE(json_extract(obj, '$.model'), json_extract(internal, '$.model')) = ?",
            (flavor, model),
        )
        return float(rows[0][0] or 0.0)

    def update_batch(
        self, batch_id: str, change: Callable[[Batch], bool | None], *, files: Sequence[Json] = ()
    ) -> Batch | None:
        """Read-modify-write one batch atomically. `change` edits the batch in place and
        returns False to abandon the write. `files` are file objects (flavor of the batch)
        created in the same transaction."""
        with self._tx() as db:
            row = db.execute(
                "SELECT seq, flavor, obj, internal FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                return None
            batch = self._row(row)
            if change(batch) is False:
                return batch
            db.execute(
                "UPDATE batches SET status = ?, obj = ?, internal = ? WHERE id = ?",
                (batch.status, orjson.dumps(batch.obj), orjson.dumps(batch.internal), batch_id),
            )
            for obj in files:
                db.execute(
                    "INSERT INTO files (id, flavor, purpose, expires_at, obj)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (obj["id"], batch.flavor, obj["purpose"], obj["expires_at"], orjson.dumps(obj)),
                )
            return batch

    # --- call log ------------------------------------------------------------------------

    def log_call(
        self,
        at: float,
        method: str,
        path: str,
        query: str,
        status: int,
        body_sha256: str | None,
        *,
        started: float | None = None,
        made: str | None = None,
    ) -> None:
        """One call: answered at `at`, arrived at `started`; `made` is the id of the file
        or batch it created, even when its answer was a fault (`mode: after`)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO calls (at, method, path, query, status, body_sha256, started, made)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (at, method, path, query, status, body_sha256, started, made),
            )

    def calls(self, since: int = 0, limit: int = 10_000) -> list[Json]:
        rows = self._query(
            "SELECT seq, at, method, path, query, status, body_sha256, started, made FROM calls"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (since, limit),
        )
        keys = ("seq", "at", "method", "path", "query", "status", "body_sha256", "started", "made")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def clear_calls(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM calls")

    def reset(self) -> None:
        """Forget every file, batch and call (settings stay)."""
        with self._tx() as db:
            db.execute("DELETE FROM files")
            db.execute("DELETE FROM batches")
            db.execute("DELETE FROM calls")
        for d in (self.files_dir, self.work_dir):
            for p in d.iterdir():
                p.unlink(missing_ok=True)
