"""What the bad-input corpus runners share: reading a manifest, and a store's fingerprint.

The corpus lives in tests/data/bad_inputs/, one folder per category, each with a
`cases.toml` manifest naming a data file (or a setup) and the message it must produce.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import pytest

from helpers import is_pg, sql

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"

# Every table a request, a result, a batch or a budget lives in. `events`, `leases`,
# `imports` and `meta` are the engine's own bookkeeping (a refused import may log that it
# was refused), not the queue.
QUEUE_TABLES = ("requests", "attempts", "results", "batches", "budgets", "spend", "cost_totals")


def cases(category: str) -> list[Any]:
    """The manifest's cases as pytest params, each with its name as the test id."""
    return [pytest.param(c, id=c["name"]) for c in _load(category)]


def cases_on_stores(category: str) -> list[Any]:
    """(case, store) params: every case on SQLite, and on PostgreSQL too where the case says
    `postgres = true` (a fresh PostgreSQL database costs a second or so)."""
    out = []
    for c in _load(category):
        for store in ("sqlite", "postgres") if c.get("postgres") else ("sqlite",):
            out.append(pytest.param(c, store, id=f"{store}-{c['name']}"))
    return out


def _load(category: str) -> list[dict[str, Any]]:
    with (CORPUS / category / "cases.toml").open("rb") as f:
        return list(tomllib.load(f)["case"])


def fingerprint(db: str) -> dict[str, str]:
    """table -> a hash of its rows in a stable order: equal fingerprints, the same queue."""
    out = {}
    for table in QUEUE_TABLES:
        rows = sql(db, f"SELECT * FROM {table}")
        text = sorted(repr(tuple(_plain(v) for v in row)) for row in rows)
        out[table] = f"{len(rows)} rows, " + hashlib.sha256("\n".join(text).encode()).hexdigest()
    return out


def _plain(value: Any) -> Any:
    """PostgreSQL hands back memoryview for bytea; SQLite bytes."""
    return bytes(value) if isinstance(value, memoryview) else value


def backend(db: str) -> str:
    return "postgres" if is_pg(db) else "sqlite"
