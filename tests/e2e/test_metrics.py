"""`llmbatch worker --metrics-port`: /metrics, /healthz and /readyz on real stores, with the
emulator over real HTTP. Store figures are the same from every worker of one store; process
counters belong to the process; a standby is ready; a store that goes away is not."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import LLMBATCH, cli, fast_settings
from llmbatch import Queue, report
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.errors import ConfigError
from llmbatch.observe.server import MetricsServer
from llmbatch.store import open_store
from observe_helpers import get, names, ready, scrape, value

N = 24


def enqueue(db: str, n: int = N, queue: str = "nightly") -> None:
    items = [
        {
            "custom_id": f"m{i}",
            "body": {
                "model": "gpt-4o-mini",
                "max_tokens": 30,
                "messages": [{"role": "user", "content": f"classify review {i}"}],
            },
        }
        for i in range(n)
    ]
    with Queue(db, queue) as q:
        assert q.add_many(items).added == n


def wait_for(check, timeout: float = 30.0, every: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


@pytest.fixture
def emu() -> Iterator[object]:
    with running() as e:
        yield e


def serve(engine: Engine, db: str) -> MetricsServer:
    return MetricsServer(engine, open_store(db), open_store(db), port=0, max_age=0.2).start()


@pytest.mark.slow
def test_one_worker_counts_the_whole_lifecycle(db: str, emu: object) -> None:
    enqueue(db)
    engine = Engine(open_store(db), fast_settings(emu))
    server = serve(engine, db)
    url = server.url
    try:
        status, body = ready(url)
        assert status == 503 and body["role"] == "starting"  # no step yet
        before = scrape(url)
        assert value(before, "llmbatch_requests", queue="nightly", state="queued") == N
        assert value(before, "llmbatch_oldest_unfinished_request_age_seconds", queue="nightly") >= 0
        deadline = time.monotonic() + 60
        while engine.store.unfinished_count():
            server.on_tick(engine.tick(time.time()))
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = wait_for(
            lambda: (
                (s := scrape(url)) and value(s, "llmbatch_requests", state="succeeded") == N and s
            )
        )
        assert value(after, "llmbatch_requests", state="queued") == 0
        assert (
            "llmbatch_oldest_unfinished_request_age_seconds",
            frozenset({("queue", "nightly")}),
        ) not in after
        assert value(after, "llmbatch_tokens_total", queue="nightly", type="input") > 0
        assert value(after, "llmbatch_tokens_total", type="output") > 0
        batch = value(after, "llmbatch_cost_usd_total", tier="batch")
        real = value(after, "llmbatch_cost_usd_total", tier="realtime")
        assert 0 < batch < real
        lines = report.build(engine.store)  # what `llmbatch report` says, to the 1e-6 USD
        assert batch == pytest.approx(float(sum(ln.batch_usd for ln in lines)), abs=1e-6)
        assert real == pytest.approx(float(sum(ln.realtime_usd for ln in lines)), abs=1e-6)
        assert (
            value(after, "llmbatch_provider_call_seconds_count", provider="openai", call="submit")
            >= 1
        )
        assert value(after, "llmbatch_provider_call_seconds_count", call="poll") >= 1
        assert value(after, "llmbatch_turnaround_seconds_count") == N  # landed since it started
        assert value(after, "llmbatch_turnaround_seconds_bucket", le="+Inf") == N
        assert value(after, "llmbatch_lease_held") == 1
        assert value(after, "llmbatch_worker_ticks_total", role="serving") >= 1
        assert value(after, "llmbatch_events_total", kind="submitted") == 1
        assert value(after, "llmbatch_snapshot_seconds") > 0
        status, body = ready(url)
        assert status == 200, body
        assert body["role"] == "serving" and body["lease"]["held_by_this_worker"]
        assert body["store"] == "reachable"
        assert body["providers"]["openai"]["reachable"] is True
        assert body["last_successful_poll_age_s"] is not None
        assert get(url + "/healthz")[0] == 200
        assert get(url + "/nothing")[0] == 404
        # no batch or request ids in any label
        text = get(url + "/metrics")[1].decode()
        labels = set(re.findall(r'="([^"]*)"', text))
        batch_ids = {b["provider_batch_id"] for b in engine.store.batch_overview(50)}
        assert batch_ids and not labels & batch_ids
        assert not labels & {f"m{i}" for i in range(N)}
    finally:
        server.stop()
        engine.close()


@pytest.mark.slow
def test_provider_errors_are_counted_by_class(sqlite_db: str, emu) -> None:  # type: ignore[no-untyped-def]
    enqueue(sqlite_db, 4)
    emu.control.add_fault("batches.list", "503", count=50)
    engine = Engine(open_store(sqlite_db), fast_settings(emu))
    server = serve(engine, sqlite_db)
    try:
        for _ in range(3):
            server.on_tick(engine.tick(time.time()))
        s = scrape(server.url)
        errors = {ls: v for (n, ls), v in s.items() if n == "llmbatch_provider_errors_total"}
        assert errors, sorted(names(s))
        labels = dict(next(iter(errors)))
        assert labels["provider"] == "openai" and labels["call"] == "poll"  # the list failed
        assert labels["error_class"] and labels["error_class"] != "other"
        status, body = ready(server.url)
        assert status == 200  # a provider outage does not make the worker unready
        assert body["providers"]["openai"]["reachable"] is False
        assert body["providers"]["openai"]["last_error"]
        assert "sk-test" not in str(body)
    finally:
        server.stop()
        engine.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(db: str, emu, log: Path) -> tuple[subprocess.Popen[bytes], str]:  # type: ignore[no-untyped-def]
    env = {
        "OPENAI_BASE_URL": emu.base_url,
        "OPENAI_API_KEY": "sk-test-not-a-secret",
        "LLMBATCH_DB": db,
        "PATH": "/usr/bin:/bin",
    }
    out = log.open("wb")
    proc = subprocess.Popen(
        [LLMBATCH, "worker", "--metrics-port", "0", "--poll-interval", "0.2"],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    found = wait_for(lambda: re.search(rb"metrics at (http://\S+)/metrics", log.read_bytes()), 30)
    return proc, found.group(1).decode()


@pytest.mark.slow
def test_workers_on_one_postgres_store_agree(pg_dsn: str, emu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Journey 4: three machines' workers on one queue. Every worker's /metrics gives the same
    store figures; only the one serving counts provider calls; the standby is ready."""
    enqueue(pg_dsn, N)
    procs = []
    try:
        for i in range(2):
            procs.append(start_worker(pg_dsn, emu, tmp_path / f"w{i}.log"))
        urls = [u for _, u in procs]

        def settled() -> list:  # type: ignore[type-arg]
            got = [scrape(u) for u in urls]
            done = all(value(s, "llmbatch_requests", state="succeeded") == N for s in got)
            return got if done else []

        scrapes = wait_for(settled, 90, 0.5)
        store_figures = (
            "llmbatch_requests",
            "llmbatch_tokens_total",
            "llmbatch_cost_usd_total",
            "llmbatch_events_total",
            "llmbatch_lease_token",
        )
        for name in store_figures:
            a = {k: v for k, v in scrapes[0].items() if k[0] == name}
            b = {k: v for k, v in scrapes[1].items() if k[0] == name}
            assert a and a == b, name
        held = [value(s, "llmbatch_lease_held") for s in scrapes]
        assert sorted(held) == [0, 1]  # one holds the engine lease (the whole store's chores)
        other = 1 if held[0] == 1 else 0
        # both serve: the batches are shared out (each worker's share in its own figures)
        done = [value(s, "llmbatch_worker_done_total", what="results") for s in scrapes]
        assert sum(done) == N, done
        status, body = ready(urls[other])
        assert status == 200 and body["role"] == "serving", body
        assert not body["lease"]["held_by_this_worker"] and body["lease"]["holder"]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=30)


