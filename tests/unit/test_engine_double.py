"""Engine logic at unit speed: the real engine and a real SQLite store, the provider an
in-process double on a virtual clock (llmbatch.providers.testing). No HTTP, no sleeping: each
test moves the clock and ticks. The emulator-backed suites (tests/e2e) say what real services
do; these say what the engine does with it, in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from helpers import request_states, sql
from llmbatch import Queue
from llmbatch.engine import Engine, EngineSettings
from llmbatch.errors import TransientError
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store


def chat(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"r{i}",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"n {i}"}]},
    }


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "llmbatch.db")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def engine_with(
    db: str, memory: MemoryProvider, clock: VirtualClock, **settings: Any
) -> Iterator[Engine]:
    values: dict[str, Any] = {
        "settle_seconds": 30.0,
        "backoff_seconds": 10.0,
        "retry": RetryPolicy(base_seconds=5.0, max_seconds=10.0),
    }
    values.update(settings)
    engine = Engine(
        open_store(db), EngineSettings(**values), providers={memory.name: memory}, clock=clock
    )
    try:
        yield engine
    finally:
        engine.store.close()


def run(engine: Engine, clock: VirtualClock, *, step: float = 5.0, ticks: int = 200) -> int:
    """Tick, moving the clock `step` virtual seconds each time, until nothing is unfinished;
    the number of ticks it took."""
    for n in range(1, ticks + 1):
        engine.tick(clock())
        if engine.store.unfinished_count() == 0:
            return n
        clock.advance(step)
    raise AssertionError(f"not done after {ticks} ticks")


def enqueue(db: str, n: int) -> None:
    with Queue(db, "q") as q:
        assert q.add_many([chat(i) for i in range(n)]).added == n


def test_a_queue_drains_through_the_double_on_virtual_time(db: str, clock: VirtualClock) -> None:
    enqueue(db, 10)
    memory = MemoryProvider(clock=clock, latency=3600.0)  # an hour at the provider
    for engine in engine_with(db, memory, clock):
        run(engine, clock, step=600.0)
    assert request_states(db) == {"succeeded": 10}
    assert len(memory.batches) == 1 and memory.calls["create"] == 1
    with Queue(db, "q") as q:
        texts = {r.custom_id: r.body["choices"][0]["message"]["content"] for r in q.results()}
    assert texts == {f"r{i}": f"echo: n {i}" for i in range(10)}


def test_batches_respect_max_batch_requests(db: str, clock: VirtualClock) -> None:
    enqueue(db, 10)
    memory = MemoryProvider(clock=clock)
    for engine in engine_with(db, memory, clock, max_batch_requests=3):
        run(engine, clock)
    assert sorted(len(b.lines) for b in memory.batches.values()) == [1, 3, 3, 3]
    assert request_states(db) == {"succeeded": 10}


def test_a_create_whose_answer_is_lost_is_adopted_not_sent_twice(
    db: str, clock: VirtualClock
) -> None:
    enqueue(db, 4)
    memory = MemoryProvider(clock=clock, latency=60.0)
    memory.fail("create", TransientError("connection reset after the create"), after=True)
    for engine in engine_with(db, memory, clock):
        run(engine, clock, step=30.0)
    assert len(memory.batches) == 1, "the lost create was created again"
    assert memory.calls["create"] == 1
    assert request_states(db) == {"succeeded": 4}
    assert sql(db, "SELECT COUNT(*) FROM batches") == [(1,)]


def test_a_create_refused_before_the_work_is_sent_once_later(db: str, clock: VirtualClock) -> None:
    enqueue(db, 4)
    memory = MemoryProvider(clock=clock)
    memory.fail("create", TransientError("503 before anything was created"), times=2)
    for engine in engine_with(db, memory, clock):
        run(engine, clock, step=30.0)
    assert len(memory.batches) == 1
    assert memory.calls["create"] == 3
    assert request_states(db) == {"succeeded": 4}


def test_an_upload_refused_is_retried_and_one_file_kept(db: str, clock: VirtualClock) -> None:
    enqueue(db, 2)
    memory = MemoryProvider(clock=clock)
    memory.fail("upload", TransientError("502 on upload"))
    for engine in engine_with(db, memory, clock):
        run(engine, clock, step=30.0)
    assert request_states(db) == {"succeeded": 2}
    assert memory.calls["upload"] == 2 and len(memory.batches) == 1


def test_a_stale_poll_that_would_take_a_batch_back_is_noted_not_stored(
    db: str, clock: VirtualClock
) -> None:
    """A poll answered from a lagging copy (in_progress after the batch showed finalizing)
    is refused by the store's transition table: noted as an anomaly, the batch kept as it
    was, the tick carrying on; the queue drains as before."""
    import dataclasses

    class Lagging(MemoryProvider):
        said: ClassVar[list[str]] = []

        def poll(self, batch_ids: Any, retrieve_budget: int) -> list[Any]:
            seen = super().poll(batch_ids, retrieve_budget)
            said = "finalizing" if not self.said else "in_progress"
            if len(self.said) < 2 and all(s.state == "in_progress" for s in seen):
                self.said.append(said)
                return [dataclasses.replace(s, state=said, provider_status=said) for s in seen]
            return seen

    enqueue(db, 3)
    memory = Lagging(clock=clock, latency=3600.0)
    for engine in engine_with(db, memory, clock):
        notes: list[str] = []
        for _ in range(3):  # submit, poll (finalizing), poll (a stale in_progress)
            notes += engine.tick(clock()).notes
            clock.advance(60.0)
        assert sql(db, "SELECT state FROM batches") == [("finalizing",)]
        assert any("illegal batch transition 'finalizing' -> 'in_progress'" in n for n in notes)
        anomalies = sql(db, "SELECT detail FROM events WHERE kind = 'anomaly'")
        assert anomalies and all("-> 'in_progress'" in d for (d,) in anomalies), anomalies
        run(engine, clock, step=600.0)
    assert request_states(db) == {"succeeded": 3}
