"""Proof of ownership, the contract every registered provider passes (issue 15): real engines
over real SQLite stores, the emulator over HTTP through the official SDKs, faults only through
its control API. A provider registered later gets all of it by naming its door in `DOORS`.

The floors: two stores on one key, and a copied store — every request of each ends with
exactly one result, one provider batch per intent, nothing of the other store adopted,
ingested or deleted. Each scenario that failed on the code before issue 15 says so.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from helpers import (
    DEAD_HOLDER,
    E2E_KEY_ENV,
    LLMBATCH,
    RefusingService,
    cli,
    fast_settings,
    provider_params,
    results_per_request,
    sql,
)
from helpers import request_states as states
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine, EngineSettings
from llmbatch.ownership import custom_id
from llmbatch.providers import Intent, available, make_provider
from llmbatch.providers.compatible import SHIPPED
from llmbatch.store import open_store


@dataclass(frozen=True)
class Door:
    """How a provider's batches look at the emulator: its create call, its items."""

    create_op: str  # the fault rule's op for a create
    create_path: str  # the create call in the call log
    model: str

    def items(self, name: str, n: int, prefix: str) -> list[dict[str, Any]]:
        messages = [{"role": "user", "content": f"{prefix}: question {i}"} for i in range(n)]
        if name == "gemini":
            return [
                {
                    "key": f"{prefix}{i}",
                    "request": {
                        "model": self.model,
                        "contents": [{"role": "user", "parts": [{"text": m["content"]}]}],
                    },
                }
                for i, m in enumerate(messages)
            ]
        if name == "anthropic":
            return [
                {
                    "custom_id": f"{prefix}{i}",
                    "params": {"model": self.model, "max_tokens": 16, "messages": [m]},
                }
                for i, m in enumerate(messages)
            ]
        return [
            {"custom_id": f"{prefix}{i}", "body": {"model": self.model, "messages": [m]}}
            for i, m in enumerate(messages)
        ]


DOORS = {
    "openai": Door("batches.create", "/v1/batches", "gpt-4o-mini"),
    "azure": Door("batches.create", "/openai/batches", "gpt-4o-mini"),
    "anthropic": Door("messages.batches.create", "/v1/messages/batches", "claude-3-5-haiku-latest"),
    "gemini": Door(
        "batches.create", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", "gemini-2.5-flash"
    ),
    # each OpenAI-compatible service at its own door, with its differences switched on
    **{
        name: Door("batches.create", f"/compatible/{name}/v1/batches", "gpt-4o-mini")
        for name in SHIPPED
    },
}


@pytest.fixture(params=provider_params(sorted(available())))
def name(request: pytest.FixtureRequest) -> str:
    if request.param not in DOORS:
        pytest.fail(f"provider {request.param!r} has no door in the ownership contract suite")
    return str(request.param)


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(time_scale=0.0, seed=15) as e:  # batches move only when a test advances
        yield e


def enqueue(db: str, name: str, n: int, prefix: str) -> list[str]:
    """`n` requests, or the service's smallest batch if that is more (Cerebras: 10)."""
    n = max(n, SHIPPED[name].min_requests if name in SHIPPED else 1)
    items = DOORS[name].items(name, n, prefix)
    with Queue(db, "q", provider=name) as q:
        assert q.add_many(items).added == n
    return [str(it.get("custom_id", it.get("key"))) for it in items]


def settings(emu: RunningEmulator, **overrides: Any) -> EngineSettings:
    return fast_settings(emu, sweep_interval=0.2, **overrides)


def engine(db: str, emu: RunningEmulator, **overrides: Any) -> Engine:
    return Engine(open_store(db), settings(emu, **overrides))


def close(*engines: Engine) -> None:
    for e in engines:
        e.close()
        e.store.close()


def tick_for(engines: Sequence[Engine], seconds: float) -> None:
    """Tick every engine for `seconds` of real time, the emulator's clock standing still."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for e in engines:
            e.tick(time.time())
        time.sleep(0.05)


def drain(engines: Sequence[Engine], emu: RunningEmulator, max_seconds: float = 60.0) -> None:
    """Tick until every engine's store has nothing unfinished and no open batch, advancing
    the emulator's clock so batches run."""
    deadline = time.monotonic() + max_seconds
    while any(e.store.has_unfinished() or e.store.open_batches() for e in engines):
        assert time.monotonic() < deadline, [states(e.store.location) for e in engines]
        emu.control.advance(600)
        for e in engines:
            e.tick(time.time())
        time.sleep(0.05)


