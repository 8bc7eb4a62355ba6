"""Hard budgets end to end: real stores, the emulator over real HTTP, racing workers.

A budget a few cents small (the emulator's requests are cheap) stops submission with requests
held and a reason `status` and `show` print; what was spent, computed here from the results'
tokens and genai-prices' own batch price, never passes it; raising the budget sends the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from helpers import E2E_KEY_ENV, cli, fast_settings, request_states, sql
from llmbatch import Queue
from llmbatch.budget import Budget, BudgetSettings
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.store.batching import LeaseLost

MODEL = "gpt-4o-mini"
N = 60
LLMBATCH = str(Path(sys.executable).with_name("llmbatch"))


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


def enqueue(db: str, n: int = N, queue: str = "evals") -> None:
    items = [
        {"custom_id": f"e{i}", "body": {"model": MODEL, "max_tokens": 40 + i % 7, "messages": [
            {"role": "user", "content": f"question {i}: " + "why is the sky blue? " * (1 + i % 5)}]}}
        for i in range(n)
    ]  # fmt: skip
    with Queue(db, queue) as q:
        assert q.add_many(items).added == n


def spent_by_results(db: str) -> Decimal:
    """What the results cost in batch, priced here by genai-prices itself (one aggregate)."""
    ((tokens_in, tokens_out),) = sql(
        db, "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0) FROM results"
    )
    price = calc_price(
        Usage(input_tokens=int(tokens_in), output_tokens=int(tokens_out)), MODEL,
        provider_id="openai", price_context={"processing": "batch"},  # type: ignore[arg-type]
    ).total_price  # fmt: skip
    return Decimal(price)


def committed(db: str) -> int:
    return int(sql(db, "SELECT COALESCE(SUM(reserved + spent), 0) FROM spend")[0][0])


def budgets(limit: str, queue: str | None = None) -> BudgetSettings:
    return BudgetSettings((Budget(queue, "day", Decimal(limit)),))


def race(db: str, settings: Any, until: Any, seconds: float = 30.0) -> dict[str, int]:
    """Two engines with their own connections and holders tick at once; each pauses past its
    lease now and then so the work changes hands. Returns the ticks each worker acted in."""
    stop = threading.Event()
    acted = {"w1": 0, "w2": 0}
    errors: list[BaseException] = []

    def work(holder: str, offset: float) -> None:
        engine = Engine(open_store(db), settings, holder=holder)
        time.sleep(offset)
        ticks = 0
        try:
            while not stop.is_set():
                try:
                    acted[holder] += engine.tick(time.time()).held_by is None
                except LeaseLost:  # it lost the lease mid-tick: the fence refused its write
                    acted[holder] += 1
                ticks += 1
                # past the 0.3 s lease after the first tick (so the other one surely acts,
                # however slow the ticks of a loaded machine are), then every 15 ticks
                time.sleep(0.6 if ticks % 15 == 1 else 0.01)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            engine.close()
            engine.store.close()

    threads = [threading.Thread(target=work, args=(h, o)) for h, o in (("w1", 0), ("w2", 0.1))]
    for t in threads:
        t.start()
    limit = settings.budgets.budgets[0].limit_micro
    deadline = time.monotonic() + seconds
    try:
        while not until():
            assert committed(db) <= limit, "spent and reserved passed the budget"
            assert time.monotonic() < deadline, f"not done: {request_states(db)}"
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    return acted


def stopped(db: str) -> bool:
    """Nothing in flight, nothing queued: what is left waits on the budget."""
    open_batches = sql(db, "SELECT COUNT(*) FROM batches WHERE state <> 'ingested'")[0][0]
    s = request_states(db)
    return open_batches == 0 and set(s) <= {"succeeded", "held"} and "held" in s


class Settled:
    """`stopped` for a whole second: a settlement that freed room has been weighed again
    (the next tick does that), so nothing more will be sent."""

    def __init__(self, db: str) -> None:
        self.db, self.since = db, None

    def __call__(self) -> bool:
        if not stopped(self.db):
            self.since = None
            return False
        self.since = self.since or time.monotonic()
        return time.monotonic() - self.since >= 1.0


def test_two_racing_workers_stop_at_the_budget_and_a_raise_resumes(db: str) -> None:
    enqueue(db)
    with running(seed=11) as emu:
        limit = "0.0004"  # room for roughly half the requests' worst case
        # (files are kept: an engine that lost the lease mid-tick may still be downloading)
        tight = fast_settings(
            emu, lease_ttl=0.3, max_batch_requests=4, delete_files=False, budgets=budgets(limit)
        )
        acted = race(db, tight, Settled(db))
        assert acted["w1"] > 0 and acted["w2"] > 0, acted  # both held the lease and worked
        # the lease changed hands (how often depends on timing: at least once when both acted)
        assert int(sql(db, "SELECT token FROM leases WHERE name = 'engine'")[0][0]) >= 2
        states = request_states(db)
        assert 0 < states["succeeded"] < N and states["held"] == N - states["succeeded"]
        spent = spent_by_results(db)
        assert spent <= Decimal(limit), spent
        # the store's settled figure is the results' actual cost, not the reservation (each
        # batch's cost is kept at 1e-6 USD, so each may differ by half of that)
        settled_micro, batches = sql(db, "SELECT SUM(spent), COUNT(DISTINCT batch_id) FROM spend")[
            0
        ]
        assert int(sql(db, "SELECT SUM(reserved) FROM spend")[0][0]) == 0
        assert abs(Decimal(settled_micro) - spent * 1_000_000) <= Decimal(batches) / 2

        status = cli("--db", db, "status")
        assert status.exit_code == 0, status.output
        assert "budget 0.0004 USD per day, all queues: " in status.output
        assert (
            f"held: {states['held']:,} requests: budget 0.0004 USD (all queues, " in status.output
        )
        assert "spent, next batch worst case 0.0000" in status.output
        held_id = str(sql(db, "SELECT custom_id FROM requests WHERE state = 'held' LIMIT 1")[0][0])
        shown = cli("--db", db, "show", held_id, "--queue", "evals")
        assert "state      held (budget 0.0004 USD" in shown.output, shown.output
        assert "raise the budget to send it" in shown.output

        # raising the budget releases the held requests and they go
        roomy = fast_settings(
            emu, lease_ttl=0.3, max_batch_requests=4, delete_files=False, budgets=budgets("1")
        )
        race(db, roomy, lambda: request_states(db) == {"succeeded": N})
    assert sql(db, "SELECT COUNT(*) FROM results")[0][0] == N
    assert spent_by_results(db) <= Decimal(1)


def test_a_queue_budget_holds_only_that_queue_and_unpriced_models_wait(db: str) -> None:
    enqueue(db, 20, "team-a")
    enqueue(db, 20, "team-b")
    with Queue(db, "team-c") as q:
        q.add_many([{"custom_id": "x", "body": {"model": "gpt-unheard-of", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "hi"}]}}])  # fmt: skip
    with running(seed=12) as emu:
        settings = fast_settings(emu, budgets=budgets("0.0002", "team-a"))
        engine = Engine(open_store(db), settings)
        deadline = time.monotonic() + 30
        while not (sql(db, "SELECT COUNT(*) FROM requests WHERE queue = 'team-b' AND state = "
                           "'succeeded'")[0][0] == 20 and settled_queue(db, "team-a")):  # fmt: skip
            assert time.monotonic() < deadline, request_states(db)
            engine.tick(time.time())
            time.sleep(0.02)
        engine.close()
    by_queue = dict(sql(db, "SELECT queue, COUNT(*) FROM requests WHERE state = 'held' "
                            "GROUP BY queue"))  # fmt: skip
    assert 0 < by_queue["team-a"] < 20 and "team-b" not in by_queue
    # team-c has no budget of its own and the only budget is team-a's: its unpriced model goes
    assert "team-c" not in by_queue


def settled_queue(db: str, queue: str) -> bool:
    rows = dict(sql(db, "SELECT state, COUNT(*) FROM requests WHERE queue = ? GROUP BY state",
                    [queue]))  # fmt: skip
    return set(rows) <= {"succeeded", "held"} and "held" in rows


def test_unpriced_model_is_held_under_a_budget_unless_allowed(tmp_path: Path) -> None:
    db = str(tmp_path / "q.db")
    with Queue(db, "q") as q:
        q.add_many([{"custom_id": "x", "body": {"model": "gpt-unheard-of", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "hi"}]}}])  # fmt: skip
    with running(seed=13) as emu:
        engine = Engine(open_store(db), fast_settings(emu, budgets=budgets("5")))
        engine.tick(time.time())
        engine.close()
        (reason,) = sql(db, "SELECT reason FROM requests WHERE state = 'held'")[0]
        assert "model gpt-unheard-of has no price, so no budget can bound it" in str(reason)
        allowed = BudgetSettings(budgets("5").budgets, allow_unpriced=True)
        engine = Engine(open_store(db), fast_settings(emu, budgets=allowed))
        engine.tick(time.time())
        engine.close()
    assert request_states(db) != {"held": 1}


def test_cli_budget_flags(tmp_path: Path) -> None:
    db = str(tmp_path / "q.db")
    enqueue(db, 10)
    for bad in ("0", "-5", "ten"):
        r = cli("--db", db, "run", "--budget-usd", bad)
        assert r.exit_code != 0 and "budget" in r.output.lower(), r.output
    config = tmp_path / "llmbatch.toml"
    config.write_text("[budgets]\ndaily_usd = 0\n")
    r = cli("--config", str(config), "--db", db, "run")
    assert r.exit_code != 0 and "[budgets] daily_usd: a budget must be more than 0 USD" in r.output


def test_two_worker_processes_with_budget_flags_cannot_overspend(tmp_path: Path) -> None:
    """Two `llmbatch worker --budget-usd` processes on one store; then `wait` with a raised
    budget finishes the queue."""
    db = str(tmp_path / "q.db")
    enqueue(db)
    with running(seed=14) as emu:
        config = tmp_path / "llmbatch.toml"
        config.write_text(
            "[engine]\nlease_ttl = 0.5\npoll_interval = 0.1\nmax_poll_interval = 0.3\n"
            "settle_seconds = 1.0\nmax_batch_requests = 4\ndelete_files = false\n\n"
            f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
        )
        env = {**os.environ, E2E_KEY_ENV: "sk-test-not-a-secret"}
        argv = [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05",
                "--budget-usd", "0.0004"]  # fmt: skip
        procs = [
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            done = Settled(db)
            while not done():
                assert committed(db) <= 400
                assert time.monotonic() < deadline, request_states(db)
                time.sleep(0.05)
        finally:
            for p in procs:
                p.terminate()
            logs = [p.communicate(timeout=30)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], logs
        assert spent_by_results(db) <= Decimal("0.0004")
        assert "traceback" not in "".join(logs).lower()
        done = subprocess.run(
            [LLMBATCH, "--config", str(config), "--db", db, "wait", "--budget-usd", "0.0004",
             "--timeout", "30"], capture_output=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1 and b"requests held: budget 0.0004 USD" in done.stderr
        done = subprocess.run(
            [LLMBATCH, "--config", str(config), "--db", db, "wait", "--budget-usd", "2",
             "--timeout", "30"], capture_output=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert request_states(db) == {"succeeded": N}
