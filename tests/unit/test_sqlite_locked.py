"""A SQLite file whose write lock another process holds past the busy timeout (a worker
paused inside a write, SIGSTOP or a frozen VM) is a wait, not a fault: the store says
StoreUnavailable, which a worker waits out as any outage, where it used to raise a plain
StoreError that stopped the worker (two exits in each 200-kill Gemini crash matrix)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmbatch.errors import StoreUnavailable
from llmbatch.store import open_store


def test_a_write_lock_held_past_the_busy_timeout_is_unavailable_then_writes_go_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    store = open_store(str(db), busy_timeout=0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the paused process, inside its write
    try:
        with pytest.raises(StoreUnavailable, match="another process holds its write lock"):
            store.note("test", None, "blocked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.note("test", None, "after")  # no transaction left open by the failed one
    store.close()