def test_a_store_that_goes_away_is_not_ready(pg_dsn: str, emu) -> None:  # type: ignore[no-untyped-def]
    enqueue(pg_dsn, 3)
    engine = Engine(open_store(pg_dsn), fast_settings(emu))
    server = serve(engine, pg_dsn)
    try:
        server.on_tick(engine.tick(time.time()))
        assert ready(server.url)[0] == 200
        name = pg_dsn.rsplit("/", 1)[1]
        with psycopg.connect(os.environ["LLMBATCH_TEST_PG"], autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        status, body = ready(server.url)
        assert status == 503 and body["store"].startswith("unreachable"), body
        assert not body["ready"]
        s = wait_for(lambda: (x := scrape(server.url)) and value(x, "llmbatch_store_up") == 0 and x)
        assert value(s, "llmbatch_requests") == 3  # the last figures read, said to be stale
        assert get(server.url + "/healthz")[0] == 200  # alive: restarting would not help
    finally:
        server.stop()
        engine.close()


def test_port_in_use_is_one_line_and_exit_2(sqlite_db: str) -> None:
    enqueue(sqlite_db, 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("--db", sqlite_db, "worker", "--metrics-port", str(port))
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.output


def test_without_prometheus_client_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmbatch.observe.metrics import require

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"pip install 'llmbatch\[metrics\]'"):
        require()


def test_config_file_sets_the_port(tmp_path: Path, sqlite_db: str) -> None:
    enqueue(sqlite_db, 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = tmp_path / "llmbatch.toml"
        cfg.write_text(f"[worker]\nmetrics_port = {port}\n")
        result = cli("--config", str(cfg), "--db", sqlite_db, "worker")
    assert result.exit_code == 2 and "in use" in result.stderr, result.output


def test_deadlines_missed_and_at_risk_per_queue(sqlite_db: str) -> None:
    now = time.time()
    with Queue(sqlite_db, "due") as q:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
        q.add_many([{"custom_id": "late", "body": body}], deadline=now - 60)
        q.add_many([{"custom_id": f"soon{i}", "body": body} for i in range(2)], deadline=now + 3600)
        q.add_many([{"custom_id": "later", "body": body}], deadline=now + 3 * 86400)
    engine = Engine(open_store(sqlite_db))
    server = serve(engine, sqlite_db)
    try:
        s = scrape(server.url)
        assert value(s, "llmbatch_deadline_requests", queue="due", risk="missed") == 1
        assert value(s, "llmbatch_deadline_requests", queue="due", risk="at_risk") == 2
    finally:
        server.stop()
        engine.close()


def test_a_metrics_token_guards_metrics_and_leaves_the_health_checks_open(
    sqlite_db: str,
) -> None:
    import urllib.error
    import urllib.request

    enqueue(sqlite_db, 1)
    engine = Engine(open_store(sqlite_db))
    server = MetricsServer(
        engine, open_store(sqlite_db), open_store(sqlite_db), port=0, token="s3cret-token"
    ).start()

    def scrape_with(authorization: str | None) -> tuple[int, str, str]:
        req = urllib.request.Request(server.url + "/metrics")
        if authorization is not None:
            req.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode(), ""
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers.get("www-authenticate", "")

    try:
        for refused in (
            None,
            "Bearer wrong",
            "s3cret-token",
            "Bearer s3cret-token-and-more",
            "Basic s3cret-token",
        ):
            status, body, challenge = scrape_with(refused)
            assert status == 401 and challenge.startswith("Bearer"), (refused, status)
            assert "LLMBATCH_METRICS_TOKEN" in body and "s3cret" not in body
        status, body, _ = scrape_with("Bearer s3cret-token")
        assert status == 200 and "llmbatch_requests" in body
        assert get(server.url + "/healthz")[0] == 200
        assert ready(server.url)[0] in (200, 503)  # answered, not refused
    finally:
        server.stop()
        engine.close()
