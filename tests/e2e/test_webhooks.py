"""Webhooks against a real HTTP receiver that verifies every signature: a signed POST per
ingested batch and per finished queue, delivered at least once from the outbox (a receiver
that fails gets it again later, and so does one whose worker was killed mid-delivery),
never blocking the engine, the secret nowhere but the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import E2E_KEY_ENV, cli, fast_settings, request_states, sql
from llmbatch import Queue
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.webhooks import WebhookSettings
from receiver import Receiver

SECRET_ENV = "LLMBATCH_TEST_WEBHOOK_SECRET"
SECRET = "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldC1uZXZlci1zdG9yZWQ="  # base64 of a test phrase


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def enqueue(db: str, n: int, queue: str = "q") -> None:
    with Queue(db, queue) as q:
        q.add_many(
            [
                {
                    "custom_id": f"r{i}",
                    "body": {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"{i}"}],
                    },
                }
                for i in range(n)
            ]
        )


def tick_until(engine: Engine, done: Any, seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        engine.tick(time.time())
        time.sleep(0.02)


def outbox(db: str) -> list[tuple[Any, ...]]:
    return sql(db, "SELECT event_id, kind, tries, delivered_at, last_error FROM outbox ORDER BY id")


def test_a_signed_event_per_ingested_batch_and_per_finished_queue(db: str) -> None:
    enqueue(db, 25, "reviews")
    enqueue(db, 5, "titles")
    with Receiver(SECRET) as rx, running(seed=11) as emu:
        hooks = WebhookSettings(url=rx.url, secret_env=SECRET_ENV)
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=10, webhooks=hooks))
        try:
            tick_until(
                engine,
                lambda: (
                    not engine.store.unfinished_count()
                    and all(r[3] is not None for r in outbox(db))
                ),
            )
        finally:
            engine.close()
    assert all(d.error is None for d in rx.deliveries), [d.error for d in rx.deliveries]
    got = rx.verified()
    batches = sql(db, "SELECT id, provider_batch_id, ingested_at FROM batches ORDER BY id")
    kinds = sorted(p["type"] for p in got.values())
    assert kinds == ["batch.ingested"] * len(batches) + ["queue.finished"] * 2
    for b_id, pid, _at in batches:
        p = next(
            p
            for p in got.values()
            if p["type"] == "batch.ingested" and p["data"]["batch"]["id"] == b_id
        )
        assert p["version"] == 1 and p["data"]["batch"]["provider_batch_id"] == pid
        assert p["data"]["archive"] is None
    finished = {
        p["data"]["queue"]: p["data"] for p in got.values() if p["type"] == "queue.finished"
    }
    assert (
        finished["reviews"]["counts"] == {"succeeded": 25} and finished["titles"]["requests"] == 5
    )
    # delivered within a second of each batch's ingest
    for d in rx.deliveries:
        assert d.payload is not None
        created = d.payload["created_at"]
        assert created and d.at - time.time() < 1
    assert SECRET not in str(sql(db, "SELECT * FROM outbox")) + str(sql(db, "SELECT * FROM events"))


def test_a_failing_receiver_gets_each_event_again_and_blocks_nothing(db: str) -> None:
    enqueue(db, 20)
    with Receiver(SECRET, status=500) as rx, running(seed=12) as emu:
        hooks = WebhookSettings(url=rx.url, secret_env=SECRET_ENV, backoff_seconds=0.1, timeout=1)
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=10, webhooks=hooks))
        try:
            tick_until(
                engine,
                lambda: (
                    not engine.store.unfinished_count()
                    and len(outbox(db)) == 3
                    and all(r[2] >= 2 for r in outbox(db))
                ),
            )
            assert request_states(db) == {"succeeded": 20}  # the engine went on regardless
            rows = outbox(db)
            assert all(r[3] is None and "answered 500" in r[4] for r in rows), rows
            said = cli("--db", db, "status").output
            assert "webhooks: 3 events not delivered yet, next try in" in said, said
            rx.status = 200
            tick_until(engine, lambda: all(r[3] is not None for r in outbox(db)))
        finally:
            engine.close()
    ids = [d.event_id for d in rx.deliveries]
    assert len(set(ids)) == 3 and len(ids) > 3  # at least once each, some more than once
    assert len(rx.verified()) == 3


def test_a_slow_receiver_does_not_hold_the_engine(db: str) -> None:
    enqueue(db, 10)
    hold = threading.Event()
    with Receiver(SECRET, hold=hold) as rx, running(seed=13) as emu:
        hooks = WebhookSettings(url=rx.url, secret_env=SECRET_ENV, timeout=0.5, backoff_seconds=0.1)
        engine = Engine(open_store(db), fast_settings(emu, webhooks=hooks))
        try:
            started = time.monotonic()
            tick_until(
                engine,
                lambda: (
                    not engine.store.unfinished_count() and outbox(db) and outbox(db)[0][2] >= 1
                ),
            )
            assert time.monotonic() - started < 15
            assert "no answer" in outbox(db)[0][4]
            hold.set()
            rx.hold = None
            tick_until(engine, lambda: all(r[3] is not None for r in outbox(db)))
        finally:
            engine.close()
    assert len(rx.verified()) == 2  # the batch, and its queue finished


def llmbatch_bin() -> str:
    return str(Path(sys.executable).parent / "llmbatch")


@pytest.mark.slow
def test_an_event_whose_worker_was_killed_mid_delivery_is_delivered_again(
    sqlite_db: str, tmp_path: Path
) -> None:
    db = sqlite_db
    enqueue(db, 10)
    hold = threading.Event()
    with Receiver(SECRET, hold=hold) as rx, running(seed=14) as emu:
        config = tmp_path / "llmbatch.toml"
        config.write_text(
            "[engine]\npoll_interval = 0.05\nmax_poll_interval = 0.2\nsettle_seconds = 0.5\n"
            "submit_timeout = 2.0\nlease_ttl = 5\n"
            f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
            f'[webhooks]\nurl = "{rx.url}"\nsecret_env = "{SECRET_ENV}"\ntimeout = 20\n'
        )
        env = {**os.environ, "LLMBATCH_DB": db, "LLMBATCH_CONFIG": str(config)}
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            w = subprocess.Popen(
                [llmbatch_bin(), "worker", "--interval", "0.05"], env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                assert rx.entered.wait(40), log.read_text()
                w.send_signal(signal.SIGKILL)  # mid-delivery: the receiver got it, no answer
                w.wait(10)
            finally:
                if w.poll() is None:
                    w.kill()
        hold.set()
        rx.hold = None
        first = rx.deliveries[0].event_id
        assert outbox(db)[0][3] is None  # not marked delivered
        with open(log, "ab") as out:
            w = subprocess.Popen(
                [llmbatch_bin(), "worker", "--interval", "0.05"], env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 40
                while not (outbox(db) and all(r[3] is not None for r in outbox(db))):
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            finally:
                w.send_signal(signal.SIGTERM)
                w.wait(20)
    ids = [d.event_id for d in rx.deliveries]
    assert ids.count(first) >= 2  # delivered again, with the same id: the receiver dedupes
    assert all(d.error is None for d in rx.deliveries)
    assert set(rx.verified()) == {r[0] for r in outbox(db)}
    assert SECRET not in log.read_text()


@pytest.mark.parametrize(
    ("table", "said"),
    [
        (
            'url = "ftp://example.com/x"\nsecret_env = "' + SECRET_ENV + '"',
            "[webhooks] url must be an http:// or https:// URL",
        ),
        (
            'url = "http://127.0.0.1:9/x"\nsecret_env = "LLMBATCH_UNSET_VAR_X"',
            "[webhooks] secret_env: the environment variable LLMBATCH_UNSET_VAR_X is not set",
        ),
        ('url = "http://127.0.0.1:9/x"', "[webhooks] needs secret_env"),
        (
            'url = "http://127.0.0.1:9/x"\nsecret_env = "' + SECRET_ENV + '"\nsecret = "x"',
            "holds a secret by value",
        ),
        (
            'url = "http://127.0.0.1:9/x"\nsecret_env = "' + SECRET_ENV + '"\ntimeout = "5"',
            "[webhooks] timeout must be a number above 0",
        ),
    ],
)
def test_bad_webhook_settings_are_one_clear_error_and_touch_nothing(
    sqlite_db: str, tmp_path: Path, table: str, said: str
) -> None:
    enqueue(sqlite_db, 2)
    config = tmp_path / "llmbatch.toml"
    config.write_text("[webhooks]\n" + table + "\n")
    r = cli("--config", str(config), "--db", sqlite_db, "run")
    assert r.exit_code == 2, r.output
    assert said in r.output and r.output.count("\n") == 1, r.output
    assert SECRET not in r.output
    assert request_states(sqlite_db) == {"queued": 2}
