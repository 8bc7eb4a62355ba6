"""What the engine learned is the store's, not a process's (issue 17, migration 0015): a cron
`run` is a new process each time, and workers share batches by claims. The back-offs and the
counters were already kept on the batch and the group; here, the schedule: when each batch
is next polled and at what interval, and when the sweep next runs. A new engine, or another
worker taking the work over, polls and sweeps when the last one scheduled it, not at once.
The real engine and a SQLite store; the in-process provider on a virtual clock."""

from __future__ import annotations

import time
from pathlib import Path

from llmbatch import Queue
from llmbatch.engine import Engine, EngineSettings
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.store import open_store

MODEL = "gpt-4o-mini"


def _enqueue(db: str, n: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    items = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i in range(n)
    ]
    with Queue(db, "q", provider="openai") as q:
        assert q.add_many(items).added == n


def _engine(db: str, memory: MemoryProvider, clock: VirtualClock) -> Engine:
    settings = EngineSettings(settle_seconds=0.0, backoff_seconds=10.0)
    return Engine(open_store(db), settings, providers={"openai": memory}, clock=clock)


def _close(engine: Engine) -> None:
    engine.close()
    engine.store.close()


def _backed_off(db: str, memory: MemoryProvider, clock: VirtualClock) -> float:
    """A batch in flight polled for 40 virtual minutes with nothing moving (its interval
    doubled up to max_poll_interval), by an engine that then exits; when it said to poll next."""
    _enqueue(db, 3)
    first = _engine(db, memory, clock)
    try:
        for _ in range(40):
            first.tick(clock())
            clock.advance(60.0)
        assert len(memory.batches) == 1 and memory.calls["poll"] >= 5
        assert first.next_poll_at - clock() > 60.0  # backed off past a minute
        return first.next_poll_at
    finally:
        _close(first)


def test_a_cron_run_polls_when_the_last_one_scheduled_and_keeps_the_interval(
    tmp_path: Path,
) -> None:
    db, clock = str(tmp_path / "q.db"), VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=36_000.0)
    scheduled = _backed_off(db, memory, clock)
    polls = memory.calls["poll"]
    second = _engine(db, memory, clock)  # the next `llmbatch run`
    try:
        second.tick(clock())
        assert memory.calls["poll"] == polls  # not before its time (the old code: at once)
        clock.now = scheduled
        second.tick(clock())
        assert memory.calls["poll"] == polls + 1
        # the interval it had learned stands (the old code started again from poll_interval)
        assert second.next_poll_at == scheduled + second.settings.max_poll_interval
    finally:
        _close(second)


def test_two_workers_share_the_schedule_of_the_batches_and_of_the_sweep(tmp_path: Path) -> None:
    db, clock = str(tmp_path / "q.db"), VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=36_000.0)
    other = _engine(db, memory, clock)  # a second worker, running all along
    try:
        other.tick(clock())
        scheduled = _backed_off(db, memory, clock)  # the first worker stops
        polls, lists = memory.calls["poll"], memory.calls["list"]
        sweep_at = other.store.next_run("sweep")
        assert clock() < sweep_at < scheduled + other.settings.sweep_interval
        other.tick(clock())  # takes the batch and the engine lease over
        assert other.lease.engine
        assert (memory.calls["poll"], memory.calls["list"]) == (polls, lists)
        clock.now = scheduled
        other.tick(clock())
        assert memory.calls["poll"] == polls + 1  # its batch, when it was due
        clock.now = max(scheduled, sweep_at)
        other.tick(clock())
        assert memory.calls["list"] == lists + 2  # the sweep's two lists, when it was due
    finally:
        _close(other)
