"""Processes and audits shared by the outage and many-workers benchmarks.

The emulator runs as its own process on a fixed port with a data dir, so it can be killed
and started again where it was; workers are real `llmbatch worker` processes. The audit
reads the store with plain SQL and the emulator with the SDK and its call log, never
through the engine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import psycopg

from llmbatch import Queue
from llmbatch.emulator import EmulatorControl

KEY_ENV = "LLMBATCH_BENCH_KEY"
LLMBATCH = str(Path(sys.executable).parent / "llmbatch")
FINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmulatorProcess:
    """`python -m llmbatch.emulator` on one port and one data dir, across restarts."""

    def __init__(self, work: Path, seed: int) -> None:
        self.data, self.log, self.seed = work / "emulator", work / "emulator.log", seed
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llmbatch.emulator", "--port", str(self.port),
                 "--data-dir", str(self.data), "--seed", str(self.seed)],
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/_emulator/health", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not start (see {self.log})") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no chance to save anything it had not written yet."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.url)


@contextmanager
def own_database(admin_dsn: str, prefix: str = "llmbatch_bench") -> Iterator[str]:
    """A database of our own on the shared server (dropped afterwards): terminating its
    connections touches nobody else's."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_dsn.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_config(path: Path, base_url: str, **engine: Any) -> Path:
    """Short delays so a run takes seconds; uploads kept so the audit can read them."""
    values: dict[str, Any] = {
        # submit_timeout: an unknown create waits it plus settle_seconds (27 s under a
        # 30 s lease otherwise); the emulator answers in well under a second
        "lease_ttl": 30.0, "submit_timeout": 2.0, "settle_seconds": 2.0, "poll_interval": 0.1,
        "max_poll_interval": 0.3, "backoff_seconds": 0.2, "delete_files": False,
        "max_batch_requests": 250, "batches_per_hour": 1_000_000,
    }  # fmt: skip
    values.update(engine)
    lines = ["[engine]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]
    lines += ["", "[providers.openai]", f'base_url = "{base_url}"', f'api_key_env = "{KEY_ENV}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker(db: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, KEY_ENV: "sk-bench-not-a-secret"}
    env.pop("OPENAI_BASE_URL", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def stop_worker(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_ready(logs: list[Path], timeout: float = 60.0) -> None:
    """Until every worker has said it is serving (SDKs imported, store open): a signal
    before that kills it, and one that cannot reach its database at start-up exits."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() and " serving " in p.read_text(errors="replace") for p in logs):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not start")
        time.sleep(0.05)


def enqueue(db: str, n: int, queue: str = "bench", start: int = 0) -> None:
    items = (
        {"custom_id": f"r{i}", "body": {"model": "gpt-4o-mini",
                                        "messages": [{"role": "user", "content": f"request {i}"}]}}
        for i in range(start, start + n)
    )  # fmt: skip
    with Queue(db, queue) as q:
        q.add_many(items)


def rows(db: str, statement: str) -> list[Any]:
    """Plain reads on a connection of our own, as an operator with sqlite3 or psql would."""
    if db.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(db, connect_timeout=5) as conn:
            return list(conn.execute(statement).fetchall())
    conn = sqlite3.connect(db, timeout=30)
    try:
        return list(conn.execute(statement).fetchall())
    finally:
        conn.close()


def unfinished(db: str) -> int | None:
    """Requests not yet final, or None while the database cannot be reached."""
    try:
        done = ", ".join(f"'{s}'" for s in FINAL)
        return int(rows(db, f"SELECT COUNT(*) FROM requests WHERE state NOT IN ({done})")[0][0])
    except Exception:  # the database may be down on purpose
        return None


def wait_drained(db: str, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if unfinished(db) == 0:
            return True
        time.sleep(every)
    return False


def all_calls(control: EmulatorControl) -> list[dict[str, Any]]:
    """The whole call log, page by page."""
    out: list[dict[str, Any]] = []
    while True:
        page = control.calls(since=out[-1]["seq"] if out else 0)
        if not page:
            return out
        out.extend(page)


def audit(db: str, url: str) -> dict[str, Any]:
    """What the store and the emulator hold, counted: every request one result; every attempt
    id in at most one uploaded file and one created batch; every intent one provider batch."""
    (store_id,) = rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0]
    requests = rows(
        db,
        "SELECT r.id, r.state, COUNT(x.id) FROM requests r "
        "LEFT JOIN results x ON x.request_id = r.id GROUP BY r.id, r.state",
    )
    batches = rows(db, "SELECT id, provider_batch_id, state FROM batches")
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=3)

    def attempt_ids(file_id: str) -> list[str]:
        raw = client.files.content(file_id).content
        return [str(json.loads(line)["custom_id"]) for line in raw.splitlines()]

    uploads = [
        f.id
        for f in client.files.list(purpose="batch")
        if f.filename.startswith(f"llmbatch-{store_id}-")
    ]
    remote = [
        b
        for b in client.batches.list(limit=100)
        if (b.metadata or {}).get("llmbatch_store") == store_id
    ]
    in_uploads = Counter(a for fid in uploads for a in attempt_ids(fid))
    in_batches = Counter(a for b in remote for a in attempt_ids(b.input_file_id))
    per_intent = Counter(str((b.metadata or {})["llmbatch_intent"]) for b in remote)
    calls = all_calls(EmulatorControl(url))
    posts = Counter(c["path"] for c in calls if c["method"] == "POST")
    ingested = {str(p) for _i, p, s in batches if s == "ingested"}
    states = Counter(str(s) for _r, s, _n in requests)
    return {
        "requests": len(requests),
        "states": dict(states),
        "lost": sum(1 for _r, s, n in requests if s not in FINAL or n == 0),
        "duplicated": sum(1 for _r, _s, n in requests if n > 1),
        "intents": len(batches),
        "provider_batches": len(remote),
        "creates_per_intent_max": max(per_intent.values(), default=0),
        "double_creates": sum(n - 1 for n in per_intent.values() if n > 1),
        "create_calls": posts["/v1/batches"],
        "upload_calls": posts["/v1/files"],
        "uploads": len(uploads),
        "attempt_in_uploads_max": max(in_uploads.values(), default=0),
        "attempt_in_batches_max": max(in_batches.values(), default=0),
        "not_ingested": sum(1 for b in remote if b.id not in ingested),
    }


def scan_logs(logs: list[Path]) -> dict[str, int]:
    text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    return {
        "database_locked": text.lower().count("database is locked"),
        "tracebacks": text.count("Traceback"),
    }


def clean(figures: dict[str, Any]) -> bool:
    """No request lost or duplicated, no intent created twice, every batch ingested."""
    return (
        figures["lost"] == 0
        and figures["duplicated"] == 0
        and figures["creates_per_intent_max"] <= 1
        and figures["attempt_in_batches_max"] <= 1
        and figures["not_ingested"] == 0
    )
