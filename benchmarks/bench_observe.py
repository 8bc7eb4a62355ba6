"""What watching costs: /metrics latency and the dashboard's first load on a big store, and
the share of a worker's CPU that serving metrics takes.

    python benchmarks/bench_observe.py [--requests N] [--small] [--pg DSN] [--e2e N]

1. A store of N requests (default 1,000,000) in mixed states over 8 queues and 3 models, with
   results and cost totals, written with plain SQL (SQLite, and PostgreSQL when --pg,
   LLMBATCH_BENCH_PG or LLMBATCH_TEST_PG names a server). On each: the cost of one read of the
   store's figures (`snapshot_s`), 300 scrapes of /metrics while the figures are read again
   in the background as a worker does (one read started with the scrapes; p50 and p99 over
   20 s: the floor is p99 < 50 ms), and the dashboard's first load as a browser does it
   once `llmbatch dashboard` says it serves (it reads the figures once before): the page,
   its scripts and styles, /api/overview and /api/costs (floor < 1 s).
2. bench_end_to_end's drain of --e2e requests (default 100,000) on SQLite, three paired runs
   with and without `--metrics-port` (scraped every 5 s): the worker's CPU seconds each
   way; the median extra share is the floor's figure (<= 5 %).

--small: 10,000 requests, 100 scrapes over 3 s, and 3 pairs of 2,000 (what CI runs, under a
minute). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_end_to_end as e2e
from gen_requests import lines
from llmbatch.engine import Engine
from llmbatch.observe.server import MetricsServer
from llmbatch.store import open_store
from llmbatch.worker import drain

STATES = ("succeeded",) * 6 + ("queued", "submitted", "failed", "held")
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
# What the browser fetches before the page shows figures.
PAGE = (
    "/",
    "/static/dashboard.css",
    "/static/vendor/uplot/uPlot.min.css",
    "/static/vendor/uplot/uPlot.iife.min.js",
    "/static/dashboard.js",
    "/api/overview",
    "/api/costs",
)


def fill_sqlite(path: str, n: int) -> None:
    open_store(path).close()
    now = time.time()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO imports (id, queue, source, state, owner, low_water, lines, added, "
        "started_at, heartbeat_at, finished_at) VALUES (1, 'q0', 'bench', 'committed', 'x', 0, "
        "?, ?, ?, ?, ?)",
        (n, n, now, now, now),
    )
    states = " ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(STATES))
    models = " ".join(f"WHEN {i} THEN '{m}'" for i, m in enumerate(MODELS))
    db.execute(
        f"""WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})
        INSERT INTO requests (queue, custom_id, import_id, line, provider, endpoint, model,
            body_hash, state, text_chars, text_bytes, attempts, created_at, updated_at)
        SELECT 'q' || (i % 8), 'r' || i, 1, i, 'openai', '/v1/chat/completions',
            CASE i % 3 {models} END, X'00', CASE i % 10 {states} END, 20, 20,
            1 + (i % 7 = 0), {now} - (i % 86400), {now}
        FROM s"""
    )
    db.execute("INSERT INTO request_bodies (hash, body) VALUES (X'00', X'7b7d')")
    _results(db, now, n, sqlite=True)
    db.commit()
    db.close()


def fill_pg(dsn: str, n: int) -> None:
    import psycopg

    open_store(dsn).close()
    now = time.time()
    states = " ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(STATES))
    models = " ".join(f"WHEN {i} THEN '{m}'" for i, m in enumerate(MODELS))
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(
            "INSERT INTO imports (id, queue, source, state, owner, low_water, lines, added, "
            "started_at, heartbeat_at, finished_at) VALUES (1, 'q0', 'bench', 'committed', 'x', "
            "0, %s, %s, %s, %s, %s)",
            (n, n, now, now, now),
        )
        db.execute(
            f"""INSERT INTO requests (queue, custom_id, import_id, line, provider, endpoint,
                model, body_hash, state, text_chars, text_bytes, attempts, created_at,
                updated_at)
            SELECT 'q' || (i % 8), 'r' || i, 1, i, 'openai', '/v1/chat/completions',
                CASE i % 3 {models} END, '\\x00'::bytea,
                CASE i % 10 {states} END, 20, 20, 1 + (i % 7 = 0)::int, {now} - (i % 86400), {now}
            FROM generate_series(1, {n}) AS i"""
        )
        db.execute("INSERT INTO request_bodies (hash, body) VALUES ('\\x00', '\\x7b7d')")
        _results(db, now, n, sqlite=False)
        db.execute("ANALYZE")


def _results(db: Any, now: float, n: int, *, sqlite: bool) -> None:
    """One batch, an attempt and a result for each succeeded request, and cost totals."""
    db.execute(
        "INSERT INTO batches (id, provider, endpoint, model, state, request_count, created_at, "
        f"updated_at) VALUES (1, 'openai', '/v1/chat/completions', 'gpt-4o-mini', 'ingested', "
        f"{n}, {now}, {now})"
    )
    db.execute(
        "INSERT INTO attempts (id, request_id, batch_id, line, state, created_at) "
        f"SELECT id, id, 1, id, 'succeeded', {now} FROM requests WHERE state = 'succeeded'"
    )
    db.execute(
        "INSERT INTO results (attempt_id, request_id, status_code, input_tokens, output_tokens, "
        f"day, created_at) SELECT id, id, 200, 40, 5, {int(now // 86400)}, {now} "
        "FROM requests WHERE state = 'succeeded'"
    )
    for d in range(30):
        for q in range(8):
            for m in MODELS:
                db.execute(
                    "INSERT INTO cost_totals VALUES "
                    f"({int(now // 86400) - d}, 'q{q}', 'openai', '{m}', 0, "
                    "'/v1/chat/completions', 1000, 990, 40000, 0, 0, 0, 5000, 0)"
                )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return bytes(r.read())


def fetch(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return time.perf_counter() - t


def on_store(db: str, scrapes: int, window: float) -> dict[str, Any]:
    store = open_store(db)
    t = time.perf_counter()
    observed = store.observe(time.time(), time.time() + 86400)
    snapshot_s = time.perf_counter() - t
    store.close()
    # /metrics over `window` seconds, while the figures are read again in the background
    # (at once at the start, then every 15 s)
    engine = Engine(open_store(db))
    server = MetricsServer(engine, open_store(db), open_store(db), port=0).start()
    try:
        waited = time.perf_counter()
        while b"llmbatch_snapshot_ready 1.0" not in read(server.url + "/metrics"):
            time.sleep(0.2)  # the first read of the figures (started when the worker starts)
        first_read_s = time.perf_counter() - waited
        # a read again as the scrapes start, in the keeper's own way (its thread's priority
        # included): on a big store the pacing would otherwise put the next one past the window
        threading.Thread(target=server.cache._background_once, daemon=True).start()
        times = []
        for _ in range(scrapes):
            times.append(fetch(server.url + "/metrics"))
            time.sleep(window / scrapes)
    finally:
        server.stop()
        engine.close()
    times.sort()
    first_load = dashboard_first_load(db)
    return {
        "requests": sum(g.n for g in observed.requests),
        "snapshot_s": round(snapshot_s, 3),
        "worker_first_read_s": round(first_read_s, 3),
        "metrics_p50_ms": round(statistics.median(times) * 1000, 1),
        "metrics_p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 1),
        "dashboard_first_load_s": round(first_load, 3),
    }


def dashboard_first_load(db: str) -> float:
    """The page and every request it makes before it shows figures, on a fresh dashboard."""
    import uvicorn

    from llmbatch.observe.dashboard import create_app

    store = open_store(db, create=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = create_app(store)
    app.state.views.figures.get()  # as `llmbatch dashboard` does before it says it serves
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        t = time.perf_counter()
        for path in PAGE:
            fetch(base + path)
        return time.perf_counter() - t
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def metrics_share(n: int, pairs: int, tmp: Path) -> dict[str, Any]:
    """Worker CPU seconds draining n requests, with and without a metrics server."""
    os.environ.setdefault(e2e.KEY_ENV, "bench-key")
    path = tmp / "e2e.jsonl"
    with open(path, "wb") as f:
        for line in lines(n):
            f.write(line)
    emulator, url = e2e.start_emulator(tmp / "emulator")
    runs: dict[str, list[float]] = {"off": [], "on": []}
    try:
        # pair -1 warms imports, pricing data and the emulator up; it is not counted
        for i in range(-1, pairs):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                db = str(tmp / f"e2e-{i}-{mode}.db")
                e2e.enqueue(db, path)
                engine = Engine(open_store(db), e2e.settings(url))
                server = None
                stop = threading.Event()
                if mode == "on":
                    server = MetricsServer(engine, open_store(db), open_store(db), port=0)
                    server.start()
                    scraper = threading.Thread(target=_scrape, args=(server.url, stop))
                    scraper.start()
                cpu = e2e.cpu_s()
                on_tick = server.on_tick if server else None
                drained = drain(engine, queue="bench", timeout=1800, on_tick=on_tick)
                used = e2e.cpu_s() - cpu
                stop.set()
                if server is not None:
                    server.stop()
                engine.close()
                assert drained.finished
                if i >= 0:
                    runs[mode].append(used)
    finally:
        emulator.terminate()
        emulator.wait()
    shares = [(on - off) / off * 100 for on, off in zip(runs["on"], runs["off"], strict=True)]
    return {
        "requests": n,
        "worker_cpu_s_off": [round(v, 2) for v in runs["off"]],
        "worker_cpu_s_on": [round(v, 2) for v in runs["on"]],
        "metrics_cpu_share_pct_median": round(statistics.median(shares), 1),
    }


def _scrape(url: str, stop: threading.Event) -> None:
    while not stop.wait(5.0):
        fetch(url + "/metrics")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--e2e", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="10,000 requests, pairs of 2,000")
    ap.add_argument(
        "--pg", default=os.environ.get("LLMBATCH_BENCH_PG") or os.environ.get("LLMBATCH_TEST_PG")
    )
    args = ap.parse_args()
    n, e2e_n = (10_000, 2_000) if args.small else (args.requests, args.e2e)
    scrapes, window = (100, 3.0) if args.small else (300, 20.0)
    out: dict[str, Any] = {"bench": "observe", "small": args.small}
    with tempfile.TemporaryDirectory(prefix="llmbatch-observe-") as folder:
        tmp = Path(folder)
        db = str(tmp / "big.db")
        t = time.perf_counter()
        fill_sqlite(db, n)
        out["sqlite"] = {
            "fill_s": round(time.perf_counter() - t, 1),
            **on_store(db, scrapes, window),
        }
        if args.pg:
            name, dsn = e2e.pg_database(args.pg)
            try:
                t = time.perf_counter()
                fill_pg(dsn, n)
                out["postgres"] = {
                    "fill_s": round(time.perf_counter() - t, 1),
                    **on_store(dsn, scrapes, window),
                }
            finally:
                e2e.drop_database(args.pg, name)
        out["worker"] = metrics_share(e2e_n, args.pairs, tmp)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
