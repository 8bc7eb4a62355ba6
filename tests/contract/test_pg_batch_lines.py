"""PostgreSQL: a page of an intent's lines (`batch_lines`, 2,000 at a time while the file is
written) reads each line's request and body by key. Planned as a join, the page's attempts
were hashed and every row of `requests` read to match them (or merged with `requests` read
from its first id), once per page: quadratic in the store, the pack's largest statement at
1,000,000 requests. Read with EXPLAIN ANALYZE: the rows read from `requests` are the page's."""

from __future__ import annotations

from typing import Any

import psycopg

from llmbatch.store.sqlfiles import dialect_queries

ROWS = (
    "INSERT INTO batches (id, provider, endpoint, state, created_at, updated_at) "
    "VALUES (1, 'openai', '/v1/chat/completions', 'submitting', 0, 0), "
    "(2, 'openai', '/v1/chat/completions', 'submitting', 0, 0)",
    "INSERT INTO request_bodies (hash, body) "
    "SELECT int8send(g), convert_to('{\"n\": ' || g || '}', 'UTF8') "
    "FROM generate_series(1, 20000) g",
    "INSERT INTO requests (id, queue, custom_id, import_id, provider, endpoint, model, "
    "body_hash, state, text_chars, text_bytes, created_at, updated_at) "
    "SELECT g, 'q', 'r' || g, 1, 'openai', '/v1/chat/completions', 'm', int8send(g), "
    "'packed', 1, 1, 0, 0 FROM generate_series(1, 20000) g",
    "INSERT INTO attempts (request_id, batch_id, line, state, created_at) "
    "SELECT g, 1 + (g > 10000)::int, g - 10000 * (g > 10000)::int, 'packed', 0 "
    "FROM generate_series(1, 20000) g",
    "ANALYZE requests",
    "ANALYZE attempts",
    "ANALYZE request_bodies",
)


def _read(plan: dict[str, Any], table: str) -> int:
    """Rows a plan tree read from `table` (every scan of it, every loop)."""
    own = plan.get("Relation Name") == table
    rows = int(plan["Actual Rows"]) * int(plan["Actual Loops"]) if own else 0
    return rows + sum(_read(child, table) for child in plan.get("Plans", []))


def test_a_page_of_an_intents_lines_reads_only_its_requests(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for statement in ROWS:
            conn.execute(statement)
        conn.execute("SET max_parallel_workers_per_gather = 0")
        params = {"batch_id": 2, "after": 8000, "upto": 10000}  # the last page of the second
        query = dialect_queries("postgres")["batch_lines"]
        (plan,) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()  # type: ignore[misc]
        found = conn.execute(query, params).fetchall()
    assert [(a, line) for a, _e, _b, line in found] == [(a, a - 10000) for a in range(18001, 20001)]
    assert bytes(found[0][2]) == b'{"n": 18001}'
    assert _read(plan[0]["Plan"], "requests") == 2000
