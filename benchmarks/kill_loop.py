"""SIGKILL a real `llmbatch worker` at random moments, restart it, until the queue drains.

Prints one JSON line: kills, requests, intents, max creates per intent, lost, duplicated,
not ingested, seconds. Exit status 1 if any request is lost or duplicated, any intent has
more than one provider batch, or a created batch was never ingested.

    python benchmarks/kill_loop.py --small          # 30 kills (CI)
    python benchmarks/kill_loop.py --kills 1000     # the issue's figure

The emulator runs as its own process (`python -m llmbatch.emulator`); the store is a SQLite
file in the work directory unless `--db postgresql://...` names one. Batches are small (10
requests) and the emulator answers uploads and creates slowly, after doing them, so that
kills land in every window: packing, upload, create, poll and ingest. When
the queue drains before the kills are done, another wave of requests is enqueued.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import openai

from llmbatch import Queue
from llmbatch.emulator import EmulatorControl
from llmbatch.store import open_store

KEY_ENV = "LLMBATCH_KILL_LOOP_KEY"
LLMBATCH = str(Path(sys.executable).parent / "llmbatch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(work: Path, seed: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(work / "emulator.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmbatch.emulator", "--port", str(port),
             "--data-dir", str(work / "emulator"), "--seed", str(seed)],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/_emulator/health", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.1)


def write_config(path: Path, base_url: str) -> Path:
    path.write_text(
        "[engine]\nlease_ttl = 30.0\nsettle_seconds = 1.0\npoll_interval = 0.1\n"
        "max_poll_interval = 0.3\nbackoff_seconds = 0.2\ndelete_files = false\n"
        "max_batch_requests = 10\n"
        # 10-request batches reach OpenAI's 2,000 creates an hour within a long run; the
        # emulator has no such limit, and waiting out the hour would only pad the figures
        "batches_per_hour = 1000000\n\n"
        f'[providers.openai]\nbase_url = "{base_url}"\napi_key_env = "{KEY_ENV}"\n'
    )
    return path


def enqueue(db: str, start: int, n: int) -> None:
    items = [
        {"custom_id": f"k{i}", "body": {"model": "gpt-4o-mini",
                                         "messages": [{"role": "user", "content": f"kill loop {i}"}]}}
        for i in range(start, start + n)
    ]  # fmt: skip
    with Queue(db, "kills") as q:
        q.add_many(items)


def unfinished(db: str) -> int:
    store = open_store(db)
    try:
        return store.unfinished_count()
    finally:
        store.close()


def start_worker(db: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, KEY_ENV: "sk-kill-loop"}
    env.pop("OPENAI_BASE_URL", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


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


def check(db: str, url: str) -> dict[str, Any]:
    """Count what the store and the emulator hold."""
    (store_id,) = rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0]
    requests = rows(
        db,
        "SELECT r.id, r.state, COUNT(x.id) FROM requests r "
        "LEFT JOIN results x ON x.request_id = r.id GROUP BY r.id, r.state",
    )
    batches = rows(db, "SELECT id, provider_batch_id, input_file_id, state FROM batches")
    attempt_request = {
        f"{store_id}-{a}": int(r) for a, r in rows(db, "SELECT id, request_id FROM attempts")
    }
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    remote = [
        b
        for b in client.batches.list(limit=100)
        if (b.metadata or {}).get("llmbatch_store") == store_id
    ]
    per_intent = Counter(str((b.metadata or {})["llmbatch_intent"]) for b in remote)
    sent: Counter[int] = Counter()  # request id -> lines in created batches
    for b in remote:
        for raw in client.files.content(b.input_file_id).content.splitlines():
            sent[attempt_request[json.loads(raw)["custom_id"]]] += 1
    adopted = rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'adopted'")[0][0]
    used = {b.input_file_id for b in remote}
    orphans = [
        f.id
        for f in client.files.list(purpose="batch")
        if f.filename.startswith(f"llmbatch-{store_id}-") and f.id not in used
    ]
    ingested = {str(p) for _i, p, _f, s in batches if s == "ingested"}
    creates = sum(
        1
        for c in EmulatorControl(url).calls()
        if c["method"] == "POST" and c["path"] == "/v1/batches"
    )
    return {
        "requests": len(requests),
        "intents": len(batches),
        "provider_batches": len(remote),
        "creates": creates,
        "max_creates_per_intent": max(per_intent.values(), default=0),
        "lost": sum(1 for _r, state, n in requests if state != "succeeded" or n == 0),
        "duplicated": sum(1 for _r, _s, n in requests if n > 1)
        + sum(1 for n in sent.values() if n > 1),
        "not_ingested": sum(1 for b in remote if b.id not in ingested),
        "adopted_after_kill": int(adopted),  # batches created, then found by reconcile
        "orphan_uploads": len(orphans),  # uploads re-sent because the kill hid the first
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=1000)
    p.add_argument("--small", action="store_true", help="CI size: 30 kills")
    p.add_argument("--wave", type=int, default=400, help="requests enqueued per wave")
    p.add_argument("--db", default=None, help="default: a SQLite file in the work dir")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-life", type=float, default=1.0, help="seconds a worker lives, at least")
    p.add_argument(
        "--max-life", type=float, default=2.2, help="... and at most (start-up takes ~1 s)"
    )
    args = p.parse_args(argv)
    kills_wanted = 30 if args.small else args.kills
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="llmbatch-kill-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    db = args.db or str(work / "kills.db")
    rng = random.Random(args.seed)
    started = time.monotonic()
    emulator, url = start_emulator(work, args.seed)
    log = work / "workers.log"
    try:
        # the provider answers slowly, after doing the work: kills land between "the upload or
        # the batch exists" and "we recorded its id" as often as anywhere else
        control = EmulatorControl(url)
        control.add_fault("files.create", "latency", mode="after", seconds=0.03)
        control.add_fault("batches.create", "latency", mode="after", seconds=0.05)
        config = write_config(work / "llmbatch.toml", url + "/v1")
        enqueued = 0
        enqueue(db, enqueued, args.wave)
        enqueued += args.wave
        kills = 0
        while kills < kills_wanted:
            if unfinished(db) == 0:
                enqueue(db, enqueued, args.wave)
                enqueued += args.wave
            worker = start_worker(db, config, log)
            time.sleep(rng.uniform(args.min_life, args.max_life))
            worker.send_signal(signal.SIGKILL)
            worker.wait()  # reaped: a zombie would still look alive to the next worker
            kills += 1
        worker = start_worker(db, config, log)  # the last one drains the queue
        deadline = time.monotonic() + 120
        while unfinished(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        figures = {"kills": kills, **check(db, url)}
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)
    text = log.read_text(errors="replace")
    figures["database_locked"] = text.lower().count("database is locked")
    figures["tracebacks"] = text.count("Traceback")
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures), flush=True)
    bad = (
        figures["lost"] or figures["duplicated"] or figures["not_ingested"]
        or figures["max_creates_per_intent"] > 1 or figures["database_locked"]
    )  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
