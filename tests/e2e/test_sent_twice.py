"""Nothing sent twice under slow calls and lost leases (issue 14, "Sent twice").

Real stores, the emulator over real HTTP, the official SDK. Time is virtual where it can be:
the engine takes a fake clock and the tick's `now`, the emulator runs at time scale 0 and
both are moved together, so "an upload that took 5 s" costs no real second. Where the
adversary is a call that is slow in real time (a create held by the service while the
worker's lease runs out), the test is marked slow.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from helpers import fast_settings, request_states, results_per_request, sql
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine, EngineSettings
from llmbatch.store import open_store
from llmbatch.store.batching import LeaseLost

# on SQLite and PostgreSQL (leases and fenced writes: each backend's locks)
pytestmark = pytest.mark.both_backends

CHAT = "/v1/chat/completions"


def enqueue(db: str, n: int) -> list[str]:
    items = [
        {"custom_id": f"r{i}", "body": {"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": f"question {i}"}]}}
        for i in range(n)
    ]  # fmt: skip
    with Queue(db, "q") as q:
        assert q.add_many(items).added == n
    return [str(it["custom_id"]) for it in items]


def creates(emu: RunningEmulator) -> int:
    """Every POST /v1/batches the emulator saw, answered or not."""
    return sum(
        1 for c in emu.control.calls() if (c["method"], c["path"]) == ("POST", "/v1/batches")
    )


def our_batches(emu: RunningEmulator, db: str) -> list[Any]:
    """The provider batches that carry this store's id (what was created, and paid)."""
    store_id = str(sql(db, "SELECT value FROM meta WHERE key = 'store_id'")[0][0])
    client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    return [
        b
        for b in client.batches.list(limit=100)
        if (b.metadata or {}).get("llmbatch_store") == store_id
    ]


class Virtual:
    """One virtual time for the engine (its clock and the tick's `now`) and the emulator."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.emu, self.t = emu, time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        self.emu.control.advance(seconds)
        return self.t


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=14) as e:
        yield e


@pytest.fixture
def frozen() -> Iterator[RunningEmulator]:
    """An emulator whose clock moves only when the test moves it."""
    with running(seed=14, time_scale=0.0) as e:
        yield e


def drain_virtually(engine: Engine, clock: Virtual, step: float = 1.0, ticks: int = 200) -> None:
    for _ in range(ticks):
        if not engine.store.unfinished_count():
            return
        engine.tick(clock.advance(step))
    raise AssertionError(f"not drained: {request_states(engine.store.location)}")


@pytest.mark.parametrize("upload_seconds", [0.0, 5.0], ids=["quick upload", "slow upload"])
def test_the_settle_window_starts_when_the_create_starts(
    db: str, frozen: RunningEmulator, upload_seconds: float
) -> None:
    """A tick spends `upload_seconds` uploading before its create; the create is made at the
    provider but its answer is lost (a 500 after acting); the list lags 3 s, less than the
    4 s settle window. Counted from the tick, the window was over before the list showed
    the batch: a second create. Counted from the create's own start, it is found."""
    custom_ids = enqueue(db, 6)
    emu = frozen
    emu.control.add_fault("batches.create", "500", mode="after", count=1)
    emu.control.add_fault("batches.list", "list_lag", seconds=3.0)
    clock = Virtual(emu)
    settings = fast_settings(emu, settle_seconds=4.0, submit_timeout=1.0, delete_files=False)
    engine = Engine(open_store(db), settings, clock=clock)
    try:
        tick = clock()
        clock.advance(upload_seconds)  # the upload took this long: the create starts now
        engine.tick(tick)  # the tick began before the upload
        assert creates(emu) == 1
        for _ in range(12):  # half-second ticks while the list still lags
            engine.tick(clock.advance(0.5))
        assert creates(emu) == 1, "created again while the list still lagged"
        drain_virtually(engine, clock)
    finally:
        engine.close()
        engine.store.close()
    assert creates(emu) == 1
    assert len(our_batches(emu, db)) == 1
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)