def creates(emu: RunningEmulator, name: str, refused: int = 0) -> int:
    """Provider batches made: the create calls in the emulator's call log, less the
    `refused` ones a test had fail before they acted."""
    path = DOORS[name].create_path
    calls = emu.control.calls()
    return sum(1 for c in calls if c["method"] == "POST" and c["path"] == path) - refused


def provider_batches(db: str) -> set[str]:
    return {str(p) for (p,) in sql(db, "SELECT provider_batch_id FROM batches") if p}


def intents(db: str) -> int:
    return int(sql(db, "SELECT COUNT(*) FROM batches WHERE intent_id IS NULL")[0][0])


def assert_once(db: str, custom_ids: Sequence[str]) -> None:
    """Every request one result, succeeded; no line of any batch was an anomaly."""
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)
    assert states(db) == {"succeeded": len(custom_ids)}
    assert sql(db, "SELECT detail FROM events WHERE kind = 'anomaly'") == []


# -- two stores on one key ------------------------------------------------------------------


def test_two_stores_on_one_key_with_equal_sizes_take_only_their_own(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """Store A's batch runs; store B's create of the same size is refused before it acts.
    B's reconcile must not take A's batch: on the code before issue 15, B adopted A's running
    Anthropic batch by its size, ingested it as anomalies and deleted it at the provider."""
    a_db, b_db = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    a_ids, b_ids = enqueue(a_db, name, 4, "a"), enqueue(b_db, name, 4, "b")
    a, b = engine(a_db, emu), engine(b_db, emu)
    try:
        a.tick(time.time())
        (theirs,) = provider_batches(a_db)
        emu.control.add_fault(DOORS[name].create_op, "529", mode="before", count=1)
        b.tick(time.time())
        assert provider_batches(b_db) == set()  # refused
        tick_for([b], 3.0)  # past submit_timeout + settle: B reconciles while A's batch runs
        assert theirs not in provider_batches(b_db)
        if name == "anthropic":  # it cannot prove A's running batch foreign: it waits
            assert [w.batch_id for w in b.store.proof_waits()] == [1]
            assert "waiting for proof: batch 1" in cli("--db", b_db, "status").output
        drain([a, b], emu)
    finally:
        close(a, b)
    assert theirs in provider_batches(a_db)
    assert not provider_batches(a_db) & provider_batches(b_db)
    assert_once(a_db, a_ids)
    assert_once(b_db, b_ids)
    assert creates(emu, name, refused=1) == intents(a_db) + intents(b_db) == 2  # one per intent
    assert sql(b_db, "SELECT proof_wait_until FROM batches") == [(None,)]


# -- a copied store ---------------------------------------------------------------------------


def copy_store(source: str, target: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(source + suffix).exists():
            shutil.copy(source + suffix, target + suffix)


def test_a_copied_store_takes_nothing_of_the_original_until_told(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """A's create acted but its answer was lost; the store is then copied (a backup restored
    beside it, dev cloned from prod). Both carry the same store id, intent and nonce: on the
    code before issue 15 both found the batch and recorded its answers. The copy notices it
    is not where it was made, serves new work, and touches nothing made before the copy
    until told `store new-identity`; then its own requests are sent again under new
    intents."""
    a_db, b_db = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    a_ids = enqueue(a_db, name, 4, "a")
    a = engine(a_db, emu)
    try:
        emu.control.add_fault(DOORS[name].create_op, "500", mode="after", count=1)
        a.tick(time.time())
        assert provider_batches(a_db) == set() and creates(emu, name) == 1
    finally:
        close(a)
    copy_store(a_db, b_db)
    new = enqueue(b_db, name, 3, "b")
    b_ids = a_ids + new  # new work in the copy
    status = cli("--db", b_db, "status")
    assert "copied or moved" in status.output and "new-identity" in status.output
    a, b = engine(a_db, emu), engine(b_db, emu)
    try:
        drain([a], emu)
        (original,) = provider_batches(a_db)
        tick_for([b], 2.0)
        emu.control.advance(600)
        tick_for([b], 2.0)
        assert original not in provider_batches(b_db)  # nothing of A's taken
        # new work served, old frozen
        assert states(b_db) == {"succeeded": len(new), "packed": len(a_ids)}
        result = cli("--db", b_db, "store", "new-identity")
        assert result.exit_code == 3 and "stop it, then run" in result.output  # a worker on it
        close(b)
        result = cli("--db", b_db, "store", "new-identity")
        assert result.exit_code == 0, result.output
        assert f"{len(a_ids)} of their requests are queued again" in result.output
        b = engine(b_db, emu)
        drain([a, b], emu)
    finally:
        close(a, b)
    assert_once(a_db, a_ids)
    assert_once(b_db, b_ids)
    assert not provider_batches(a_db) & provider_batches(b_db)
    assert creates(emu, name) == 3  # A's one, the copy's new work, the copy's resent work
    assert "copied or moved" not in cli("--db", b_db, "status").output


def test_a_moved_store_carries_on_once_told_keep_identity(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """A store moved (or restored) with a create whose answer was lost: frozen until
    `store keep-identity`, then it finds its own batch — one create, nothing sent again."""
    a_db, moved = str(tmp_path / "a.db"), str(tmp_path / "moved.db")
    ids = enqueue(a_db, name, 4, "a")
    a = engine(a_db, emu)
    try:
        emu.control.add_fault(DOORS[name].create_op, "500", mode="after", count=1)
        a.tick(time.time())
    finally:
        close(a)
    copy_store(a_db, moved)
    for suffix in ("", "-wal", "-shm"):
        Path(a_db + suffix).unlink(missing_ok=True)
    m = engine(moved, emu)
    try:
        tick_for([m], 2.0)
        assert provider_batches(moved) == set()  # frozen: not even reconciled
        result = cli("--db", moved, "store", "keep-identity")
        assert result.exit_code == 0, result.output
        drain([m], emu)
    finally:
        close(m)
    assert_once(moved, ids)
    assert creates(emu, name) == 1


def test_naming_a_move_where_there_is_none_is_a_usage_error(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    open_store(db).close()
    for command in ("new-identity", "keep-identity"):
        result = cli("--db", db, "store", command)
        assert result.exit_code == 2 and "no copy or move to name" in result.output


# -- submit once --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_create_that_fails_before_or_after_doing_the_work_makes_one_batch(
    name: str, mode: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """`before`: nothing was made, the intent is created again once the wait is over.
    `after`: the batch exists, the answer was a 500; reconcile proves it ours and adopts it."""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 5, "m")
    emu.control.add_fault(DOORS[name].create_op, "500", mode=mode, count=1)
    e = engine(db, emu)
    try:
        drain([e], emu)
    finally:
        close(e)
    assert_once(db, ids)
    assert creates(emu, name, refused=1 if mode == "before" else 0) == intents(db) == 1
    if mode == "after":
        assert sql(db, "SELECT COUNT(*) FROM events WHERE kind = 'adopted'") == [(1,)]


LIST_OPS = {"anthropic": "messages.batches.list"}


def test_a_lost_create_under_list_lag_is_found_not_made_again(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """The create's answer is lost and the list hides new batches for a while (virtual
    time): the engine waits out its settle window, then finds the batch by its proof."""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 5, "m")
    emu.control.add_fault(LIST_OPS.get(name, "batches.list"), "list_lag", seconds=300)
    emu.control.add_fault(DOORS[name].create_op, "500", mode="after", count=1)
    e = engine(db, emu)
    try:
        tick_for([e], 0.5)  # the list shows nothing yet, and the wait is not over
        assert provider_batches(db) == set() and creates(emu, name) == 1
        drain([e], emu)
    finally:
        close(e)
    assert_once(db, ids)
    assert creates(emu, name) == intents(db) == 1


def test_a_lost_create_under_list_lag_longer_than_the_settle_window_is_adopted_later(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """settle < lag: the create's answer is lost and the list hides the batch longer than the
    engine waits, so it creates again — the protocol's residual risk, reproduced here. Once
    the list shows the first batch the sweep proves it ours and adopts it as the intent's
    duplicate: both batches recorded, its results skipped, every request one result. (Was
    Anthropic-only, in tests/e2e/test_anthropic_exactly_once.py.)"""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 5, "m")
    emu.control.add_fault(LIST_OPS.get(name, "batches.list"), "list_lag", seconds=300)
    emu.control.add_fault(DOORS[name].create_op, "500", mode="after", count=1)
    e = engine(db, emu, settle_seconds=0.2)
    try:
        deadline = time.monotonic() + 60
        while creates(emu, name) < 2:  # the list still hides the first (the clock stands still)
            assert time.monotonic() < deadline, "it never created again"
            e.tick(time.time())
            time.sleep(0.05)
        drain([e], emu)
        deadline = time.monotonic() + 30
        while sql(db, "SELECT COUNT(*) FROM batches")[0][0] < 2:  # the sweep adopts the first
            assert time.monotonic() < deadline, "the unrecorded batch was never adopted"
            emu.control.advance(600)
            e.tick(time.time())
            time.sleep(0.05)
        tick_for([e], 0.3)  # the adopted batch is ingested, its results skipped
    finally:
        close(e)
    assert creates(emu, name) == 2
    assert sql(db, "SELECT intent_id, state FROM batches ORDER BY id") == [
        (None, "ingested"),
        (1, "ingested"),
    ]
    assert_once(db, ids)


def test_a_refusal_while_reconciling_leaves_the_intent_to_reconcile_later(
    name: str, tmp_path: Path, emu: RunningEmulator, rejecting: RefusingService
) -> None:
    """A 400 (a gateway's) to the lists during reconcile proves nothing: the intent is not
    abandoned (its requests do not fail), and once the lists answer it finds its batch."""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 5, "m")
    emu.control.add_fault(DOORS[name].create_op, "500", mode="after", count=1)
    e = engine(db, emu)
    try:
        e.tick(time.time())
    finally:
        close(e)
    gateway = settings(emu)
    gateway.providers = {
        "openai": {**gateway.providers["openai"], "base_url": rejecting.url + "/v1"},
        "azure": {**gateway.providers["azure"], "endpoint": rejecting.url},
        "anthropic": {**gateway.providers["anthropic"], "base_url": rejecting.url},
        "gemini": {**gateway.providers["gemini"], "base_url": rejecting.url},
        **{
            n: {**gateway.providers[n], "base_url": f"{rejecting.url}/compatible/{n}/v1"}
            for n in SHIPPED
        },
    }
    refused = Engine(open_store(db), gateway)
    try:
        time.sleep(1.6)  # past submit_timeout + settle: the next tick reconciles
        tick_for([refused], 1.0)
    finally:
        close(refused)
    assert any(" /" in call and "batches" in call for call in rejecting.seen)  # it did ask
    assert "failed" not in states(db) and intents(db) == 1
    e = engine(db, emu)
    try:
        drain([e], emu)
    finally:
        close(e)
    assert_once(db, ids)
    assert creates(emu, name) == intents(db) == 1


# -- a worker that died after its creates --------------------------------------------------------


def dead_intents(db: str, prefixes: Sequence[str], *, marked: bool = True) -> list[int]:
    """Intents a worker committed, one per custom-id prefix, create marked, before it died
    holding the lease (the next engine breaks it at once). Their creates are sent by hand."""
    store = open_store(db)
    try:
        now = time.time() - 5
        token = store.acquire_lease("engine", DEAD_HOLDER, 3600.0, now)
        assert token is not None
        out = []
        for prefix in prefixes:
            rows = sql(
                db,
                "SELECT id, provider, endpoint, model FROM requests WHERE state = 'queued'"
                " AND custom_id LIKE ? ORDER BY id",
                [prefix + "%"],
            )
            provider, endpoint, model = rows[0][1:]
            group = make_provider(provider).group_key(endpoint, model)
            batch_id = store.create_intent(
                (provider, endpoint, model if len(group) > 2 else None),
                [int(r[0]) for r in rows], 0, 0, now, token,
            )  # fmt: skip
            assert batch_id is not None
            if marked:
                store.mark("create", batch_id, now, token)
            out.append(batch_id)
        return out
    finally:
        store.close()


@pytest.mark.parametrize("window", ["intent only", "create marked, nothing sent", "after create"])
def test_a_worker_dead_in_each_crash_window_leaves_one_batch(
    name: str, window: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """A worker dies after committing an intent, after marking its create, or after the
    create reached the provider: a fresh engine sends it (once), or adopts the batch made.
    (Was Anthropic-only, in tests/e2e/test_anthropic_exactly_once.py, now gone.)"""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 6, "m")
    (intent,) = dead_intents(db, ["m"], marked=window != "intent only")
    made = create_by_hand(name, emu, db, intent, tmp_path) if window == "after create" else None
    e = engine(db, emu)
    try:
        drain([e], emu)
    finally:
        close(e)
    assert creates(emu, name) == intents(db) == 1
    if made is not None:
        assert provider_batches(db) == {made}
        adopted = sql(db, "SELECT detail FROM events WHERE kind = 'adopted'")
        assert any(made in d for (d,) in adopted)
    assert_once(db, ids)


def test_a_dead_workers_two_creates_of_one_intent_are_both_adopted(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """The dead worker's create went out twice (a re-create after the settle wait, then a
    crash): one batch is the intent's, the other is adopted as its duplicate; nothing is
    created again and every request has one result. (Was Anthropic-only, in
    tests/e2e/test_anthropic_exactly_once.py.)"""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 5, "m")
    (intent,) = dead_intents(db, ["m"])
    first = create_by_hand(name, emu, db, intent, tmp_path)
    second = create_by_hand(name, emu, db, intent, tmp_path)
    e = engine(db, emu)
    try:
        drain([e], emu)
    finally:
        close(e)
    assert creates(emu, name) == 2  # both by the dead worker; none by the engine
    rows = sql(db, "SELECT id, provider_batch_id, intent_id FROM batches ORDER BY id")
    assert [(r[0], r[2]) for r in rows] == [(intent, None), (rows[1][0], intent)]
    assert {r[1] for r in rows} == {first, second}
    assert_once(db, ids)  # found by reconcile with its twin, or by the sweep: adopted once


def test_two_lost_creates_of_equal_size_each_find_their_own(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """Two intents of the same size, both created, neither recorded: each gets its own batch,
    and no result lands on another intent's attempts. (Was Anthropic-only.)"""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 4, "a") + enqueue(db, name, 4, "b")
    one, two = dead_intents(db, ["a", "b"])
    made = {i: create_by_hand(name, emu, db, i, tmp_path) for i in (one, two)}
    e = engine(db, emu)
    try:
        drain([e], emu)
    finally:
        close(e)
    assert creates(emu, name) == 2
    assert dict(sql(db, "SELECT id, provider_batch_id FROM batches")) == made
    assert_once(db, ids)


def test_only_the_newer_of_two_equal_lost_creates_was_made(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """One batch for two unrecorded intents of its size: it is the newer intent's (by its
    proof: metadata, or once ended its first result line), and only the older intent is
    created again — no batch paid twice. (Was Anthropic-only.)"""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 4, "a") + enqueue(db, name, 4, "b")
    one, two = dead_intents(db, ["a", "b"])
    made = create_by_hand(name, emu, db, two, tmp_path)  # the older one's never got there
    e = engine(db, emu)
    try:
        drain([e], emu)
    finally:
        close(e)
    assert creates(emu, name) == 2  # the dead worker's, and the older intent's again
    assert sql(db, "SELECT provider_batch_id FROM batches WHERE id = ?", [two]) == [(made,)]
    assert sql(db, "SELECT COUNT(*) FROM batches")[0][0] == 2
    assert one != two
    assert_once(db, ids)


# -- a worker killed again and again -----------------------------------------------------------


def start_worker(db: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, E2E_KEY_ENV: "sk-test-not-a-secret"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def worker_config(emu: RunningEmulator) -> str:
    """The engine settings a killed worker runs with, every provider pointed at `emu`:
    creates are slowed, so kills land between a create and its record; an unknown create
    waits submit_timeout plus settle_seconds."""
    lines = [
        "[engine]", "lease_ttl = 30.0", "submit_timeout = 2.0", "settle_seconds = 1.0",
        "poll_interval = 0.1", "max_poll_interval = 0.3", "backoff_seconds = 0.2",
        "delete_files = false", "max_batch_requests = 10", "sweep_interval = 0.5",
    ]  # fmt: skip
    for name, values in settings(emu).providers.items():
        lines.append(f"\n[providers.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_a_worker_killed_again_and_again_over_every_provider_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    """One queue holding every provider's requests; its worker is killed (SIGKILL) again and
    again mid-work, right after it stamps a create, and a new one takes over each time. Every
    request ends with one result and every batch the emulator made is recorded (none
    orphaned); creates beyond one per intent, the residual risk, are reported. All providers
    in one run keep it as long as one. (Was Anthropic-only, in
    tests/e2e/test_anthropic_exactly_once.py.)"""
    db = str(tmp_path / "q.db")
    ids = [i for name in sorted(available()) for i in enqueue(db, name, 10, name)]
    with running(seed=23) as emu:
        for name in sorted(available()):
            emu.control.add_fault(DOORS[name].create_op, "latency", mode="after", seconds=0.15)
        config = tmp_path / "llmbatch.toml"
        config.write_text(worker_config(emu))
        log = tmp_path / "worker.log"
        rng = random.Random(23)
        kills = 0
        proc = start_worker(db, config, log)
        try:
            started = "SELECT COALESCE(MAX(id), 0) FROM events WHERE kind = 'create_started'"
            last = 0
            while kills < 7 and states(db) != {"succeeded": len(ids)}:
                deadline = time.monotonic() + 10
                while sql(db, started)[0][0] <= last and time.monotonic() < deadline:
                    time.sleep(0.005)  # until this worker commits a new create_started
                last = sql(db, started)[0][0]
                time.sleep(rng.uniform(0.0, 0.12))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                proc = start_worker(db, config, log)
            deadline = time.monotonic() + 120
            made = sum(creates(emu, name) for name in available())
            while states(db) != {"succeeded": len(ids)} or (
                {s for (s,) in sql(db, "SELECT state FROM batches")} != {"ingested"}
                or sql(db, "SELECT COUNT(*) FROM batches")[0][0] < made
            ):  # a batch made by a killed worker may still be adopted by a later sweep
                assert time.monotonic() < deadline, f"not drained: {states(db)}"
                emu.control.advance(600)
                time.sleep(0.2)
                made = sum(creates(emu, name) for name in available())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    intents_made = intents(db)
    dups = sql(db, "SELECT COUNT(*) FROM batches WHERE intent_id IS NOT NULL")[0][0]
    assert made == intents_made + dups  # every create is a recorded batch
    print(
        f"kill loop: {kills} SIGKILLs, {intents_made} intents, {made} creates, {dups} residual "
        "double creates (adopted, their results skipped)"
    )
    assert results_per_request(db) == dict.fromkeys(ids, 1)
    output = log.read_text().lower()
    assert "traceback" not in output, output[-3000:]


# -- among foreign batches --------------------------------------------------------------------


class _Journal:
    call_timeout = 30.0

    def uploading(self) -> None: ...

    def uploaded(self, file_id: str) -> None: ...

    def creating(self) -> None: ...

    def sending(self) -> None: ...


def create_by_hand(name: str, emu: RunningEmulator, db: str, batch_id: int, folder: Path) -> str:
    """Create an intent's batch again, as a worker whose record of the first was lost does
    (the residual risk): its lines, its tag and its nonce."""
    store = open_store(db)
    try:
        nonce = store.nonce_of(batch_id) or None
        provider = make_provider(name, **settings(emu).providers[name])
        lines = [
            provider.request_line(custom_id(store.store_id, nonce, a), endpoint, body)
            for a, endpoint, body in store.batch_lines(batch_id)
        ]
        path = folder / f"by-hand-{batch_id}.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        ((endpoint, model),) = sql(
            db, "SELECT endpoint, model FROM batches WHERE id = ?", [batch_id]
        )
        intent = Intent(
            batch_id, store.store_id, endpoint, model, path, len(lines), 0.0, nonce=nonce
        )
        return provider.submit(intent, _Journal()).provider_batch_id
    finally:
        store.close()


def result_reads(emu: RunningEmulator, batch_ids: set[str]) -> int:
    """Reads of these batches' results (Anthropic) or output files' content (OpenAI)."""
    return sum(
        1
        for c in emu.control.calls()
        if c["method"] == "GET" and any(c["path"].endswith(f"{b}/results") for b in batch_ids)
    )


# over the 3 pages the sweep read
FOREIGN = {
    "openai": 350,
    "azure": 350,
    "anthropic": 150,
    "gemini": 350,
    **dict.fromkeys(SHIPPED, 350),
}


def test_among_foreign_batches_the_sweep_adopts_ours_and_reads_each_foreign_once(
    name: str, tmp_path: Path
) -> None:
    """A duplicate of one of our intents (the residual risk), then more foreign batches than
    the 3 list pages the sweep read before issue 15 (it missed the duplicate): the sweep pages
    back to what it needs, adopts the duplicate, records and deletes nothing foreign, and a
    second engine (another process) reads no foreign batch the first already judged."""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 4, "m")
    with running(seed=16) as emu:
        e = engine(db, emu)
        try:
            drain([e], emu)
            first = results_per_request(db)
            dup = create_by_hand(name, emu, db, 1, tmp_path)
            emu.control.wait(dup)
            foreign = set(emu.control.seed(name, batches=FOREIGN[name])["batches"])
            for b in foreign:
                emu.control.wait(b)
            deadline = time.monotonic() + 60
            while sql(db, "SELECT state FROM batches WHERE provider_batch_id = ?", [dup]) != [
                ("ingested",)
            ]:
                assert time.monotonic() < deadline, "the duplicate was never adopted"
                e.tick(time.time())
                time.sleep(0.05)
            tick_for([e], 0.6)
        finally:
            close(e)
        reads = result_reads(emu, foreign)
        again = engine(db, emu)
        try:
            tick_for([again], 1.0)  # several sweeps
        finally:
            close(again)
        assert result_reads(emu, foreign) == reads  # judged once, remembered in the store
        assert reads <= len(foreign)
        remote = {
            b.provider_batch_id
            for b in make_provider(name, **settings(emu).providers[name]).poll(
                sorted(foreign), len(foreign)
            )
        }
        assert remote == foreign  # none deleted
    assert sql(db, "SELECT intent_id FROM batches WHERE provider_batch_id = ?", [dup]) == [(1,)]
    assert not provider_batches(db) & foreign
    assert results_per_request(db) == first == dict.fromkeys(ids, 1)


@pytest.mark.slow
def test_a_fresh_store_reads_nothing_older_than_its_first_intent(
    name: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """Foreign batches made 50 minutes before the store's first intent: none can be ours. On
    the code before, a fresh store's every sweep read the last hour of them (an Anthropic
    batch's results, two calls each; the OpenAI list page after page) before it had sent
    anything; now a store with no intent makes no call, and one with intents looks back to
    its first (less the clock skew allowed), so it reads one list page and no foreign batch."""
    foreign = set(emu.control.seed(name, batches=120)["batches"])
    emu.control.advance(3000)  # they ended before the store was made
    for b in foreign:
        emu.control.wait(b)
    skew = emu.control.now() - time.time()  # the engine's clock follows the provider's
    db = str(tmp_path / "q.db")
    open_store(db).close()
    e = engine(db, emu)
    try:
        emu.control.clear_calls()
        for _ in range(3):  # sweeps, nothing sent
            e.tick(time.time() + skew)
            time.sleep(0.25)
        assert emu.control.calls() == []
        ids = enqueue(db, name, 4, "m")
        deadline = time.monotonic() + 60
        while e.store.has_unfinished() or e.store.open_batches():
            assert time.monotonic() < deadline, states(db)
            e.tick(time.time() + skew)
            time.sleep(0.25)
            if e.store.open_batches():
                emu.control.advance(60)
                skew = emu.control.now() - time.time()
        tick_for_at = time.monotonic() + 0.6
        while time.monotonic() < tick_for_at:  # more sweeps after the work
            e.tick(time.time() + skew)
            time.sleep(0.1)
    finally:
        close(e)
    calls = emu.control.calls()
    assert not [c for c in calls if any(b in c["path"] for b in foreign)]  # no foreign read
    assert not [c for c in calls if "after" in (c.get("query") or "")]  # one list page each
    assert_once(db, ids)


# -- proof that never comes ------------------------------------------------------------------


def test_an_intent_waits_for_proof_at_most_max_proof_wait_then_creates_again_counted(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    """Store A's Anthropic batch of the same size runs and runs (the emulator's clock stands
    still): store B, whose create was refused, cannot tell it is not its own. B waits
    `max_proof_wait` after its create, then creates again; `status` counts it as a residual
    double create. Nothing of A's is adopted meanwhile."""
    name = "anthropic"
    a_db, b_db = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    enqueue(a_db, name, 3, "a")
    b_ids = enqueue(b_db, name, 3, "b")
    a, b = engine(a_db, emu), engine(b_db, emu, max_proof_wait=3.0)
    try:
        a.tick(time.time())
        emu.control.add_fault(DOORS[name].create_op, "529", mode="before", count=1)
        b.tick(time.time())
        tick_for([b], 2.0)
        assert b.store.proof_waits() and creates(emu, name, refused=1) == 1  # waiting
        record = json.loads(cli("--db", b_db, "status", "--format", "json").stdout)
        assert [w["batch"] for w in record["ownership"]["proof_waits"]] == [1]
        tick_for([b], 2.5)  # past max_proof_wait: created again
        assert creates(emu, name, refused=1) == 2 and not b.store.proof_waits()
        drain([b], emu)
    finally:
        close(a, b)
    assert_once(b_db, b_ids)
    assert "residual double creates: 1" in cli("--db", b_db, "status").output
    assert not provider_batches(a_db) & provider_batches(b_db)


# -- expired and cancelled batches --------------------------------------------------------------


@pytest.mark.parametrize("how", ["expire", "cancel"])
def test_a_batch_expired_or_cancelled_by_someone_else_sends_its_unrun_requests_again(
    name: str, how: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """The provider expires the batch (its window passed), or someone cancels it at the
    provider: the requests that never ran go back to the queue uncharged and are sent again;
    every request ends with one result."""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 6, "m")
    e = engine(db, emu)
    try:
        e.tick(time.time())
        (first,) = provider_batches(db)
        getattr(emu.control, how)(first)
        drain([e], emu)
    finally:
        close(e)
    assert_once(db, ids)
    assert intents(db) == 2  # the unrun requests travelled again, in one new batch


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["requeue", "fail"])
def test_results_the_provider_forgot_before_they_were_read_follow_the_archived_setting(
    name: str, mode: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    """Archived results: the batch ended unseen, and by the time the engine looks the
    provider no longer serves its results (31 days on: Anthropic has archived them, OpenAI's
    output file has expired; and whatever a provider keeps is deleted at it, as someone
    cleaning the account would). With `archived = "requeue"` (the default) the requests that
    waited go back to the queue and each ends with exactly one result, in one new batch; with
    `archived = "fail"` each fails once with the code "archived" and nothing is sent again.
    Before issue 15, a result file that kept answering 404 was requeued whatever the setting
    said (OpenAI, Azure, Gemini)."""
    db = str(tmp_path / "q.db")
    ids = enqueue(db, name, 5, "m")
    e = engine(db, emu, archived=mode)
    try:
        e.next_poll_at = time.time() + 3600  # not polled: it ends unseen
        e.tick(time.time())
        (first,) = provider_batches(db)
        emu.control.advance(3600)
        emu.control.wait(first)
        emu.control.advance(31 * 86400)
        provider = make_provider(name, **settings(emu).providers[name])
        (status,) = provider.poll([first], 1)
        assert status.ended
        provider.delete_files([f for f in (status.output_file_id, status.error_file_id) if f])
        e.next_poll_at = 0.0
        drain([e], emu)
    finally:
        close(e)
    assert results_per_request(db) == dict.fromkeys(ids, 1)
    assert sql(db, "SELECT state FROM batches WHERE provider_batch_id = ?", [first]) == [
        ("ingested",)
    ]
    if mode == "requeue":
        assert states(db) == {"succeeded": len(ids)}
        assert intents(db) == 2  # the forgotten batch's requests travelled again, in one batch
    else:
        assert states(db) == {"failed": len(ids)}
        assert intents(db) == creates(emu, name) == 1  # nothing was sent again
        results = cli("--db", db, "results").stdout.splitlines()
        codes = {json.loads(r)["error"]["code"] for r in results}
        # archived results, or (a provider that deletes the batch with them) a batch gone
        assert codes in ({"archived"}, {"batch_gone"})
        assert first in cli("--db", db, "status").stdout


def test_engine_settings_refuse_an_unknown_archived_choice() -> None:
    from llmbatch.errors import ConfigError

    with pytest.raises(ConfigError, match="archived"):
        EngineSettings(archived="drop")


# -- where a store lives ------------------------------------------------------------------------


def _admin() -> psycopg.Connection[Any]:
    """The test server's admin connection (LLMBATCH_TEST_PG; the `db` fixture needs it too)."""
    return psycopg.connect(os.environ["LLMBATCH_TEST_PG"], autocommit=True)


def _copy(db: str, tmp_path: Path) -> str:
    """A copy of the store: the SQLite file copied, the PostgreSQL database cloned."""
    if not db.startswith("postgresql://"):
        target = str(tmp_path / "copy.db")
        copy_store(db, target)
        return target
    base, source = db.rsplit("/", 1)
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{source}_copy" TEMPLATE "{source}"')
    return f"{base}/{source}_copy"


def _drop(dsn: str) -> None:
    if dsn.startswith("postgresql://"):
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


def test_a_store_knows_where_it_lives_on_both_backends(db: str, tmp_path: Path) -> None:
    """Copied with nothing in flight, a store simply lives where it is now; copied with an
    intent open, it freezes what was made before (SQLite: another inode and path;
    PostgreSQL: another database name on the cluster) until told which it was."""
    open_store(db).close()
    home = sql(db, "SELECT value FROM meta WHERE key = 'home'")[0][0]
    assert ("inode" in home) != ("system_identifier" in home)
    (tmp_path / "quiet").mkdir()
    quiet = _copy(db, tmp_path / "quiet")
    try:
        open_store(quiet).close()
        assert sql(quiet, "SELECT value FROM meta WHERE key = 'identity_pending'") == []
        assert sql(quiet, "SELECT value FROM meta WHERE key = 'home'")[0][0] != home
    finally:
        _drop(quiet)
    with Queue(db, "q") as q:
        q.add_many(DOORS["openai"].items("openai", 2, "x"))
    store = open_store(db)
    try:
        token = store.acquire_lease("engine", "t", 60, time.time())
        assert token is not None
        ids = [int(r) for (r,) in sql(db, "SELECT id FROM requests")]
        group = ("openai", "/v1/chat/completions", "gpt-4o-mini")
        store.create_intent(group, ids, 0, 0, time.time(), token)
        store.release_lease("engine", "t")
    finally:
        store.close()
    busy = _copy(db, tmp_path)
    try:
        copy = open_store(busy)
        try:
            moved = copy.moved()
            assert moved is not None and moved.before == 1
        finally:
            copy.close()
        status = cli("--db", busy, "status", "--format", "json").stdout
        assert json.loads(status)["ownership"]["moved"]["before"] == 1
        result = cli("--db", busy, "store", "keep-identity")
        assert result.exit_code == 0, result.output
        status = cli("--db", busy, "status", "--format", "json").stdout
        assert json.loads(status)["ownership"]["moved"] is None
        reopened = open_store(busy)  # home is here now: not pending again
        assert reopened.moved() is None
        reopened.close()
    finally:
        _drop(busy)
    original = open_store(db)  # the original never moved
    assert original.moved() is None
    original.close()
