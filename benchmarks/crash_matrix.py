"""Crash matrix: strike real `llmbatch worker` processes at random instants of their work —
SIGKILL, or SIGSTOP past their lease and SIGCONT — and the emulator under them, drain; then
check exactly-once and say where each strike landed.

Each round enqueues `--round` fresh requests (20,000; `--small`: 1,000); a new round starts
when the last one has drained, until every strike is spent (`--kills` 1,000, `--pauses`
100, `--restarts` 10, in a seeded random order) or `--max-seconds`. A worker is struck at a
uniform instant of its active time: `U(0, --max-life)` seconds after it takes the engine
lease, never while it imports (it prints `serving` once its SDKs are loaded).

- a **kill**: warm standbys (started, serving, waiting for the lease) are paused while it
  lands, then one takes the lease over from the dead worker, as a restarted worker would;
- a **pause**: the holder is SIGSTOPped, a standby takes the lease once it expires, and the
  paused worker is SIGCONTed: its next write is refused and it waits as a standby;
- a **restart**: once a batch waits for its download, the emulator is SIGKILLed and started
  again on its port and data dir.

Under the conditions of crash/conditions.py, each on by default: the engine deletes its
files, lists lag (`--list-lag`, shorter than the settle window unless told otherwise),
uploads and creates are held before they act (`--slow-before`), some past the client
timeout. Then, from the store and the emulator (its batch list and call log, crash/calllog.py):
- every request has exactly one terminal outcome and one result, and is carried by one
  created intent (`lost`, `duplicated`);
- no intent has two provider batches (`double_creates`); with `--list-lag` at or beyond the
  settle window, each is printed with the strike (or client timeout) that caused it, none
  is unexplained and no more are caused by strikes than strikes that landed between a
  create's stamp and its answer;
- every provider batch created is ingested (`not_ingested`); no worker exited by itself
  (`worker_failures`: an `error:` line, a traceback), no "database is locked".

Each kill and pause is put in one window of the protocol (crash/windows.py); `strikes.jsonl`
in the work directory has every strike and its window; `--reclassify` classifies a finished
run again. Prints one JSON line (and a line per double create before it); exit status 1 on
any violation, or if `--kills` >= 1000 and a window of the protocol got fewer than 10 kills.

    python benchmarks/crash_matrix.py --small                     # CI: 12 kills, 2 pauses
    python benchmarks/crash_matrix.py                             # floor (a)
    python benchmarks/crash_matrix.py --list-lag 5                # floor (b)
    python benchmarks/crash_matrix.py --kills 200 --provider anthropic
    python benchmarks/crash_matrix.py --kills 200 --provider gemini
    python benchmarks/crash_matrix.py --kills 200 --provider mixed --db postgresql://...

The store is a SQLite file in the work directory unless `--db` names an empty PostgreSQL
database; the emulator runs as its own process (`python -m llmbatch.emulator`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from crash.calllog import all_calls, audit, print_doubles
from crash.conditions import Conditions, install_faults, write_config
from crash.crew import Worker, awaiting_download, rows, take_over, waiting
from crash.windows import PROTOCOL, WINDOWS, Strike, classify
from llmbatch import Queue
from procs import EmulatorProcess

SETTLE_CALLS = 0.15  # seconds for the emulator to log the call a struck worker was making


def requests_for(provider: str, start: int, n: int) -> dict[str, list[dict[str, object]]]:
    """A round's requests per provider; `mixed` alternates them."""
    out: dict[str, list[dict[str, object]]] = {}
    for i in range(start, start + n):
        p = provider if provider != "mixed" else ("openai", "anthropic")[i % 2]
        messages = [{"role": "user", "content": f"crash matrix {i}"}]
        if p == "anthropic":
            params = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": messages}
            out.setdefault(p, []).append({"custom_id": f"c{i}", "params": params})
        elif p == "gemini":
            parts = [{"text": f"crash matrix {i}"}]
            request = {"model": "gemini-2.5-flash", "contents": [{"role": "user", "parts": parts}]}
            out.setdefault(p, []).append({"key": f"c{i}", "request": request})
        else:
            body = {"model": "gpt-4o-mini", "messages": messages}
            out.setdefault(p, []).append({"custom_id": f"c{i}", "body": body})
    return out