@pytest.mark.slow
def test_a_standby_cannot_create_while_the_holder_waits_on_a_slow_create(
    db: str, emu: RunningEmulator
) -> None:
    """Worker A's create is held 3.5 s by the service before it acts; A's lease is 2 s. A
    standby B ticks all along. Renewed only at the tick's start, A's lease ran out mid-call,
    B took over, waited out the 2.5 s settle window from A's tick and created too: two
    batches. Now A renews just before the create, whose client timeout (1.8 s, derived from
    the lease) fits in the lease, and B waits that timeout plus the settle window from the
    create's own start (4.3 s): the create has acted by then, and B finds it."""
    custom_ids = enqueue(db, 6)
    emu.control.add_fault("batches.create", "latency", seconds=3.5, count=1)
    settings = fast_settings(
        emu, lease_ttl=2.0, settle_seconds=2.5, submit_timeout=None, delete_files=False
    )
    holder = Engine(open_store(db), settings)
    standby = Engine(open_store(db), settings)
    outcome: list[BaseException] = []

    def a() -> None:
        try:
            holder.tick(time.time())
        except LeaseLost:
            pass  # its lease ran out while it waited: it stands down, as a worker does
        except BaseException as exc:
            outcome.append(exc)

    try:
        worker = threading.Thread(target=a)
        worker.start()
        deadline = time.monotonic() + 30
        while not sql(db, "SELECT 1 FROM batches WHERE create_started_at IS NOT NULL"):
            assert time.monotonic() < deadline and worker.is_alive(), "A never started its create"
            time.sleep(0.02)
        while worker.is_alive() or standby.store.unfinished_count():
            assert time.monotonic() < deadline, request_states(db)
            standby.tick(time.time())
            time.sleep(0.1)
        worker.join()
    finally:
        for engine in (holder, standby):
            engine.close()
            engine.store.close()
    assert outcome == []
    assert len(our_batches(emu, db)) == 1, "two batches for one intent"
    assert creates(emu) == 1
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)


def test_a_create_timeout_must_fit_in_the_lease() -> None:
    from llmbatch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"submit_timeout \(600 s\) plus lease_margin"):
        EngineSettings(lease_ttl=600.0, submit_timeout=600.0)
    derived = EngineSettings(lease_ttl=30.0)
    assert derived.call_timeout + derived.renew_margin <= 30.0
    assert EngineSettings().call_timeout == 120.0  # not the SDK's 600 s: the lease is 600 s


def test_a_completed_batch_without_its_output_file_is_retrieved_again(
    db: str, emu: RunningEmulator
) -> None:
    """The provider says `output_file_id: null` on a completed batch for a while (reported for
    OpenAI and Azure). Each `llmbatch run` (a new process, as from cron) retrieves the batch
    again before it downloads again; the results come from that one batch, none re-sent."""
    custom_ids = enqueue(db, 6)
    emu.control.next_batches(count=1, hold="finalizing")
    settings = fast_settings(emu, delete_files=False)

    def run() -> None:  # one `llmbatch run`
        engine = Engine(open_store(db), settings)
        try:
            engine.tick(time.time())
        finally:
            engine.close()
            engine.store.close()
        time.sleep(0.05)

    while not sql(db, "SELECT 1 FROM batches WHERE provider_status = 'finalizing'"):
        run()
    (pid,) = sql(db, "SELECT provider_batch_id FROM batches")[0]
    # from now on, the next three looks at the batch (list or retrieve) miss its files
    emu.control.add_fault("batches.*", "no_output_file", count=3)
    emu.control.release(str(pid))
    for _ in range(60):
        if not sql(db, "SELECT 1 FROM requests WHERE state <> 'succeeded'"):
            break
        run()
    assert request_states(db) == {"succeeded": 6}
    assert creates(emu) == 1 and len(our_batches(emu, db)) == 1, "results were paid for twice"
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)
    (tries,) = sql(db, "SELECT download_tries FROM batches")[0]
    assert 1 <= int(tries) < 4


@pytest.mark.parametrize("acted", [False, True], ids=["create never acted", "create acted"])
def test_cancelling_a_half_sent_intent_never_creates_it(
    db: str, frozen: RunningEmulator, acted: bool
) -> None:
    """An intent whose create's outcome is unknown is cancelled. Reconcile only: a batch that
    was made is found and cancelled at the provider; none is ever created for the cancel.
    Once nothing is found after the create could have acted and the list settled, the intent
    is closed as cancelled."""
    enqueue(db, 5)
    emu = frozen
    emu.control.add_fault("batches.create", "500", mode="after" if acted else "before", count=1)
    emu.control.next_batches(count=1, hold="validating")  # found while it can be cancelled
    clock = Virtual(emu)
    settings = fast_settings(emu, settle_seconds=4.0, submit_timeout=1.0, delete_files=False)
    engine = Engine(open_store(db), settings, clock=clock)
    try:
        engine.tick(clock())
        assert creates(emu) == 1
        assert engine.store.request_cancel(
            engine.store.scope_request_ids("q", [], None), clock()
        ).batches
        for _ in range(20):
            engine.tick(clock.advance(0.5))
        remote = our_batches(emu, db)
    finally:
        engine.close()
        engine.store.close()
    assert creates(emu) == 1, "the cancel created the batch"
    assert len(remote) == (1 if acted else 0)
    if acted:
        assert remote[0].status in ("cancelling", "cancelled")
    assert request_states(db) == {"cancelled": 5}
    assert {s for (s,) in sql(db, "SELECT state FROM batches")} == {"ingested"}


