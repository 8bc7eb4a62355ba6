"""Kill what the workers depend on while they drain a queue; count what survives.

Prints one JSON line with a figure per scenario: requests, outages, lost, duplicated, max
creates per intent, double creates, attempt ids in more than one created batch, batches
never ingested, worker exits, the "waiting" lines the workers logged, tracebacks, seconds.
Exit status 1 if any scenario lost, duplicated or double-created anything, or a worker died.

    python benchmarks/bench_outages.py --small                 # CI: 2,000 requests a scenario
    python benchmarks/bench_outages.py --requests 20000        # the full figure
    python benchmarks/bench_outages.py --only pg_restart       # one scenario

Real `llmbatch worker` processes (two per scenario) drain the queue from the emulator,
which runs as its own process; meanwhile, every 1 to 2.5 s:

- `emulator`: SIGKILL the emulator (SQLite store) and start it again 1 s later on the same
  port with its data dir: its batches resume where they were;
- `pg_terminate`: `pg_terminate_backend` every connection to the queue's database (a
  database of its own on the shared server, `--pg`): what CI can do;
- `pg_restart`: a private throwaway PostgreSQL cluster (`initdb` in a temp dir, a free port)
  stopped with `pg_ctl stop -m immediate` (a crash: no checkpoint, recovery on start) and
  started again 1 s later. Skipped, and said so, when the server binaries are missing.

Then the audit: from the store, each request's results; from the emulator (its batch and
file lists and call log), every attempt id in at most one created batch and every intent in
at most one provider batch.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from llmbatch.store import open_store
from procs import (
    EmulatorProcess,
    audit,
    clean,
    enqueue,
    free_port,
    own_database,
    scan_logs,
    start_worker,
    stop_worker,
    unfinished,
    wait_ready,
    write_config,
)  # fmt: skip

SCENARIOS = ("emulator", "pg_terminate", "pg_restart")
WAITING = "waiting for the database"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temp dir on a free port (trust auth, no fsync
    tuning: a crash here is a real crash)."""

    def __init__(self, bin_dir: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="llmbatch-pg-"))
        self.dir, self.log = self.home / "pgdata", self.home / "postgres.log"
        self.bin, self.port = bin_dir, free_port()
        # initdb refuses to run as root; the server's own account does
        self.sudo = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.sudo, str(self.bin / args[0]), *args[1:]],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def init(self) -> None:
        if self.sudo:
            shutil.chown(self.home, "postgres")
        self._run("initdb", "-D", str(self.dir), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.dir), "-o", options, "-l", str(self.log), "-w", "start")

    def crash(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "stop")
        shutil.rmtree(self.home, ignore_errors=True)


def terminate_backends(admin_dsn: str, db: str) -> int:
    name = db.rsplit("/", 1)[1]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        got = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(got)


