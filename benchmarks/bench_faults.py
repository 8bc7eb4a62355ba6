"""Drain a queue through the emulator while ~20 % of every API call fails; count what survives.

Prints one JSON line: requests, success share (floor 99 %), retries, requeues by reason,
terminal failures by reason, batches, creates per intent (max), injected faults by kind,
the settings that differ from the defaults, and wall time. Exit status 1 if the share is
under the floor or any intent was created twice.

    python benchmarks/bench_faults.py --small            # 2,000 requests (CI, under a minute)
    python benchmarks/bench_faults.py --requests 20000   # the issue's figure
    python benchmarks/bench_faults.py --small --provider gemini

The engine is the real one (`Engine` + `worker.drain`, as `llmbatch wait` runs it) against the
emulator over real HTTP; every fault is injected through the control API:

- every endpoint (files, batches, list, retrieve, content, cancel, delete): `--fault-rate`
  (default 0.2) of calls hit one of 500, 502, 503, 429 (retry-after 0.2 s), 0.2 s latency or a
  connection dropped mid-response (mid-download for file contents), spread evenly;
- on top of that, 5 % of batch creates and 3 % of uploads fail *after* doing their work
  (`mode: after`), and lists lag by 2 s (the engine's settle delay is 5 s, its upload and
  create timeout 2 s: a create whose outcome is unknown is sent again 7 s after it started);
- per request: `--request-failure-rate` (default 0.1) of the lines of each batch come back
  as 500s; a request that fails all 3 of its attempts fails for good, so at 0.2 the expected
  share is 1 − 0.2³ = 99.2 %;
- per batch, decided when it is first seen: 4 % fail validation on one random line (that
  request fails with the line error), 1 % fail validation as a whole (`too_many_tasks`),
  5 % are expired half-way through (their finished results must be kept).

The retry policy keeps its defaults (3 attempts, 5 expiries) except the base delay, and
polling, backoff and settle delays are shortened so the run takes seconds, not hours: the
JSON line lists every such setting under `settings`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llmbatch import Queue
from llmbatch.emulator import ControlError, EmulatorControl, RunningEmulator, running
from llmbatch.engine import Engine, EngineSettings
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store
from llmbatch.worker import drain

KEY_ENV = "LLMBATCH_BENCH_FAULTS_KEY"
FLOOR = 0.99
ENDPOINT_KINDS: list[dict[str, Any]] = [
    {"kind": "500"},
    {"kind": "502"},
    {"kind": "503"},
    {"kind": "429", "retry_after": 0.2},
    {"kind": "latency", "seconds": 0.2},
    {"kind": "drop"},
]
P_LINE_FAILURE, P_BATCH_FAILURE, P_EXPIRY = 0.04, 0.01, 0.05
FINAL = ("succeeded", "failed", "cancelled")


def rows(db: str, statement: str) -> list[Any]:
    """Plain reads on a connection of our own, as an operator with sqlite3 or psql would."""
    if db.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(db) as conn:
            return list(conn.execute(statement).fetchall())
    conn = sqlite3.connect(db, timeout=30)
    try:
        return list(conn.execute(statement).fetchall())
    finally:
        conn.close()


def inject(
    control: EmulatorControl, providers: list[str], fault_rate: float, request_failure_rate: float
) -> None:
    """The endpoint faults: the first matching rule whose dice hit wins, so each of the n
    kinds gets the rate that makes their union `fault_rate`."""
    ops, lists = [], []
    if "openai" in providers or "gemini" in providers:  # Gemini's ops share these names
        control.add_fault("batches.create", "500", mode="after", rate=0.05)
        control.add_fault("files.create", "503", mode="after", rate=0.03)
        ops += ["files.*", "batches.*"]
        lists += ["batches.list", "files.list"]
    if "anthropic" in providers:
        # Message Batches: the create is the upload (the requests travel inline)
        control.add_fault("messages.batches.create", "500", mode="after", rate=0.05)
        ops += ["messages.batches.*"]
        lists += ["messages.batches.list"]
    each = 1 - (1 - fault_rate) ** (1 / len(ENDPOINT_KINDS))
    for rule in ENDPOINT_KINDS:
        for op in ops:
            control.add_fault(
                op, rule["kind"], rate=each, **{k: v for k, v in rule.items() if k != "kind"}
            )
    for op in lists:
        control.add_fault(op, "list_lag", seconds=2.0)
    control.set_config(request_failure_rate=request_failure_rate, request_failure_status=500)


class Chaos(threading.Thread):
    """Decides each batch's fate when it first appears in the store: fail its validation on
    a line or as a whole, or expire it once it is half done. Uses only the control API."""

    def __init__(self, db: str, control: EmulatorControl, seed: int) -> None:
        super().__init__(daemon=True)
        self.db, self.control = db, control
        self.rng = random.Random(seed)
        self.fate: dict[str, str] = {}
        self.done = Counter[str]()
        self.stop = threading.Event()

    def run(self) -> None:
        store = open_store(self.db)
        try:
            while not self.stop.wait(0.02):
                for b in store.batch_overview(recent=0):
                    pid = b.get("provider_batch_id")
                    if pid and b["state"] not in ("ingested",):
                        self._act(pid, int(b["request_count"]))
        finally:
            store.close()

    def _act(self, pid: str, n: int) -> None:
        fate = self.fate.get(pid)
        if fate is None:
            r = self.rng.random()
            if pid.startswith("msgbatch_"):  # a message batch has no validation to fail
                r = max(r, P_LINE_FAILURE + P_BATCH_FAILURE)
            fate = "none"
            if r < P_LINE_FAILURE:
                fate = "line"
            elif r < P_LINE_FAILURE + P_BATCH_FAILURE:
                fate = "batch"
            elif r < P_LINE_FAILURE + P_BATCH_FAILURE + P_EXPIRY:
                fate = "expire"
            self.fate[pid] = fate
        if fate in ("none", "done"):
            return
        try:
            if fate == "line":
                line = self.rng.randint(1, n)
                self.control.fail(
                    pid, "invalid_request", f"Line {line}: 'messages' must be a list.", line
                )
            elif fate == "batch":
                self.control.fail(pid, "too_many_tasks", "The batch has too many tasks.")
            else:
                progress = self.control.batch(pid)["progress"]
                if not progress.get("total") or progress["done"] * 2 < progress["total"]:
                    return  # not half done yet
                self.control.expire(pid)
        except ControlError:
            pass  # it moved on (validated, finished): it keeps its luck
        else:
            self.done[fate] += 1
        self.fate[pid] = "done"


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    db = args.db or str(work / "faults.db")
    providers = ["openai", "anthropic"] if args.provider == "mixed" else [args.provider]
    with running(seed=args.seed, rate=args.rate, validating_seconds=0.3) as emu:
        enqueue(db, args.requests, providers)
        inject(emu.control, providers, args.fault_rate, args.request_failure_rate)
        retry = RetryPolicy(base_seconds=args.base_seconds, max_seconds=args.base_seconds * 8)
        overrides: dict[str, Any] = {
            "poll_interval": 0.1, "max_poll_interval": 0.5, "backoff_seconds": 0.2,
            "settle_seconds": 5.0, "max_batch_requests": args.batch_requests,
            # a create answered 500 after it acted is waited out submit_timeout + settle
            # from its start before it may be sent again (the default 120 s would be most
            # of the run); the emulator answers in well under a second
            "submit_timeout": 2.0,
            # kept so the audit can read every batch's lines; a real run deletes them
            "delete_files": False,
        }  # fmt: skip
        settings = EngineSettings(
            **overrides, retry=retry,
            providers={
                "openai": {"base_url": emu.base_url, "api_key_env": KEY_ENV},
                "anthropic": {"base_url": emu.url, "api_key_env": KEY_ENV},
                # full batches go as uploaded files, smaller (retried) ones inline
                "gemini": {"base_url": emu.url, "api_key_env": KEY_ENV, "inline_max_bytes": 8192},
            },
        )  # fmt: skip
        chaos = Chaos(db, emu.control, args.seed)
        chaos.start()
        store = open_store(db)
        engine = Engine(store, settings)
        started = time.perf_counter()
        try:
            outcome = drain(engine, timeout=args.timeout)
        finally:
            wall = time.perf_counter() - started
            chaos.stop.set()
            chaos.join()
            engine.close()
            store.close()
        injected = Counter[str]()
        for rule in emu.control.faults():
            if rule["kind"] != "list_lag":  # always on: lists lag 2 s throughout
                injected[rule["kind"] + ("/after" if rule["mode"] == "after" else "")] += rule[
                    "hits"
                ]
        emu.control.clear_faults()
        per_intent, per_attempt = created_batches(emu, db)
    counts = dict(rows(db, "SELECT state, COUNT(*) FROM requests GROUP BY state"))
    succeeded = int(counts.get("succeeded", 0))
    results = rows(
        db,
        "SELECT r.state, COUNT(x.id) FROM requests r "
        "LEFT JOIN results x ON x.request_id = r.id GROUP BY r.id, r.state",
    )
    return {
        "benchmark": "faults",
        "provider": args.provider,
        "requests": args.requests,
        "finished": outcome.finished,
        "success_share": round(succeeded / args.requests, 5),
        "success_percent": round(100 * succeeded / args.requests, 3),
        "floor": FLOOR,
        "states": counts,
        "lost": sum(1 for state, n in results if state not in FINAL or n == 0),
        "duplicated": sum(1 for _s, n in results if n > 1),
        "retries": scalar(db, "SELECT COUNT(*) FROM attempts WHERE state = 'retry'"),
        "requeues": dict(
            rows(
                db,
                "SELECT error_code, COUNT(*) FROM attempts WHERE state = 'requeue' GROUP BY error_code",
            )
        ),
        "terminal_failures": dict(
            rows(
                db,
                "SELECT x.error_code, COUNT(*) FROM requests r JOIN results x ON x.request_id = r.id "
                "WHERE r.state = 'failed' GROUP BY x.error_code",
            )
        ),
        "batches": scalar(db, "SELECT COUNT(*) FROM batches"),
        "batches_by_outcome": dict(
            rows(db, "SELECT provider_status, COUNT(*) FROM batches GROUP BY provider_status")
        ),
        "creates_per_intent_max": max(per_intent.values(), default=0),
        "double_creates": sum(n - 1 for n in per_intent.values() if n > 1),
        "attempt_in_batches_max": max(per_attempt.values(), default=0),
        "intents_never_created": scalar(db, "SELECT COUNT(*) FROM batches WHERE intent_id IS NULL")
        - len(per_intent),
        "injected": {
            "endpoint_faults": dict(sorted(injected.items())),
            "batch_fates": dict(chaos.done),
            "list_lag_seconds": 2.0,
            "request_failure_rate": args.request_failure_rate,
            "endpoint_fault_rate": args.fault_rate,
        },
        "settings": {
            **overrides,
            "retry.base_seconds": args.base_seconds,
            "retry.max_seconds": args.base_seconds * 8,
            "note": "retry policy defaults otherwise (max_attempts 3, max_expiries 5); "
            "shortened delays so the run takes seconds",
        },
        "wall_seconds": round(wall, 2),
    }


def scalar(db: str, statement: str) -> int:
    return int(rows(db, statement)[0][0])


def enqueue(db: str, n: int, providers: list[str]) -> None:
    """`n` requests; a mixed queue alternates OpenAI and Anthropic ones."""
    per: dict[str, list[dict[str, Any]]] = {p: [] for p in providers}
    for i in range(n):
        p = providers[i % len(providers)]
        messages = [{"role": "user", "content": f"request {i}"}]
        if p == "anthropic":
            params = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": messages}
            per[p].append({"custom_id": f"r{i}", "params": params})
        elif p == "gemini":
            parts = [{"text": f"request {i}"}]
            request = {"model": "gemini-2.5-flash", "contents": [{"role": "user", "parts": parts}]}
            per[p].append({"key": f"r{i}", "request": request})
        else:
            per[p].append(
                {"custom_id": f"r{i}", "body": {"model": "gpt-4o-mini", "messages": messages}}
            )
    for p, items in per.items():
        with Queue(db, "faults", provider=p) as q:
            q.add_many(items)


def created_batches(emu: RunningEmulator, db: str) -> tuple[Counter[str], Counter[str]]:
    """(provider batches per intent, created batches per attempt id), from the emulator's own
    lists. OpenAI batches name their intent in our metadata; message batches carry none, so
    their results' custom_ids (our attempt ids) say whose they are."""
    import anthropic
    import openai

    (store_id,) = rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0]
    intent_of = {  # custom ids as sent: `<store>-<nonce>-<attempt>` (ownership.py)
        f"{store_id}-{n}-{a}" if n else f"{store_id}-{a}": str(b)
        for a, b, n in rows(
            db,
            "SELECT a.id, a.batch_id, t.nonce FROM attempts a JOIN batches t ON t.id = a.batch_id",
        )
    }
    per_intent, per_attempt = Counter[str](), Counter[str]()
    client = openai.OpenAI(base_url=emu.base_url, api_key="k")
    for b in client.batches.list(limit=100):
        meta = b.metadata or {}
        if meta.get("llmbatch_store") == store_id:
            per_intent[str(meta.get("llmbatch_intent"))] += 1
            for raw in client.files.content(b.input_file_id).content.splitlines():
                per_attempt[str(json.loads(raw)["custom_id"])] += 1
    claude = anthropic.Anthropic(base_url=emu.url, api_key="k")
    for mb in claude.messages.batches.list(limit=100):
        ids = [r.custom_id for r in claude.messages.batches.results(mb.id)]
        if ids and ids[0].startswith(store_id + "-"):
            per_attempt.update(ids)
            for intent in {intent_of.get(i) for i in ids}:
                per_intent[str(intent)] += 1
    for intent, keys in gemini_batches(emu, store_id):
        per_intent[intent] += 1
        per_attempt.update(keys)
    return per_intent, per_attempt