def test_a_worker_frozen_between_its_stamp_and_its_create_does_not_send_it(
    db: str, frozen: RunningEmulator
) -> None:
    """Worker A renews its lease and stamps `create_started`, then freezes (SIGSTOP, a GC
    pause) for longer than its lease. Standby B takes over, waits out the create's timeout
    and the settle window from the stamp, finds nothing and creates. A wakes: it sent its
    create, and a second batch was paid (its next write was refused, too late). Now A checks
    by its clock that its claim still covers the call before sending, and stands down on that
    batch (issue 27: the claim is one batch's, so the tick goes on with the rest of its work;
    the LeaseLost is the batch's note, not the tick's exception)."""
    custom_ids = enqueue(db, 5)
    clock = Virtual(frozen)
    # the fence reads the host's clock on SQLite: a lease long enough for A's first tick on a
    # loaded machine, and a freeze longer than it in virtual time
    settings = fast_settings(frozen, lease_ttl=10.0, submit_timeout=1.0, delete_files=False)
    a = Engine(open_store(db), settings)
    b = Engine(open_store(db), settings)
    a.clock = b.clock = clock
    stamp = a.store.mark

    def freeze_after_the_stamp(kind: str, *args: Any) -> None:
        stamp(kind, *args)
        if kind == "create":  # A is frozen here; meanwhile B ticks, in virtual time
            for _ in range(15):
                notes.extend(b.tick(clock.advance(1.0)).notes)

    notes: list[str] = []
    a.store.mark = freeze_after_the_stamp  # type: ignore[method-assign,assignment]
    try:
        clock.t = time.time()
        stood_down = a.tick(clock()).notes
        assert any("it does not send" in n for n in stood_down), stood_down
        assert creates(frozen) == 1, notes
        drain_virtually(b, clock)
    finally:
        for engine in (a, b):
            engine.close()
            engine.store.close()
    assert len(our_batches(frozen, db)) == 1, "two batches for one intent"
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)


CREATE_PATHS = {"openai": "/v1/batches", "anthropic": "/v1/messages/batches"}


def enqueue_for(provider: str, db: str, n: int) -> list[str]:
    if provider == "openai":
        return enqueue(db, n)
    items = [
        {"custom_id": f"m{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 32,
            "messages": [{"role": "user", "content": f"question {i}"}]}}
        for i in range(n)
    ]  # fmt: skip
    with Queue(db, "q", provider=provider) as q:
        assert q.add_many(items).added == n
    return [str(it["custom_id"]) for it in items]


def batches_made(emu: RunningEmulator, provider: str) -> int:
    """Creates the emulator answered with a batch (each one paid)."""
    return sum(
        1
        for c in emu.control.calls()
        if (c["method"], c["path"]) == ("POST", CREATE_PATHS[provider]) and c["status"] == 200
    )


@pytest.mark.parametrize("provider", sorted(CREATE_PATHS))
def test_a_worker_frozen_after_its_lease_check_does_not_send_its_create(
    db: str, frozen: RunningEmulator, provider: str
) -> None:
    """Worker A stamps `create_started`, checks that its lease covers the create, then
    freezes before the request leaves (the crash matrix's 1 double create in floor (a): a
    pause 0.00 s after the stamp). Standby B takes over, waits out the create's timeout and
    the settle window, finds nothing and creates. A wakes: it sent its create, and a second
    batch was paid. Now the request hook asks A's journal first, which refuses a create
    leaving more than the send window after its stamp; B's batch is the only one."""
    custom_ids = enqueue_for(provider, db, 5)
    # the SDK imported now: its import takes seconds on a loaded machine, and the fence
    # judges A's lease by the host clock while the test's clock stands still
    importlib.import_module(f"llmbatch.providers.{provider}")
    clock = Virtual(frozen)
    settings = fast_settings(frozen, lease_ttl=10.0, submit_timeout=1.0, delete_files=False)
    a = Engine(open_store(db), settings)
    b = Engine(open_store(db), settings)
    a.clock = b.clock = clock
    checked = a.lease.covers_a_call

    def freeze_after_the_lease_check() -> None:
        checked()
        for _ in range(15):  # A is frozen here; meanwhile B ticks, in virtual time
            notes.extend(b.tick(clock.advance(1.0)).notes)

    notes: list[str] = []
    a.lease.covers_a_call = freeze_after_the_lease_check  # type: ignore[method-assign]
    try:
        clock.t = time.time()
        with contextlib.suppress(LeaseLost):  # A stands down at its next write, or before
            a.tick(clock())
        assert batches_made(frozen, provider) == 1, notes
        drain_virtually(b, clock)
    finally:
        for engine in (a, b):
            engine.close()
            engine.store.close()
    assert batches_made(frozen, provider) == 1, "two batches for one intent"
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)