class Feeder(threading.Thread):
    """Enqueues the requests in waves while the workers run, so outages land while some
    batches are being packed and sent, others polled, others ingested. A wave that meets
    the outage is enqueued again (the same custom_ids: nothing is added twice)."""

    def __init__(self, db: str, requests: int, waves: int, spacing: float) -> None:
        super().__init__(daemon=True)
        self.db, self.requests, self.waves, self.spacing = db, requests, waves, spacing
        self.retried = 0

    def run(self) -> None:
        size = -(-self.requests // self.waves)
        for start in range(0, self.requests, size):
            while True:
                try:
                    enqueue(self.db, min(size, self.requests - start), start=start)
                    break
                except Exception:  # the database is down on purpose: try again
                    self.retried += 1
                    time.sleep(0.3)
            time.sleep(self.spacing)


def drive(
    db: str,
    emu: EmulatorProcess,
    work: Path,
    args: argparse.Namespace,
    outage: Callable[[], None],
) -> dict[str, Any]:
    """Start the workers, feed the queue, inflict `args.outages` outages while they work,
    drain, stop the workers and audit."""
    rng = random.Random(args.seed)
    started = time.monotonic()
    open_store(db).close()  # migrated before the workers race to do it
    emu.control.set_config(rate=args.rate)
    config = write_config(work / "llmbatch.toml", emu.url + "/v1")
    logs = [work / f"worker-{i}.log" for i in range(args.workers)]
    workers = [start_worker(db, config, log) for log in logs]
    done = busy = 0
    try:
        wait_ready(logs)
        feeder = Feeder(db, args.requests, args.waves, args.spacing)
        feeder.start()
        for _ in range(args.outages):
            time.sleep(rng.uniform(1.0, 2.5))
            busy += feeder.is_alive() or bool(unfinished(db))
            outage()
            done += 1
        feeder.join()
        deadline = time.monotonic() + args.timeout
        drained = False
        while time.monotonic() < deadline and any(w.poll() is None for w in workers):
            if unfinished(db) == 0:
                drained = True
                break
            time.sleep(0.2)
    finally:
        alive = sum(1 for w in workers if w.poll() is None)
        codes = [stop_worker(w) for w in workers]
    figures = {
        "requests": args.requests,
        "outages": done,
        "outages_mid_run": busy,
        "drained": drained,
        **audit(db, emu.url),
        "workers_alive_at_end": alive,
        "worker_exit_codes": codes,
        **scan_logs(logs),
        "waiting_lines": sum(p.read_text(errors="replace").count(WAITING) for p in logs),
        "enqueue_retries": feeder.retried,
        "seconds": round(time.monotonic() - started, 1),
    }
    figures["ok"] = bool(
        drained and clean(figures) and alive == args.workers and set(codes) == {0}
        and figures["tracebacks"] == 0 and figures["database_locked"] == 0
        and figures["requests"] == args.requests and done == args.outages
        and figures["states"] == {"succeeded": args.requests}
    )  # fmt: skip
    return figures


def emulator_deaths(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    emu = EmulatorProcess(work, args.seed)
    emu.start()

    def outage() -> None:
        emu.kill()
        time.sleep(args.down)
        emu.start()

    try:
        return drive(str(work / "queue.db"), emu, work, args, outage)
    finally:
        emu.stop()


def pg_terminate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    emu = EmulatorProcess(work, args.seed)
    emu.start()
    terminated = 0

    def outage() -> None:
        nonlocal terminated
        terminated += terminate_backends(args.pg, db)

    try:
        with own_database(args.pg) as db:
            figures = drive(db, emu, work, args, outage)
            figures["ok"] = figures["ok"] and figures["waiting_lines"] >= 1  # said, once each
            return {**figures, "connections_terminated": terminated}
    finally:
        emu.stop()


def pg_restart(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bin_dir = pg_bin()
    if bin_dir is None or (shutil.which("runuser") is None and os.geteuid() == 0):
        return {"skipped": "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"}
    cluster = PrivateCluster(bin_dir)
    cluster.init()
    emu = EmulatorProcess(work, args.seed)
    emu.start()

    def outage() -> None:
        cluster.crash()
        time.sleep(args.down)
        cluster.start()

    try:
        figures = drive(cluster.dsn, emu, work, args, outage)
        log = cluster.log.read_text(errors="replace")
        recoveries = log.count("not properly shut down")
        ok = figures["ok"] and figures["waiting_lines"] >= 1 and recoveries == args.outages
        return {**figures, "crash_recoveries": recoveries, "ok": ok}
    finally:
        emu.stop()
        cluster.destroy()


RUN = {"emulator": emulator_deaths, "pg_terminate": pg_terminate, "pg_restart": pg_restart}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="per scenario")
    p.add_argument("--small", action="store_true", help="CI size: 2,000 requests, 3 outages")
    p.add_argument("--outages", type=int, default=6, help="per scenario")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--waves", type=int, default=20, help="the requests arrive in this many waves")
    p.add_argument("--spacing", type=float, default=0.8, help="seconds between waves")
    p.add_argument("--down", type=float, default=1.0, help="seconds the dead process stays dead")
    p.add_argument("--only", choices=SCENARIOS, action="append", help="run only these")
    p.add_argument(
        "--pg",
        default=os.environ.get("LLMBATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a server where we may create a database (for pg_terminate)",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="emulator requests/s per batch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=180.0, help="drain limit per scenario")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args(argv)
    if args.small:
        args.requests, args.outages, args.waves = 2_000, 3, 10
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="llmbatch-outages-"))
    report: dict[str, Any] = {"benchmark": "outages"}
    for name in args.only or SCENARIOS:
        here = work / name
        here.mkdir(parents=True, exist_ok=True)
        report[name] = RUN[name](args, here)
    print(json.dumps(report), flush=True)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
