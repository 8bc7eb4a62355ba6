"""llmbatch.contrib.celery with a real Celery worker and beat on the machine's Redis
(127.0.0.1:6379; `.ci/run` makes sure it answers): beat's ticks drain a queue enqueued by a
task, a burst of overlapping ticks creates nothing twice, the report task reads the costs."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import E2E_KEY_ENV, jsonl, line, results_per_request, sql
from llmbatch import Queue
from llmbatch.emulator.server import RunningEmulator, running

redis = pytest.importorskip("redis")
celery = pytest.importorskip("celery")

BROKER = os.environ.get("LLMBATCH_TEST_REDIS", "redis://127.0.0.1:6379/0")

APP = """
import os
from celery import Celery
from llmbatch.contrib.celery import setup

app = Celery("llmbatch_test", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BROKER"])
app.conf.task_default_queue = os.environ["TEST_QUEUE"]
# every key this test makes (queues, kombu's unacked hash, results) under its own prefix
app.conf.broker_transport_options = {"global_keyprefix": os.environ["TEST_QUEUE"] + ":"}
app.conf.result_backend_transport_options = {"global_keyprefix": os.environ["TEST_QUEUE"] + ":"}
app.conf.result_expires = 600
app.conf.worker_hijack_root_logger = False
tasks = setup(app, tick_every=float(os.environ["TEST_TICK"]))
"""


@pytest.fixture(scope="module")
def broker() -> str:
    try:
        redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Celery tests: Redis does not answer at {BROKER}")
        pytest.skip(f"Celery tests need Redis at {BROKER} (LLMBATCH_TEST_REDIS)")
    return BROKER


@pytest.fixture
def celery_env(tmp_path: Path, broker: str) -> Iterator[tuple[dict[str, str], RunningEmulator]]:
    (tmp_path / "celery_app.py").write_text(APP)
    with running(time_scale=1000.0) as emu:
        config = tmp_path / "llmbatch.toml"
        config.write_text(
            "[engine]\npoll_interval = 0.1\nmax_poll_interval = 0.2\nfirst_poll = 0.05\n"
            f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
        )
        queue = f"llmbatch-test-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "TEST_BROKER": broker, "TEST_QUEUE": queue, "TEST_TICK": "0.5",
               "LLMBATCH_DB": str(tmp_path / "jobs.db"), "LLMBATCH_CONFIG": str(config),
               "PYTHONPATH": str(tmp_path), E2E_KEY_ENV: "sk-test-not-a-secret"}  # fmt: skip
        yield env, emu
        r = redis.Redis.from_url(broker)
        # kombu names its binding sets after the queue, outside the prefix
        for key in r.scan_iter(match=f"*{queue}*"):
            r.delete(key)


def start(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{args[0]}.log", "wb")  # noqa: SIM115 - the child writes it
    celery_bin = str(Path(sys.executable).parent / "celery")
    return subprocess.Popen(
        [celery_bin, "-A", "celery_app", *args, "--loglevel=INFO"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client_app(env: dict[str, str]) -> Any:
    app = celery.Celery(
        "llmbatch_test_client", broker=env["TEST_BROKER"], backend=env["TEST_BROKER"]
    )
    app.conf.task_default_queue = env["TEST_QUEUE"]
    prefixed = {"global_keyprefix": env["TEST_QUEUE"] + ":"}
    app.conf.broker_transport_options = prefixed
    app.conf.result_backend_transport_options = prefixed
    return app


@pytest.mark.slow
def test_a_celery_worker_and_beat_drain_a_queue_and_overlapping_ticks_send_nothing_twice(
    celery_env: tuple[dict[str, str], RunningEmulator], tmp_path: Path
) -> None:
    env, emu = celery_env
    db = env["LLMBATCH_DB"]
    requests, more = tmp_path / "nightly.jsonl", tmp_path / "more.jsonl"
    requests.write_bytes(jsonl(*(line(f"r{i}", f"review {i}") for i in range(30))))
    queue = env["TEST_QUEUE"]  # also the worker's node name: two runs on one host never meet
    worker = start(env, tmp_path, "worker", "--concurrency=2", "-Q", queue, "-n", f"{queue}@%h")
    beat = start(env, tmp_path, "beat", "--schedule", str(tmp_path / "beat-schedule"))
    try:
        app = client_app(env)
        done = app.send_task(
            "llmbatch.enqueue_file", args=[str(requests)], kwargs={"queue": "nightly"}
        )
        assert done.get(timeout=60)["added"] == 30
        wait_drained(db, "nightly")  # by beat's ticks alone
        # more work, and a burst of ticks beside beat's, two at a time: the lease lets one
        # act; the others find it held and do nothing
        more.write_bytes(jsonl(*(line(f"m{i}", f"more {i}") for i in range(30))))
        app.send_task("llmbatch.enqueue_file", args=[str(more)], kwargs={"queue": "nightly"}).get(
            timeout=60
        )
        reports = [t.get(timeout=60) for t in [app.send_task("llmbatch.tick") for _ in range(8)]]
        wait_drained(db, "nightly")
        report = app.send_task("llmbatch.report", kwargs={"include_today": True}).get(timeout=60)
    finally:
        stop(beat)
        stop(worker)
    assert set(results_per_request(db).values()) == {1} and len(results_per_request(db)) == 60
    creates = [
        c for c in emu.control.calls() if (c["method"], c["path"]) == ("POST", "/v1/batches")
    ]
    assert len(creates) == len(
        sql(db, "SELECT id FROM batches WHERE provider_batch_id IS NOT NULL")
    )
    assert report["total"]["requests"] == 60
    assert len(reports) == 8
    assert "Sending due task llmbatch.tick" in (tmp_path / "beat.log").read_text()


def wait_drained(db: str, queue: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    with Queue(db, queue) as q:
        while q.store.unfinished_count(queue) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert q.store.unfinished_count(queue) == 0, "the ticks did not drain the queue"


def test_setup_schedules_the_tick_and_report_and_raises_the_visibility_timeout() -> None:
    from llmbatch.contrib.celery import setup

    app = celery.Celery("t", broker="memory://")
    app.conf.broker_transport_options = {"visibility_timeout": 600}
    tasks = setup(app, db="x.db")
    schedule = app.conf.beat_schedule
    assert schedule["llmbatch.tick"]["schedule"] == 300.0
    assert schedule["llmbatch.tick"]["options"] == {"expires": 300.0}
    assert schedule["llmbatch.report"]["task"] == "llmbatch.report"
    assert app.conf.broker_transport_options["visibility_timeout"] == 7200
    assert tasks.tick.name == "llmbatch.tick" and tasks.tick.acks_late
    assert {"llmbatch.tick", "llmbatch.enqueue_file", "llmbatch.report"} <= set(app.tasks)


def test_without_celery_the_import_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "celery", None)
    monkeypatch.delitem(sys.modules, "llmbatch.contrib.celery", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'llmbatch\[celery\]'"):
        importlib.import_module("llmbatch.contrib.celery")
