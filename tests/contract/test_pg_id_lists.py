"""PostgreSQL: an ingest chunk's attempt ids (a JSON list of up to 5,000) are parsed once per
statement, never once per attempt row. Before tables are analyzed the planner guesses 100
elements for the list and 1 attempt for the batch, and put the list on the inner side of a
nested loop: `waiting_attempt_requests` parsed 5,000 ids for each of 10,000 attempts, 3 s of
server CPU for a 10,000-request run (quadratic in the batch). PostgreSQL's dialect now reads
every such list as `= ANY(ARRAY(...))` (store/sqlfiles.py). Read with EXPLAIN ANALYZE: the
list's function scan runs once."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest

from llmbatch.store.sqlfiles import dialect_queries

ROWS = (
    "INSERT INTO batches (id, provider, endpoint, state, created_at, updated_at) "
    "VALUES (1, 'openai', '/v1/chat/completions', 'validating', 0, 0)",
    "INSERT INTO requests (id, queue, custom_id, import_id, provider, endpoint, model, "
    "body_hash, state, text_chars, text_bytes, created_at, updated_at) "
    "SELECT g, 'q', 'r' || g, 1, 'openai', '/v1/chat/completions', 'm', '\\x00', 'submitted', "
    "1, 1, 0, 0 FROM generate_series(1, 10000) g",
    "INSERT INTO attempts (request_id, batch_id, line, state, created_at) "
    "SELECT g, 1, g, 'submitted', 0 FROM generate_series(1, 10000) g",
)


def _loops(plan: dict[str, Any]) -> list[int]:
    """Actual loops of every function scan in a plan tree."""
    own = [int(plan["Actual Loops"])] if plan["Node Type"] == "Function Scan" else []
    return own + [n for child in plan.get("Plans", []) for n in _loops(child)]


@pytest.mark.parametrize(
    "name", ["waiting_attempt_requests", "waiting_attempts", "attempts_in_batch"]
)
def test_a_chunks_id_list_is_parsed_once(pg_dsn: str, name: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for statement in ROWS:
            conn.execute(statement)
        params = {"ids": orjson.dumps(list(range(2501, 7501))).decode(), "batch_id": 1}
        (plan,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + dialect_queries("postgres")[name], params
        ).fetchone()  # type: ignore[misc]
        found = conn.execute(dialect_queries("postgres")[name], params).fetchall()
    assert _loops(plan[0]["Plan"]) == [1]
    assert sorted(int(r[0]) for r in found) == list(range(2501, 7501))
