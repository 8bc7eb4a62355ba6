"""Waiting calls cost the store one statement per interval, however many there are, and a
result that commits late with a lower id than one already seen is still found."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from helpers import chat_response, sql
from llmbatch import AsyncBatchClient
from llmbatch import calls as calls_module
from llmbatch.store import Store, open_store

INTERVAL = 0.05


class Counting:
    """A real store whose verbs are counted as they are called (each `watch` is one SQL
    statement: tests/contract/test_watch_store.py)."""

    def __init__(self, store: Store) -> None:
        self.store, self.counts = store, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return attr(*args, **kwargs)

        return counted


def statements_while_waiting(db: str, calls: int, seconds: float) -> Counter[str]:
    """Store verbs called while `calls` calls wait `seconds` for a worker that never comes."""
    store = Counting(open_store(db))

    async def main() -> Counter[str]:
        client = AsyncBatchClient(store, queue=f"w{calls}", watch_interval=INTERVAL)  # type: ignore[arg-type]
        pending = [
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": str(i)}]
            )
            for i in range(calls)
        ]
        await client.flush()
        await asyncio.sleep(INTERVAL * 2)  # the watcher is running
        store.counts.clear()
        await asyncio.sleep(seconds)
        seen = Counter(store.counts)
        assert not any(p.done() for p in pending)
        await client.close()
        return seen

    try:
        return asyncio.run(main())
    finally:
        store.store.close()


@pytest.mark.both_backends
def test_waiting_calls_cost_one_statement_per_interval_whatever_their_number(db: str) -> None:
    seconds = 1.0
    few = statements_while_waiting(db, 10, seconds)
    many = statements_while_waiting(db, 3000, seconds)
    intervals = seconds / INTERVAL
    for seen in (few, many):
        assert set(seen) == {"watch"}, seen  # nothing else touches the store while waiting
        assert seen["watch"] <= intervals + 1
    # more calls never mean more statements (fewer can happen: on a loaded machine 3,000
    # waiting calls slow the loop, and the watcher runs less often, not more)
    assert many["watch"] <= few["watch"] + 3


def test_a_result_that_commits_late_with_a_lower_id_is_still_seen(
    sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL hands out result ids before commit: a cancel can commit id 12 while an
    ingest holding id 11 is still writing. The watcher reads past 12; its sweep finds 11."""
    monkeypatch.setattr(calls_module, "SWEEP_S", 0.3)

    async def main() -> Any:
        async with AsyncBatchClient(sqlite_db, queue="late", watch_interval=INTERVAL) as client:
            waiting = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], custom_id="mine"
            )
            other = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "y"}], custom_id="theirs"
            )
            await client.flush()
            record(sqlite_db, "theirs", result_id=1000)  # the watcher's cursor moves to 1000
            assert isinstance(await other, object)
            record(sqlite_db, "mine", result_id=500)  # committed later, numbered earlier
            started = time.monotonic()
            answer = await asyncio.wait_for(waiting, 5)
            return answer, time.monotonic() - started

    answer, waited = asyncio.run(main())
    assert answer.choices[0].message.content == "late"
    assert waited < 2


def record(db: str, custom_id: str, *, result_id: int) -> None:
    """A succeeded result with a chosen id, written as the engine writes one."""
    rid = int(sql(db, "SELECT id FROM requests WHERE custom_id = ?", (custom_id,))[0][0])
    now = time.time()
    sql(db, "INSERT INTO attempts (id, request_id, line, state, outcome, created_at, finished_at) "
            "VALUES (?, ?, 1, 'done', 'succeeded', ?, ?)", (result_id, rid, now, now))  # fmt: skip
    body = orjson.dumps(chat_response("late"))
    sql(db, "INSERT INTO results (id, attempt_id, request_id, status_code, body, input_tokens, "
            "output_tokens, created_at) VALUES (?, ?, ?, 200, ?, 1, 1, ?)",
        (result_id, result_id, rid, body, now))  # fmt: skip
    sql(db, "UPDATE requests SET state = 'succeeded' WHERE id = ?", (rid,))
