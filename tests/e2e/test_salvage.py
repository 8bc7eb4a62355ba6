"""Salvage end to end: retries, expired, cancelled and failed batches lose no finished work.

Real stores (SQLite and PostgreSQL), the real emulator over real HTTP, the official SDK.
Every fault comes through the emulator's control API. Where a test needs a batch half done,
the emulator runs on a frozen clock (`time_scale=0`) with a slow processing `rate`, and the
test moves its clock: `rate × seconds` requests run, in the emulator's shuffled order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from click.testing import CliRunner, Result

from helpers import E2E_KEY_ENV, fast_settings, results_per_request, sent_ids, sql
from helpers import request_states as states
from llmbatch import EngineSettings, Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.emulator.synth import prompt_tokens
from llmbatch.engine import Engine
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store

KEY_ENV = E2E_KEY_ENV
MODEL = "gpt-4o-mini"
DAY = 24 * 3600.0
LLMBATCH = str(Path(sys.executable).parent / "llmbatch")


def settings(emu: RunningEmulator, **overrides: Any) -> EngineSettings:
    """The shared fast settings, keeping uploaded files to read them back."""
    return fast_settings(emu, **{"delete_files": False, **overrides})


# -- helpers -----------------------------------------------------------------------------------


def body(i: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"request {i:05d}"}]}


def enqueue(db: str, ids: Sequence[int], provider: str = "openai", **options: Any) -> None:
    items = [{"custom_id": f"c{i}", "body": body(i)} for i in ids]
    with Queue(db, "q", provider=provider) as q:
        assert q.add_many(items, **options).added == len(items)


@contextmanager
def engine_on(db: str, s: EngineSettings) -> Iterator[Engine]:
    store = open_store(db)
    engine = Engine(store, s)
    try:
        yield engine
    finally:
        engine.close()
        store.close()


def drive(
    engine: Engine,
    *,
    until: Any = None,
    emu: RunningEmulator | None = None,
    max_seconds: float = 30.0,
    offset: float = 0.0,
) -> None:
    """Tick with the real clock until `until(engine)` (default: nothing unfinished); with
    `emu` (a frozen emulator clock), move its clock a second per tick so batches run."""
    done = until or (lambda e: e.store.unfinished_count() == 0)
    deadline = time.monotonic() + max_seconds
    notes: list[str] = []
    while True:
        notes += engine.tick(time.time() + offset).notes
        if done(engine):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {max_seconds} s; last notes: {notes[-5:]}")
        if emu is not None:
            emu.control.advance(1.0)
        time.sleep(0.02)


def counters(db: str) -> dict[str, tuple[int, int]]:
    """custom_id -> (charged attempts, expiries)."""
    rows = sql(db, "SELECT custom_id, attempts, expiries FROM requests")
    return {str(c): (int(a), int(e)) for c, a, e in rows}


def batch_ids(db: str) -> list[str]:
    return [str(p) for (p,) in sql(db, "SELECT provider_batch_id FROM batches ORDER BY id")]


def batch_sizes(db: str) -> list[int]:
    return [int(n) for (n,) in sql(db, "SELECT request_count FROM batches ORDER BY id")]


def sdk(emu: RunningEmulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="k")


def creates(emu: RunningEmulator) -> list[dict[str, Any]]:
    """Batch creates the emulator answered with success."""
    return [
        c
        for c in emu.control.calls()
        if c["method"] == "POST" and c["path"].endswith("/batches") and c["status"] == 200
    ]


def wait_done(emu: RunningEmulator, pid: str, n: int) -> None:
    """Until the emulator has run `n` requests of batch `pid`."""
    deadline = time.monotonic() + 10
    while emu.control.batch(pid)["progress"]["done"] != n:
        assert time.monotonic() < deadline, emu.control.batch(pid)
        time.sleep(0.01)


def half_done(emu: RunningEmulator, engine: Engine, db: str, ran: int) -> str:
    """Submit the queue as one batch and let the (frozen, slow) emulator run `ran` of it."""
    engine.tick(time.time())
    (pid,) = batch_ids(db)
    emu.control.wait(pid, "in_progress")
    emu.control.advance(1.0)  # rate = `ran` per virtual second
    wait_done(emu, pid, ran)
    return pid


def write_config(tmp_path: Path, emu: RunningEmulator) -> Path:
    path = tmp_path / "llmbatch.toml"
    path.write_text(
        "[engine]\npoll_interval = 0.05\nmax_poll_interval = 0.2\nsettle_seconds = 0.5\n"
        "backoff_seconds = 0.1\n\n[engine.retry]\nbase_seconds = 0.05\nmax_seconds = 0.1\n\n"
        f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{KEY_ENV}"\n'
    )
    return path


def cli(db: str, *args: str, config: Path | None = None) -> Result:
    pre = ["--config", str(config)] if config else []
    result = CliRunner().invoke(main_command(), [*pre, "--db", db, *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def main_command() -> Any:
    from llmbatch.cli import main

    return main


# -- expired and cancelled batches ---------------------------------------------------------------


def test_expired_half_done_batch_keeps_finished_and_requeues_the_rest(db: str) -> None:
    # 10.5 requests per virtual day: 10 of 20 run before the 24 h window closes
    with running(seed=7, time_scale=0, rate=10.5 / DAY) as emu:
        enqueue(db, range(20))
        with engine_on(db, settings(emu)) as engine:
            engine.tick(time.time())
            (pid,) = batch_ids(db)
            emu.control.wait(pid, "in_progress")
            emu.control.advance(DAY + 60)
            expired = emu.control.wait(pid)
            assert expired["status"] == "expired"
            assert expired["request_counts"]["completed"] == 10
            emu.control.set_config(rate=100_000)
            drive(engine, emu=emu)
        remote = {b.id: b for b in sdk(emu).batches.list()}
    first, second = batch_ids(db)
    assert (remote[first].status, remote[second].status) == ("expired", "completed")
    assert batch_sizes(db) == [20, 10]
    assert states(db) == {"succeeded": 20}
    assert results_per_request(db) == {f"c{i}": 1 for i in range(20)}
    # the 10 that finished in the expired batch kept that result; none was run twice
    kept = sql(
        db,
        "SELECT COUNT(*) FROM results x JOIN attempts a ON a.id = x.attempt_id "
        "JOIN batches b ON b.id = a.batch_id WHERE b.provider_batch_id = ?",
        [first],
    )
    assert kept == [(10,)]
    # no attempt charged; the requeued ones carry one expiry each
    got = counters(db)
    assert {a for a, _e in got.values()} == {0}
    assert sorted(e for _a, e in got.values()) == [0] * 10 + [1] * 10
    rows = sql(
        db,
        "SELECT a.state, a.error_code, COUNT(*) FROM attempts a JOIN batches b ON b.id = a.batch_id "
        "WHERE b.provider_batch_id = ? GROUP BY a.state, a.error_code ORDER BY a.state",
        [first],
    )
    assert rows == [("requeue", "batch_expired", 10), ("succeeded", None, 10)]
    # `show` tells the story of a requeued request
    (requeued,) = sql(db, "SELECT custom_id FROM requests WHERE expiries = 1 ORDER BY id LIMIT 1")
    shown = cli(db, "show", requeued[0])
    assert shown.exit_code == 0, shown.output
    assert f"batch {first}" in shown.stdout and "requeued after batch_expired" in shown.stdout
    assert f"batch {second}" in shown.stdout and "succeeded" in shown.stdout


def test_batch_cancelled_outside_llmbatch_is_requeued(db: str) -> None:
    with running(seed=8, time_scale=0, rate=10) as emu:
        enqueue(db, range(20))
        with engine_on(db, settings(emu)) as engine:
            pid = half_done(emu, engine, db, 10)
            emu.control.cancel(pid)  # someone else cancels it (the console, another tool)
            assert emu.control.wait(pid)["status"] == "cancelled"
            emu.control.set_config(rate=100_000)
            drive(engine, emu=emu)
    assert batch_sizes(db) == [20, 10]
    assert states(db) == {"succeeded": 20}
    assert results_per_request(db) == {f"c{i}": 1 for i in range(20)}
    got = counters(db)
    assert {a for a, _e in got.values()} == {0}
    assert sorted(e for _a, e in got.values()) == [0] * 10 + [1] * 10
    codes = sql(db, "SELECT DISTINCT error_code FROM attempts WHERE state = 'requeue'")
    assert codes == [("batch_cancelled",)]


def test_llmbatch_cancel_keeps_finished_and_retries_nothing(db: str, tmp_path: Path) -> None:
    with running(seed=9, time_scale=0, rate=10) as emu:
        config = write_config(tmp_path, emu)
        enqueue(db, range(20))
        with engine_on(db, settings(emu)) as engine:
            pid = half_done(emu, engine, db, 10)
        enqueue(db, range(20, 25))  # still waiting when the user cancels
        done = cli(db, "cancel", "--queue", "q", config=config)
        assert done.exit_code == 0, done.output
        assert "cancelled 5 waiting requests" in done.stdout
        assert "cancelling 1 batch(es) at the provider (20 requests)" in done.stdout
        assert emu.control.wait(pid)["status"] == "cancelled"
        status = cli(db, "status", "--wide")  # the note whatever the width (xdist says 80)
        assert status.exit_code == 0, status.output
        batch_line = next(ln for ln in status.stdout.splitlines() if pid in ln)
        assert "cancel requested" in batch_line, status.stdout
        with engine_on(db, settings(emu)) as engine:
            drive(engine, emu=emu)
            for _ in range(5):  # and nothing comes back to life later
                engine.tick(time.time() + 3600)
        assert len(creates(emu)) == 1
    assert states(db) == {"succeeded": 10, "cancelled": 15}
    assert batch_sizes(db) == [20]
    assert sql(db, "SELECT COUNT(*) FROM attempts WHERE batch_id IS NOT NULL") == [(20,)]
    # the 5 cancelled while waiting end without a batch: an unsent attempt and a result each
    assert sql(db, "SELECT COUNT(*) FROM attempts WHERE outcome = 'unsent'") == [(5,)]
    assert sql(db, "SELECT COUNT(*) FROM results WHERE error_code = 'cancelled'") == [(5,)]
    assert {a for a, _e in counters(db).values()} == {0}
    kept = sql(db, "SELECT COUNT(*) FROM results WHERE error_code IS NULL")
    assert kept == [(10,)]
    reasons = {str(r) for (r,) in sql(db, "SELECT reason FROM requests WHERE state = 'cancelled'")}
    assert reasons and all("cancel" in r for r in reasons)


# -- failed validation ---------------------------------------------------------------------------


@pytest.mark.slow
def test_validation_failure_on_one_line_fails_exactly_that_request(db: str) -> None:
    n, bad = 10_000, 4_512
    enqueue(db, range(n))
    message = f"Line {bad}: 'messages' must be a list."
    with running(seed=10) as emu:
        emu.control.next_batches(
            count=1, fail_validation={"code": "invalid_request", "message": message, "line": bad}
        )
        with engine_on(db, settings(emu)) as engine:
            drive(engine, max_seconds=60)
        first = batch_ids(db)[0]
        uploaded = sdk(emu).files.content(sdk(emu).batches.retrieve(first).input_file_id)
        sent = orjson.loads(uploaded.content.splitlines()[bad - 1])["custom_id"]
    assert batch_sizes(db) == [n, n - 1]
    assert states(db) == {"succeeded": n - 1, "failed": 1}
    (failed,) = sql(
        db,
        "SELECT r.custom_id, r.attempts, x.error_code, x.error_message, a.id, a.line "
        "FROM requests r JOIN results x ON x.request_id = r.id JOIN attempts a ON a.id = x.attempt_id "
        "WHERE r.state = 'failed'",
    )
    custom_id, attempts, code, text, attempt_id, line = failed
    assert (code, text, line) == ("invalid_request", message, bad)
    assert sent_ids(db)[attempt_id] == sent  # the request we sent on that line
    assert custom_id == f"c{bad - 1}"  # packed in enqueue order
    assert attempts == 1
    assert sql(db, "SELECT COUNT(*) FROM requests WHERE attempts > 0 OR expiries > 0") == [(1,)]
    assert results_per_request(db) == {f"c{i}": 1 for i in range(n)}


def test_token_limit_at_batch_level_fails_nothing_and_smaller_batches_succeed(db: str) -> None:
    n = 40
    enqueue(db, range(n))
    each = prompt_tokens("chat", body(0))
    assert {prompt_tokens("chat", body(i)) for i in range(n)} == {each}
    with running(seed=11) as emu:
        emu.control.set_quotas(openai={MODEL: each * 25})  # the quota fits 25 of the 40
        with engine_on(db, settings(emu)) as engine:
            drive(engine)
        remote = {b.id: b for b in sdk(emu).batches.list()}
    first, *rest = batch_ids(db)
    assert remote[first].status == "failed"
    errors = remote[first].errors
    assert errors and errors.data and errors.data[0].code == "token_limit_exceeded"
    assert {remote[p].status for p in rest} == {"completed"}
    assert batch_sizes(db) == [40, 20, 20]
    assert states(db) == {"succeeded": n}
    assert {v for v in counters(db).values()} == {(0, 0)}
    backoff = [str(d) for (d,) in sql(db, "SELECT detail FROM events WHERE kind = 'backoff'")]
    assert (
        len(backoff) == 1 and "token_limit_exceeded" in backoff[0] and "20 requests" in backoff[0]
    )


# -- transient errors on the endpoints, and per request -------------------------------------------


def test_503_storm_on_create_and_download_everything_succeeds(db: str) -> None:
    enqueue(db, range(20))
    with running(seed=12) as emu:
        emu.control.add_fault("batches.create", "503", count=4)
        emu.control.add_fault("files.content", "503", count=4)
        emu.control.add_fault("files.create", "503", count=2)
        with engine_on(db, settings(emu, max_batch_requests=10)) as engine:
            drive(engine, max_seconds=60)
        log = emu.control.calls()
        remote = sdk(emu).batches.list().data
    failed = [(c["method"], c["path"].split("/")[-1]) for c in log if c["status"] == 503]
    assert failed.count(("POST", "batches")) == 4
    assert failed.count(("GET", "content")) == 4
    assert failed.count(("POST", "files")) == 2
    assert len(remote) == 2 and {b.status for b in remote} == {"completed"}  # none doubled
    assert states(db) == {"succeeded": 20}
    assert results_per_request(db) == {f"c{i}": 1 for i in range(20)}
    assert {v for v in counters(db).values()} == {(0, 0)}
    transient = sql(db, "SELECT detail FROM events WHERE kind = 'transient'")
    assert any("HTTP 503" in str(d) for (d,) in transient)


def test_per_request_500s_are_retried_to_success(db: str) -> None:
    enqueue(db, range(10))
    with running(seed=13) as emu:
        emu.control.set_config(request_failure_rate=1.0, request_failure_status=500)
        slow = RetryPolicy(base_seconds=1.0, max_seconds=2.0)  # long enough to look at them
        with engine_on(db, settings(emu, retry=slow)) as engine:
            drive(engine, until=lambda e: states(db) == {"retry_wait": 10})
            reasons = {str(r) for (r,) in sql(db, "SELECT reason FROM requests")}
            assert reasons == {
                "http_500: The server had an error while processing your request. (retry 2 of 3)"
            }
            emu.control.set_config(request_failure_rate=0.0)
            drive(engine)
        # the jitter spreads the retries, so they may come back in more than one batch
        assert len(creates(emu)) == len(batch_ids(db)) >= 2
    assert states(db) == {"succeeded": 10}
    assert results_per_request(db) == {f"c{i}": 1 for i in range(10)}
    assert {v for v in counters(db).values()} == {(1, 0)}
    rows = sql(db, "SELECT state, error_code, COUNT(*) FROM attempts GROUP BY state, error_code")
    assert sorted(rows) == [("retry", "http_500", 10), ("succeeded", None, 10)]
    per_request = sql(db, "SELECT request_id, COUNT(*) FROM attempts GROUP BY request_id")
    assert {int(n) for _r, n in per_request} == {2}


def test_400s_fail_at_once(db: str) -> None:
    enqueue(db, range(30))
    with running(seed=14) as emu:
        emu.control.set_config(request_failure_rate=0.4, request_failure_status=400)
        with engine_on(db, settings(emu)) as engine:
            drive(engine)
        (remote,) = sdk(emu).batches.list().data
    assert len(batch_ids(db)) == 1
    got = states(db)
    counts = remote.request_counts
    assert counts is not None
    assert got["failed"] == counts.failed > 0
    assert got["succeeded"] == counts.completed > 0
    assert got["failed"] + got["succeeded"] == 30
    failed = sql(
        db,
        "SELECT r.attempts, r.reason, x.status_code, x.error_code FROM requests r "
        "JOIN results x ON x.request_id = r.id WHERE r.state = 'failed'",
    )
    assert {(a, s, c) for a, _r, s, c in failed} == {(1, 400, "http_400")}
    assert all("not retryable" in str(r) for _a, r, _s, _c in failed)


def test_retries_exhausted_fail_with_the_last_error(db: str) -> None:
    enqueue(db, range(6))
    with running(seed=15) as emu:
        emu.control.set_config(request_failure_rate=1.0, request_failure_status=503)
        with engine_on(db, settings(emu)) as engine:
            drive(engine)
        assert len(creates(emu)) == 3
    assert states(db) == {"failed": 6}
    assert {v for v in counters(db).values()} == {(3, 0)}
    rows = sql(
        db,
        "SELECT x.status_code, x.error_code, x.error_message, b.id FROM results x "
        "JOIN attempts a ON a.id = x.attempt_id JOIN batches b ON b.id = a.batch_id",
    )
    last = max(int(i) for (i,) in sql(db, "SELECT id FROM batches"))
    assert len(rows) == 6
    for status, code, message, batch in rows:
        assert (status, code, int(batch)) == (503, "http_503", last)  # the last attempt's error
        assert "overloaded" in message or "server had an error" in message
        assert "gave up after 3 attempts" in message
    per_request = sql(db, "SELECT request_id, COUNT(*) FROM attempts GROUP BY request_id")
    assert {int(n) for _r, n in per_request} == {3}


# -- a refused key -------------------------------------------------------------------------------


def test_wrong_key_stops_the_worker_with_one_message_and_fails_nothing(
    db: str, tmp_path: Path
) -> None:
    enqueue(db, range(8))
    with running(seed=16) as emu:
        config = write_config(tmp_path, emu)
        emu.control.add_fault("*", "401")  # every call: the key is wrong (or revoked)
        env = {**os.environ, KEY_ENV: "sk-wrong-key"}
        proc = subprocess.run(
            [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stderr  # a refused key: the provider cannot be used
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "HTTP 401" in errors[0] and f"${KEY_ENV}" in errors[0]
        assert "sk-wrong-key" not in proc.stderr
        refused = [c for c in emu.control.calls() if c["status"] == 401]
        assert len(refused) == 1  # refused once: not retried
        assert "failed" not in states(db) and sum(states(db).values()) == 8
        emu.control.clear_faults()  # the key is fixed: the same intent goes through, once
        with engine_on(db, settings(emu)) as engine:
            drive(engine)
        assert len(creates(emu)) == 1
    assert states(db) == {"succeeded": 8}
    assert results_per_request(db) == {f"c{i}": 1 for i in range(8)}


# -- Azure: no expiry ----------------------------------------------------------------------------


def test_azure_job_past_24_hours_is_polled_not_expired(db: str) -> None:
    with running(seed=17, time_scale=0, rate=5.5 / (30 * 3600)) as emu:
        enqueue(db, range(10), provider="azure")
        with engine_on(db, settings(emu)) as engine:
            engine.tick(time.time())
            (pid,) = batch_ids(db)
            emu.control.wait(pid, "in_progress")
            emu.control.advance(30 * 3600)  # 30 h: past expires_at, 5 of 10 run
            wait_done(emu, pid, 5)
            job = emu.control.batch(pid)["batch"]
            assert job["status"] == "in_progress" and job["expires_at"] < emu.control.now()
            seq = emu.control.calls()[-1]["seq"]
            t = time.time() + 30 * 3600
            for hour in range(12):  # half a day more of engine time
                engine.tick(t + hour * 3600)
            polls = [c for c in emu.control.calls(seq) if c["method"] == "GET"]
            assert len(polls) >= 10
            assert sql(db, "SELECT state, completed_count FROM batches") == [("in_progress", 5)]
            assert states(db) == {"submitted": 10}
            emu.control.set_config(rate=100_000)
            drive(engine, emu=emu, offset=42 * 3600)
        assert len(creates(emu)) == 1
    assert batch_sizes(db) == [10]
    assert states(db) == {"succeeded": 10}
    assert {v for v in counters(db).values()} == {(0, 0)}


# -- status and show tell the story ----------------------------------------------------------------


def test_status_and_show_say_why(sqlite_db: str) -> None:
    db = sqlite_db
    deadline = time.time() + 3 * 3600  # sooner than a batch may take
    enqueue(db, range(4), deadline=deadline)
    with running(seed=18) as emu:
        emu.control.set_config(request_failure_rate=1.0, request_failure_status=503)
        slow = RetryPolicy(base_seconds=600.0, max_seconds=1200.0)
        with engine_on(db, settings(emu, retry=slow)) as engine:
            drive(engine, until=lambda e: states(db) == {"retry_wait": 4})
    (not_before,) = sql(db, "SELECT not_before FROM requests WHERE custom_id = 'c0'")[0]
    shown = cli(db, "show", "c0")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "retry_wait" in out and "retry 2 of 3" in out and "http_503" in out
    when = datetime.fromtimestamp(float(not_before), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"next try   {when}" in out
    status = cli(db, "status")
    assert status.exit_code == 0, status.output
    assert "retry_wait" in status.stdout
    assert "deadlines: 0 missed, 4 at risk" in status.stdout
    data = orjson.loads(cli(db, "status", "--format", "json").stdout)
    assert data["deadlines"] == {"missed": 0, "at_risk": 4}