def enqueue(db: str, provider: str, start: int, n: int) -> None:
    for p, items in requests_for(provider, start, n).items():
        with Queue(db, "crash", provider=p) as q:
            q.add_many(items)


def reclassify(work: Path, db: str, seed: int) -> int:
    """Classify the strikes of a finished run again (its store, strikes.jsonl, emulator)."""
    fields = {f.name for f in dataclasses.fields(Strike)}
    with open(work / "strikes.jsonl") as f:
        strikes = [Strike(**{k: v for k, v in json.loads(ln).items() if k in fields}) for ln in f]
    emulator = EmulatorProcess(work, seed)
    emulator.start()
    try:
        calls = all_calls(emulator.url)
    finally:
        emulator.stop()
    windows = Counter(classify(db, calls, strikes))
    print(json.dumps({"strikes": len(strikes), "windows": dict(windows.most_common())}))
    return 0


class Run:
    """One run's processes and strikes."""

    def __init__(self, args: argparse.Namespace, cond: Conditions, work: Path, db: str) -> None:
        self.args, self.cond, self.work, self.db = args, cond, work, db
        self.rng = random.Random(args.seed)
        self.emulator = EmulatorProcess(work, args.seed)
        self.log = work / "workers.log"
        self.config = work / "llmbatch.toml"
        self.workers: list[Worker] = []
        self.standbys: list[Worker] = []
        self.strikes: list[Strike] = []
        self.enqueued = 0
        self.taken_over_after_pause = 0

    def worker(self) -> Worker:
        w = Worker(self.db, self.config, self.log)
        self.workers.append(w)
        return w

    def start(self) -> tuple[Worker, float]:
        self.emulator.start(timeout=300)
        install_faults(self.emulator.control, self.cond)
        write_config(self.config, self.emulator.url, self.args.batch, self.args.provider, self.cond)
        self.more()
        self.standbys = [self.worker()]
        active, began = take_over(self.db, self.standbys)
        self.standbys.remove(active)
        return active, began

    def more(self) -> None:
        enqueue(self.db, self.args.provider, self.enqueued, self.args.round)
        self.enqueued += self.args.round

    def kill(self, active: Worker, began: float) -> tuple[Worker, float]:
        for w in self.standbys:
            w.pause()
        at = active.kill()
        queued, unfinished = waiting(self.db)
        time.sleep(SETTLE_CALLS)
        until = time.time()
        self.strikes.append(Strike("kill", began, at, queued, until, active.ready - active.spawned))
        for w in self.standbys:
            w.resume()
        if unfinished == 0:
            self.more()
        active, began = take_over(self.db, self.standbys)
        self.standbys.remove(active)
        return active, began

    def pause(self, active: Worker, began: float) -> tuple[Worker, float]:
        """SIGSTOP the holder until a standby holds its lease (or three lease times have
        gone: a worker stopped inside a SQLite write transaction stops everyone), SIGCONT.
        A standby that has finished starting is waited for first, so that one can."""
        deadline = time.monotonic() + 300
        while not any(w.ready for w in self.standbys) and time.monotonic() < deadline:
            time.sleep(0.05)
        at = active.pause()
        queued, unfinished = waiting(self.db)
        until = at + SETTLE_CALLS
        try:
            new, seen = take_over(self.db, self.standbys, timeout=3 * self.cond.lease_ttl)
        except RuntimeError:
            new, seen = active, time.time()
        active.resume()
        start_s = active.ready - active.spawned
        strike = Strike("pause", began, at, queued, until, start_s, resumed=time.time())
        self.strikes.append(strike)
        if unfinished == 0:
            self.more()
        if new is active:
            return active, began
        self.taken_over_after_pause += 1
        self.standbys.remove(new)
        self.standbys.append(active)  # refused at its next write, it waits as a standby
        return new, seen

    def restart(self, active: Worker, began: float) -> None:
        """Once a batch waits for its download (or three `--max-life` have gone), SIGKILL
        the emulator and start it again where it was."""
        if not waiting(self.db)[1]:
            self.more()
        deadline = time.monotonic() + 3 * self.args.max_life
        while not awaiting_download(self.db) and time.monotonic() < deadline:
            time.sleep(0.01)
        awaiting = awaiting_download(self.db)
        at = time.time()
        self.emulator.kill()
        queued, _ = waiting(self.db)
        self.emulator.start(timeout=300)  # a loaded machine takes its time to import it
        self.strikes.append(
            Strike("restart", began, at, queued, time.time(), 0.0, awaiting=awaiting)
        )

    def schedule(self) -> Iterator[str]:
        kinds = ["kill"] * self.args.kills + ["pause"] * self.args.pauses
        kinds += ["restart"] * self.args.restarts
        self.rng.shuffle(kinds)
        yield from kinds

    def drain(self, seconds: float) -> None:
        """Until every request is final and every batch we made is ingested (a double create
        waits for the sweep)."""
        deadline = time.monotonic() + seconds
        while waiting(self.db)[1] and time.monotonic() < deadline:
            time.sleep(0.2)
        while time.monotonic() < deadline:
            made = sum(
                1 for x in all_calls(self.emulator.url) if x.get("made") and "batches" in x["path"]
            )
            ingested = rows(self.db, "SELECT COUNT(*) FROM batches WHERE state = 'ingested'")[0][0]
            if ingested >= made:
                return
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--kills", type=int, default=1000)
    p.add_argument("--pauses", type=int, default=100, help="holders stopped past their lease")
    p.add_argument("--restarts", type=int, default=10, help="emulator restarts mid-download")
    p.add_argument(
        "--small",
        action="store_true",
        help="CI size: 12 kills, 2 pauses (bench_outages restarts the emulator)",
    )
    p.add_argument("--round", type=int, default=None, help="requests per round (20,000)")
    p.add_argument("--batch", type=int, default=100, help="requests per batch at most")
    p.add_argument(
        "--provider", choices=("openai", "anthropic", "gemini", "mixed"), default="openai"
    )
    p.add_argument("--max-life", type=float, default=3.0, help="seconds of work, at most")
    p.add_argument("--max-seconds", type=float, default=float("inf"), help="stop striking then")
    p.add_argument("--standbys", type=int, default=2, help="warm workers waiting to take over")
    p.add_argument("--db", default=None, help="default: a SQLite file in the work dir")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reclassify", action="store_true", help="only classify --work-dir's strikes")
    d = Conditions()
    p.add_argument("--list-lag", type=float, default=d.list_lag, help="seconds lists lag")
    p.add_argument("--settle", type=float, default=d.settle, help="the engine's settle_seconds")
    p.add_argument("--slow-before", type=float, default=d.slow_before, help="0: no slow calls")
    p.add_argument("--keep-files", action="store_true", help="delete_files = false")
    args = p.parse_args(argv)
    if args.reclassify:
        work = Path(args.work_dir)
        return reclassify(work, args.db or str(work / "crash.db"), args.seed)
    if args.small:
        args.kills, args.pauses, args.restarts = 12, 2, 0
    args.round = args.round or (1000 if args.small else 20_000)
    cond = dataclasses.replace(
        d,
        delete_files=not args.keep_files,
        list_lag=args.list_lag,
        settle=args.settle,
        slow_before=args.slow_before,
        pauses=args.pauses,
        restarts=args.restarts,
    )
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="llmbatch-crash-matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    db = args.db or str(work / "crash.db")
    started = time.monotonic()
    run = Run(args, cond, work, db)
    try:
        active, began = run.start()
        for kind in run.schedule():
            if time.monotonic() - started >= args.max_seconds:
                break
            run.standbys = [w for w in run.standbys if w.alive()]  # one may fail to start
            run.standbys += [run.worker() for _ in range(args.standbys - len(run.standbys))]
            base = began if kind != "restart" else time.time()
            time.sleep(max(0.0, base + run.rng.uniform(0, args.max_life) - time.time()))
            if kind == "kill":
                active, began = run.kill(active, began)
            elif kind == "pause":
                active, began = run.pause(active, began)
            else:
                run.restart(active, began)
        run.drain(600 + 3 * cond.sweep_interval)
        for w in [active, *run.standbys]:
            w.stop()
        calls = all_calls(run.emulator.url)
        figures = audit(db, run.emulator.url, calls, run.strikes, cond)
    finally:
        for w in run.workers:
            if w.alive():
                w.struck = True
                w.proc.kill()
                w.proc.wait()
        run.emulator.stop()
    strikes = run.strikes
    landed = classify(db, calls, strikes)
    with open(work / "strikes.jsonl", "w") as out:  # one line per strike, to look into a figure
        for k, w in zip(strikes, landed, strict=True):
            out.write(json.dumps({**dataclasses.asdict(k), "window": w}) + "\n")
    protocol = set().union(*(PROTOCOL[x] for x in PROTOCOL if args.provider in (x, "mixed")))
    kills = Counter(w for k, w in zip(strikes, landed, strict=True) if k.kind == "kill")
    pauses = Counter(w for k, w in zip(strikes, landed, strict=True) if k.kind == "pause")
    restarts = [k for k in strikes if k.kind == "restart"]
    doubles = figures.pop("double_create_list")
    print_doubles(doubles)
    text = run.log.read_text(errors="replace")
    failures = [f for w in run.workers if (f := w.failure()) is not None]
    starts = sorted(k.start_s for k in strikes if k.kind != "restart") or [0.0]
    figures = {
        "kills": sum(kills.values()),
        "pauses": sum(pauses.values()),
        "pauses_taken_over": run.taken_over_after_pause,
        "restarts": len(restarts),
        "restarts_awaiting_download": sum(1 for k in restarts if k.awaiting),
        "provider": args.provider,
        "conditions": cond.describe(),
        **figures,
        "windows": {w: kills.get(w, 0) for w in WINDOWS if w in protocol},
        "pause_windows": {w: n for w, n in pauses.most_common()},
        "database_locked": text.lower().count("database is locked"),
        "tracebacks": text.count("Traceback"),
        "worker_failures": len(failures),
        "worker_failure_lines": [f["last_line"] for f in failures][:5],
        "enqueued": run.enqueued,
        "worker_start_s": round(starts[len(starts) // 2], 2),  # the median, not counted
        "seconds": round(time.monotonic() - started, 1),
    }
    floor = 10 if figures["kills"] >= 1000 else 0
    figures["thin_windows"] = [w for w, n in figures["windows"].items() if n < floor]
    by = figures["double_creates_by"]
    by_strike = sum(n for cause, n in by.items() if cause in ("kill", "pause", "restart"))
    if cond.lag_beyond_settle:  # floor (b): every double create accounted for
        doubles_bad = (
            by.get("unexplained", 0) > 0 or by_strike > figures["strikes_in_create_windows"]
        )
    else:  # floor (a): none
        doubles_bad = figures["double_creates"] > 0
    print(json.dumps(figures), flush=True)
    checks = ("lost", "duplicated", "not_ingested", "database_locked", "worker_failures")
    bad = any(figures[name] for name in checks) or doubles_bad or figures["thin_windows"]
    return 1 if bad or figures["create_calls"] > figures["provider_batches"] else 0


if __name__ == "__main__":
    sys.exit(main())
