"""What the engine learned is the store's, not a process's (issue 17, migration 0015): a cron
`run` is a new process each time, and workers share batches by claims. The back-offs and the
counters were already kept on the batch and the group; here, the schedule: when each batch
is next polled and at what interval, and when the sweep next runs. A new engine, or another
worker taking the work over, polls and sweeps when the last one scheduled it, not at once.
The real engine on both stores; the in-process provider on a virtual clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import UNDO_0015, enqueue_hi, memory_engine, request_states, roll_back, sql
from llmbatch.engine import Engine, EngineSettings
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.store import open_store
from llmbatch.store.sqlstore import migrations

MODEL = "gpt-4o-mini"


def _close(engine: Engine) -> None:
    engine.close()
    engine.store.close()


def _backed_off(db: str, memory: MemoryProvider, clock: VirtualClock) -> float:
    """A batch in flight polled for 40 virtual minutes with nothing moving (its interval
    doubled up to max_poll_interval), by an engine that then exits; when it said to poll next."""
    enqueue_hi(db, range(3))
    first = memory_engine(db, memory, clock)
    try:
        for _ in range(40):
            first.tick(clock())
            clock.advance(60.0)
        assert len(memory.batches) == 1 and memory.calls["poll"] >= 5
        assert first.next_poll_at - clock() > 60.0  # backed off past a minute
        return first.next_poll_at
    finally:
        _close(first)


def test_a_cron_run_polls_when_the_last_one_scheduled_and_keeps_the_interval(db: str) -> None:
    clock = VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=36_000.0)
    scheduled = _backed_off(db, memory, clock)
    polls = memory.calls["poll"]
    second = memory_engine(db, memory, clock)  # the next `llmbatch run`
    try:
        second.tick(clock())
        assert memory.calls["poll"] == polls  # not before its time (the old code: at once)
        clock.now = scheduled
        second.tick(clock())
        assert memory.calls["poll"] == polls + 1
        # the interval it had learned stands (the old code started again from poll_interval)
        # (counted from when the poll answered: the tick's time and the seconds it worked)
        assert second.next_poll_at == pytest.approx(
            scheduled + second.settings.max_poll_interval, abs=1.0
        )
    finally:
        _close(second)


def test_two_workers_share_the_schedule_of_the_batches_and_of_the_sweep(db: str) -> None:
    clock = VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=36_000.0)
    other = memory_engine(db, memory, clock)  # a second worker, running all along
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


def test_a_store_made_before_0015_with_batches_in_flight_upgrades_and_drains(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Migration 0015 on a store the previous code left with batches in flight (0015 taken
    back out, the schema checked equal to the one every migration before it makes): its
    batches are polled at once, as that code's next process did, then on their schedule, and
    a worker drains it."""
    clock = VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=3_600.0, max_requests=2)
    enqueue_hi(db, range(5))
    first = memory_engine(db, memory, clock)
    first.tick(clock())
    _close(first)
    assert request_states(db) == {"submitted": 5} and len(memory.batches) == 3  # in flight
    roll_back(db, UNDO_0015, 15, request, tmp_path)  # the previous code's store
    upgraded = memory_engine(db, memory, clock)
    try:
        latest = migrations(upgraded.store.dialect)[-1][0]  # type: ignore[attr-defined]
        assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
        assert sql(db, "SELECT poll_at, poll_every FROM batches") == [(0.0, 0.0)] * 3
        polls = memory.calls["poll"]
        upgraded.tick(clock())
        assert memory.calls["poll"] == polls + 1  # at once, as before
        assert min(b.poll_at for b in upgraded.store.open_batches()) > clock()
        for _ in range(100):
            clock.advance(300.0)
            upgraded.tick(clock())
            if not (upgraded.store.has_unfinished() or upgraded.store.open_batches()):
                break
        assert request_states(db) == {"succeeded": 5}
        assert upgraded.store.next_run("sweep") > 0.0
    finally:
        _close(upgraded)


def test_a_young_batch_is_polled_at_the_interval_asked_while_nothing_moves(db: str) -> None:
    """A batch that shows nothing new in its first minute is polled every poll_interval, as a
    loop polling at a fixed interval polls it (issue 23: the old code doubled the interval at
    each poll, 0.5, 1, 2, 4 s, and found a slow small batch seconds late); older, it backs off."""
    clock = VirtualClock(time.time())
    memory = MemoryProvider(clock=clock, latency=36_000.0)
    enqueue_hi(db, range(3))
    settings = EngineSettings(settle_seconds=0.0, poll_interval=0.5, first_poll=0.5)
    engine = Engine(open_store(db), settings, providers={"openai": memory}, clock=clock)
    try:
        engine.tick(clock())  # packs, submits, polls
        gaps, late = [], []
        for _ in range(10):
            clock.now = engine.next_poll_at
            started = time.perf_counter()
            engine.tick(clock())
            late.append(time.perf_counter() - started)  # a schedule counts from the tick's end
            gaps.append(engine.next_poll_at - clock())
        # 0.5 s after each tick's end: on a loaded machine a tick's own seconds are not 0.05
        assert all(0.5 <= gap <= 0.5 + spent for gap, spent in zip(gaps, late, strict=True))
        clock.advance(120.0)  # a batch in flight two minutes with nothing moving
        engine.tick(clock())
        for _ in range(3):
            clock.now = engine.next_poll_at
            engine.tick(clock())
        assert engine.next_poll_at - clock() > 1.5  # backed off
    finally:
        _close(engine)
