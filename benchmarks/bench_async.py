"""10,000 concurrent `await client.chat.completions.create(...)` calls through AsyncBatchClient.

    python benchmarks/bench_async.py [--calls N] [--small] [--pg DSN]

The emulator runs as a separate process; this process holds the calls, their client and the
engine (`client.running()`), so its peak RSS is the client's and the engine's. Measures:
seconds from the first call until every call is durably enqueued (`enqueue_s`); for each
batch, seconds from when it was seen ingested (a thread watching `batches.state` on a
connection of its own every 20 ms: the engine stamps `ingested_at` with its tick's start,
before the results commit) until the last of its calls resolved (`resolve_after_ingest_s`,
the worst batch), and from the first result visible to the last call resolved (stricter:
the results of a large batch commit in chunks before it is marked ingested); imports made;
the store statements the watcher ran; peak RSS. Prints one JSON line.

Floors (issue 25; 2 cores): 10,000 calls enqueued in < 2 s, all resolved < 2 s after their
batch is ingested, RSS < 300 MB. `--small` (CI) runs 2,000 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from llmbatch import AsyncBatchClient, EngineSettings
from procs import EmulatorProcess, own_database, rows

KEY_ENV = "LLMBATCH_BENCH_KEY"


def settings(url: str) -> EngineSettings:
    providers = {"openai": {"base_url": url + "/v1", "api_key_env": KEY_ENV}}
    return EngineSettings(
        poll_interval=0.2, max_poll_interval=0.5, first_poll=0.1, settle_seconds=5,
        providers=providers,
    )  # fmt: skip


async def run(db: str, url: str, n: int) -> dict[str, Any]:
    resolved_at: dict[str, float] = {}
    seen = IngestWatch(db)
    async with (
        AsyncBatchClient(db, queue="bench", watch_interval=0.25) as client,
        client.running(settings(url), pack_delay=0.2),
    ):
        seen.start()  # the client made the store
        t0 = time.time()
        calls = [
            client.chat.completions.create(
                model="gpt-4o-mini",
                max_tokens=16,
                messages=[{"role": "user", "content": f"Tag product #{i}: a red wool scarf"}],
                custom_id=f"p{i:06d}",
            )
            for i in range(n)
        ]
        await asyncio.gather(*(c.enqueued() for c in calls))
        enqueue_s = time.time() - t0

        async def one(call: Any) -> None:
            await call
            resolved_at[call.custom_id] = time.time()

        await asyncio.wait_for(asyncio.gather(*(one(c) for c in calls)), 600)
        polls = client.calls.polls
    ingested = seen.stop()
    latest: dict[int, float] = {}
    imports = set()
    for cid, batch, import_id in rows(
        db,
        "SELECT r.custom_id, a.batch_id, r.import_id FROM requests r "
        "JOIN attempts a ON a.request_id = r.id WHERE r.queue = 'bench'",
    ):
        latest[batch] = max(latest.get(batch, 0.0), resolved_at[cid])
        imports.add(import_id)
    worst = max(latest[b] - ingested[b] for b in latest)
    return {
        "calls": n,
        "enqueue_s": round(enqueue_s, 3),
        "resolve_after_ingest_s": round(worst, 3),
        "resolve_after_first_result_s": round(
            max(resolved_at.values()) - (seen.first_result or 0), 3
        ),
        "batches": len(ingested),
        "imports": len(imports),
        "watch_statements": polls,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


class IngestWatch(threading.Thread):
    """When each batch was first seen ingested, polled every 20 ms on a connection of its own."""

    def __init__(self, db: str) -> None:
        super().__init__(daemon=True)
        self.db, self.seen, self.done = db, dict[int, float](), threading.Event()
        self.first_result: float | None = None  # when any result was first visible

    def run(self) -> None:
        statement = "SELECT id FROM batches WHERE state = 'ingested'"
        if self.db.startswith("postgresql://"):
            import psycopg

            conn: Any = psycopg.connect(self.db, autocommit=True)
        else:
            conn = sqlite3.connect(self.db, timeout=30)
        try:
            while not self.done.wait(0.02):
                for (batch,) in conn.execute(statement).fetchall():
                    self.seen.setdefault(int(batch), time.time())
                if (
                    self.first_result is None
                    and conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                ):
                    self.first_result = time.time()
        finally:
            conn.close()

    def stop(self) -> dict[int, float]:
        self.done.set()
        self.join()
        return self.seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--small", action="store_true", help="2,000 calls (CI)")
    ap.add_argument("--pg", help="an admin DSN: run on PostgreSQL instead of SQLite")
    args = ap.parse_args()
    n = 2_000 if args.small else args.calls
    os.environ[KEY_ENV] = "sk-bench-not-a-secret"
    with tempfile.TemporaryDirectory(prefix="llmbatch-bench-async-") as tmp:
        emu = EmulatorProcess(Path(tmp), seed=7)
        emu.start()
        try:
            if args.pg:
                with own_database(args.pg) as dsn:
                    figures = asyncio.run(run(dsn, emu.url, n))
            else:
                figures = asyncio.run(run(str(Path(tmp) / "bench.db"), emu.url, n))
        finally:
            emu.stop()
    figures["store"] = "postgres" if args.pg else "sqlite"
    figures["floors_met"] = (
        figures["enqueue_s"] < 2
        and figures["resolve_after_ingest_s"] < 2
        and figures["peak_rss_mb"] < 300
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