def gemini_batches(emu: RunningEmulator, store_id: str) -> list[tuple[str, list[str]]]:
    """(intent, result keys) of each Gemini batch of ours: the displayName names the intent;
    uploads cannot be downloaded, so the keys are those of its results (a batch expired or
    failed has fewer: an attempt in two batches still shows if both answered it)."""
    from google import genai

    from llmbatch.providers.gemini import tag_of_display_name

    client = genai.Client(api_key="k", http_options={"base_url": emu.url, "api_version": "v1beta"})
    out = []
    for job in client.batches.list(config={"page_size": 100}):
        tag = tag_of_display_name(job.display_name, store_id)
        if tag is None:
            continue
        keys: list[str] = []
        if job.dest is not None and job.dest.file_name:
            data = client.files.download(file=job.dest.file_name)
            keys = [str(json.loads(raw)["key"]) for raw in data.splitlines() if raw.strip()]
        elif job.dest is not None and job.dest.inlined_responses:
            keys = [str((r.metadata or {}).get("key")) for r in job.dest.inlined_responses]
        out.append((tag["llmbatch_intent"], keys))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--small", action="store_true", help="2,000 requests (what CI runs)")
    p.add_argument("--fault-rate", type=float, default=0.2, help="share of API calls that fail")
    p.add_argument("--request-failure-rate", type=float, default=0.1)
    p.add_argument("--batch-requests", type=int, default=500, help="requests per batch at most")
    p.add_argument("--rate", type=float, default=1000.0, help="emulator requests/s per batch")
    p.add_argument("--base-seconds", type=float, default=0.2, help="retry base delay")
    p.add_argument("--db", help="a store location (default: a SQLite file in a temp dir)")
    p.add_argument(
        "--provider", choices=("openai", "anthropic", "gemini", "mixed"), default="openai",
        help="whose batch API the queue uses (mixed: alternate requests)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args(argv)
    if args.small:
        args.requests = 2_000
        args.batch_requests = min(args.batch_requests, 100)
    os.environ.setdefault(KEY_ENV, "sk-bench-not-a-secret")
    with tempfile.TemporaryDirectory(prefix="llmbatch-faults-") as tmp:
        report = run(args, Path(tmp))
    print(json.dumps(report))
    ok = (
        report["finished"]
        and report["success_share"] >= FLOOR
        and report["creates_per_intent_max"] <= 1
        and report["attempt_in_batches_max"] <= 1
        and report["lost"] == 0
        and report["duplicated"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
