"""Many workers on one queue: 4 processes on one PostgreSQL database, 2 on one SQLite file.

Prints one JSON line with a figure per store: requests, workers, intents, uploads and
creates (from the emulator's call log), the most uploaded files and created batches any
attempt id appears in, max creates per intent, lost, duplicated, lease holders seen, the
"database is locked" lines and tracebacks in the worker logs, seconds. Exit status 1 if
any attempt id is in two uploaded files or two created batches, any intent was created
twice, any request lost or duplicated, or any log says "database is locked".

    python benchmarks/bench_workers.py --small             # CI: 5,000 requests a store
    python benchmarks/bench_workers.py                     # 20,000 requests a store

Real `llmbatch worker` processes against the emulator in its own process. The requests are
enqueued while the workers run (in waves), uploads and creates are answered a little late
(after doing the work) so submissions spread over many ticks, and a third of the way the
worker holding the engine lease is SIGKILLed and a fresh one started: another must take
the work over mid-protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from llmbatch.store import open_store
from procs import (
    EmulatorProcess,
    audit,
    enqueue,
    own_database,
    rows,
    scan_logs,
    start_worker,
    stop_worker,
    unfinished,
    wait_ready,
    write_config,
)  # fmt: skip


def holder(db: str) -> str | None:
    try:
        got = rows(db, "SELECT holder FROM leases WHERE name = 'engine'")
    except Exception:  # not migrated yet
        return None
    return str(got[0][0]) if got else None


def race(db: str, workers: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    emu = EmulatorProcess(work, args.seed)
    emu.start()
    try:
        emu.control.set_config(rate=args.rate)
        # slow answers spread the submissions over several ticks (and workers)
        emu.control.add_fault("files.create", "latency", mode="after", seconds=0.05)
        emu.control.add_fault("batches.create", "latency", mode="after", seconds=0.05)
        open_store(db).close()  # migrated once, before the workers start
        config = write_config(work / "llmbatch.toml", emu.url + "/v1", max_batch_requests=250)
        logs = [work / f"worker-{i}.log" for i in range(workers)]
        procs = [start_worker(db, config, log) for log in logs]
        holders: set[str] = set()
        waves = 10
        size = -(-args.requests // waves)

        def feed() -> None:
            for start in range(0, args.requests, size):
                enqueue(db, min(size, args.requests - start), start=start)
                time.sleep(0.3)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        killed = False
        deadline = time.monotonic() + args.timeout
        drained = False
        try:
            while time.monotonic() < deadline:
                h = holder(db)
                if h:
                    holders.add(h)
                n = rows(db, "SELECT COUNT(*) FROM results")[0][0]
                if not killed and h and n >= args.requests // 3:
                    # the worker doing the work dies mid-tick; a fresh one joins the others
                    pid = int(h.split(":")[1])
                    (first,) = [p for p in procs if p.pid == pid]
                    first.send_signal(signal.SIGKILL)
                    first.wait()
                    procs.remove(first)
                    logs.append(work / f"worker-{len(logs)}.log")
                    procs.append(start_worker(db, config, logs[-1]))
                    killed = True
                if not feeder.is_alive() and unfinished(db) == 0:
                    drained = True
                    break
                time.sleep(0.1)
            wait_ready(logs)  # a worker stopped while it imports dies of the signal
        finally:
            codes = [stop_worker(p) for p in procs]
        figures = {
            "requests": args.requests,
            "workers": workers,
            "drained": drained,
            "holder_killed": killed,
            "lease_holders_seen": len(holders),
            **audit(db, emu.url),
            "worker_exit_codes": codes,
            **scan_logs(logs),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        emu.stop()
    figures["ok"] = bool(
        drained and killed and set(codes) == {0}
        and figures["states"] == {"succeeded": args.requests}
        and figures["lost"] == 0 and figures["duplicated"] == 0
        and figures["attempt_in_uploads_max"] == 1 and figures["attempt_in_batches_max"] == 1
        and figures["creates_per_intent_max"] == 1 and figures["not_ingested"] == 0
        and figures["create_calls"] == figures["intents"]
        and figures["database_locked"] == 0 and figures["tracebacks"] == 0
    )  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="per store")
    p.add_argument("--small", action="store_true", help="CI size: 5,000 requests a store")
    p.add_argument("--pg-workers", type=int, default=4)
    p.add_argument("--sqlite-workers", type=int, default=2)
    p.add_argument(
        "--pg",
        default=os.environ.get("LLMBATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a server where we may create a database; 'none' runs SQLite only",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="emulator requests/s per batch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0, help="drain limit per store")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args(argv)
    if args.small:
        args.requests = 5_000
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="llmbatch-workers-"))
    report: dict[str, Any] = {"benchmark": "workers"}
    if args.pg != "none":
        with own_database(args.pg, "llmbatch_workers") as db:
            report["postgres"] = race(db, args.pg_workers, work / "postgres", args)
    report["sqlite"] = race(
        str(work / "sqlite" / "queue.db"), args.sqlite_workers, work / "sqlite", args
    )
    print(json.dumps(report), flush=True)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(v["ok"] for v in report.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
