"""Many workers on one queue: 4 processes on one PostgreSQL database, 2 on one SQLite file.

Prints one JSON line with a figure per store: requests, workers, intents, uploads and
creates (from the emulator's call log), the most uploaded files and created batches any
attempt id appears in, max creates per intent, lost, duplicated, lease holders seen, the
"database is locked" lines and tracebacks in the worker logs, seconds. Exit status 1 if
any attempt id is in two uploaded files or two created batches, any intent was created
twice, any request lost or duplicated, or any log says "database is locked".

    python benchmarks/bench_workers.py --small             # CI: 5,000 requests a store
    python benchmarks/bench_workers.py                     # 20,000 requests a store
    python benchmarks/bench_workers.py --share --small     # the shared work, CI size
    python benchmarks/bench_workers.py --share             # issue 27's floors

`--share` (issue 27, docs/deploy.md) measures how the workers share one PostgreSQL store's
work instead, and prints one JSON line:
- `share`: 4 workers, `--requests` over 8 queues; each worker's share of the ingest
  (batches and results it recorded, from the store's `workers` table);
- `other_queue`: while one queue's big batch (`--big` lines: 200,000; `--small`: 20,000)
  is being ingested, 10 requests enqueued in another queue: seconds until their batch is
  submitted, beside the poll interval (the floor: within 2 intervals);
- `ingest`: `--ingest` results (1,000,000; `--small`: 20,000) in 8 batches held at the
  emulator until every one is in flight, then released at once: seconds until every result
  is recorded, by 1 worker and by 4 (same machine, same run).

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
    wait_drained,
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


def _workers_figures(db: str) -> list[dict[str, Any]]:
    got = rows(db, "SELECT holder, ingested, outcomes, submitted FROM workers ORDER BY token")
    return [
        {"worker": str(h).split("/")[0], "ingested_batches": int(i), "results": int(o),
         "submitted": int(s)}
        for h, i, o, s in got
    ]  # fmt: skip


def _crew(
    db: str, work: Path, name: str, n: int, url: str, **engine: Any
) -> tuple[list[Any], list[Path]]:
    config = write_config(work / f"{name}.toml", url + "/v1", **engine)
    logs = [work / f"{name}-{i}.log" for i in range(n)]
    procs = [start_worker(db, config, log) for log in logs]
    wait_ready(logs, timeout=300)  # slow to start on a loaded machine
    return procs, logs


def share(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Issue 27's figures: how 4 workers on one PostgreSQL store share its work."""
    out: dict[str, Any] = {}
    work.mkdir(parents=True, exist_ok=True)
    emu = EmulatorProcess(work, args.seed)
    emu.start(timeout=180)  # a loaded machine starts it slowly
    try:
        emu.control.set_config(rate=args.rate)
        # 1. every worker ingests some: --requests over 8 queues
        with own_database(args.pg, "llmbatch_share") as db:
            open_store(db).close()
            procs, logs = _crew(db, work, "share", 4, emu.url, max_batch_requests=250)
            started = time.monotonic()
            try:
                per = -(-args.requests // 8)
                for q in range(8):
                    enqueue(db, per, queue=f"team{q}", start=q * per)
                drained = wait_drained(db, args.timeout, every=0.1)
                seconds = time.monotonic() - started
            finally:
                codes = [stop_worker(p) for p in procs]
            workers = _workers_figures(db)
            out["share"] = {
                "requests": per * 8, "queues": 8, "drained": drained,
                "seconds": round(seconds, 1), "workers": workers,
                "every_worker_ingested": all(w["ingested_batches"] > 0 for w in workers),
                "audit": {k: v for k, v in audit(db, emu.url).items()
                          if k in ("lost", "duplicated", "creates_per_intent_max", "not_ingested")},
                "exit_codes": codes, **scan_logs(logs),
            }  # fmt: skip
            print(json.dumps({"share": out["share"], "load": os.getloadavg()}), flush=True)
        # 2. another queue's submit while one queue's big batch is ingested
        with own_database(args.pg, "llmbatch_share") as db:
            open_store(db).close()
            poll = 0.5
            procs, logs = _crew(
                db, work, "other", 4, emu.url, max_batch_requests=args.big, poll_interval=poll,
                max_poll_interval=poll,
            )  # fmt: skip
            try:
                enqueue(db, args.big, queue="big")
                deadline = time.monotonic() + args.timeout
                ingesting = 0
                while time.monotonic() < deadline:  # until its results are being recorded
                    ingesting = rows(db, "SELECT COUNT(*) FROM results")[0][0]
                    if ingesting:
                        break
                    time.sleep(0.05)
                enqueue(db, 10, queue="small", start=10_000_000)
                asked = time.monotonic()
                delay = None
                while time.monotonic() < deadline:
                    sent = rows(db, "SELECT COUNT(*) FROM requests WHERE queue = 'small' "
                                "AND state NOT IN ('queued', 'packed')")[0][0]  # fmt: skip
                    if sent == 10:
                        delay = time.monotonic() - asked
                        break
                    time.sleep(0.02)
                big_left = rows(db, "SELECT COUNT(*) FROM requests WHERE queue = 'big' "
                                "AND state NOT IN ('succeeded', 'failed')")[0][0]  # fmt: skip
                drained = wait_drained(db, args.timeout, every=0.1)
            finally:
                codes = [stop_worker(p) for p in procs]
            out["other_queue"] = {
                "big_batch_lines": args.big, "poll_interval_s": poll,
                "results_in_when_enqueued": ingesting,
                "big_still_ingesting_when_sent": big_left,
                "submit_delay_s": None if delay is None else round(delay, 2),
                "within_2_polls": delay is not None and delay <= 2 * poll,
                "drained": drained, "exit_codes": codes, **scan_logs(logs),
            }  # fmt: skip
            print(
                json.dumps({"other_queue": out["other_queue"], "load": os.getloadavg()}), flush=True
            )
        # 3. the ingest of N results, 1 worker against 4
        out["ingest"] = {"results": args.ingest}
        for n in (1, 4):
            with own_database(args.pg, "llmbatch_share") as db:
                open_store(db).close()
                emu.control.next_batches(count=8, hold="finalizing")
                procs, logs = _crew(
                    db, work, f"ingest{n}", n, emu.url, max_batch_requests=-(-args.ingest // 8)
                )
                try:
                    enqueue(db, args.ingest, queue="ingest")
                    held = (
                        "SELECT provider_batch_id FROM batches WHERE provider_status = 'finalizing'"
                    )
                    deadline = time.monotonic() + args.timeout
                    while len(rows(db, held)) < 8 and time.monotonic() < deadline:
                        time.sleep(0.1)
                    started = time.monotonic()
                    for (pid,) in rows(db, held):
                        emu.control.release(str(pid))
                    drained = wait_drained(db, args.timeout, every=0.1)
                    seconds = time.monotonic() - started
                finally:
                    [stop_worker(p) for p in procs]
                out["ingest"][f"{n}_workers_s"] = round(seconds, 1) if drained else None
                if n == 4:
                    out["ingest"]["per_worker"] = _workers_figures(db)
    finally:
        emu.stop()
    ing = out["ingest"]
    if ing.get("1_workers_s") and ing.get("4_workers_s"):
        ing["speedup"] = round(ing["1_workers_s"] / ing["4_workers_s"], 2)
    out["load"] = os.getloadavg()
    out["ok"] = bool(
        out["share"]["drained"] and out["share"]["every_worker_ingested"]
        and out["share"]["audit"]["lost"] == 0 and out["share"]["audit"]["duplicated"] == 0
        and out["other_queue"]["drained"]
    )  # fmt: skip
    return out


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
    p.add_argument("--share", action="store_true", help="how 4 workers share the work (issue 27)")
    p.add_argument("--big", type=int, default=200_000, help="--share: the big batch's lines")
    p.add_argument("--ingest", type=int, default=1_000_000, help="--share: results to ingest")
    args = p.parse_args(argv)
    if args.small:
        args.requests, args.big, args.ingest = 5_000, 20_000, 20_000
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="llmbatch-workers-"))
    if args.share:
        figures = {"benchmark": "workers_share", **share(args, work / "share")}
        print(json.dumps(figures), flush=True)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        return 0 if figures["ok"] else 1
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
