"""The processes a crash-matrix run strikes: `llmbatch worker`s and the emulator.

A worker is struck three ways: SIGKILL (a crash), SIGSTOP until a standby has taken its
lease over then SIGCONT (a pause past the lease), or not at all while the emulator it talks
to is SIGKILLed and started again. A worker that exits by itself — an `error:` line, a
traceback — is a failure of the run, counted, with its last line.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from crash.conditions import KEY_ENV

LLMBATCH = str(Path(sys.executable).parent / "llmbatch")
FINAL = ("succeeded", "failed", "cancelled")


class Worker:
    """One `llmbatch worker` process; `ready` is when it printed that it is serving."""

    def __init__(self, db: str, config: Path, log: Path) -> None:
        env = {**os.environ, KEY_ENV: "sk-crash-matrix"}
        for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
            env.pop(name, None)
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.ready = 0.0
        self.struck = False  # we killed or stopped it: its exit is ours, not a failure
        self.last_line = ""
        self._serving = threading.Event()
        self._copier = threading.Thread(target=self._copy, args=(log,), daemon=True)
        self._copier.start()

    def _copy(self, log: Path) -> None:
        assert self.proc.stdout is not None
        with open(log, "ab") as out:
            for line in self.proc.stdout:
                if not self._serving.is_set() and b" serving " in line:
                    self.ready = time.time()
                    self._serving.set()
                if line.strip():
                    self.last_line = line.decode(errors="replace").strip()
                out.write(line)
        self._serving.set()  # it died first: wait_ready sees ready == 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> dict[str, Any] | None:
        """How it ended by itself (exit status, last line), or None while alive or if we
        ended it."""
        rc = self.proc.poll()
        if rc is None or rc == 0 or self.struck:
            return None
        self._copier.join(timeout=10)
        return {"pid": self.pid, "exit": rc, "last_line": self.last_line[-300:]}

    def wait_ready(self, timeout: float = 180.0) -> float:
        if not self._serving.wait(timeout) or not self.ready:
            self.kill()
            raise RuntimeError("a worker did not start (see workers.log)")
        return self.ready

    def kill(self) -> float:
        """SIGKILL; returns the instant it was sent, once the process is reaped."""
        self.struck = True
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()  # reaped: a zombie would still look alive to the next worker
        self._copier.join(timeout=10)
        return at

    def pause(self) -> float:
        at = time.time()
        self.proc.send_signal(signal.SIGSTOP)
        return at

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM (a clean stop: 0 expected), SIGKILL after two minutes."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        if not self.ready:
            self.struck = True  # stopped while importing: before it could handle SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.struck = True
            self.proc.kill()
            rc = self.proc.wait()
        self._copier.join(timeout=10)
        return rc


# -- the store, read as an operator would ------------------------------------------------------
def rows(db: str, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Plain reads on a connection of our own, as with sqlite3 or psql."""
    if db.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(db) as conn:
            return list(conn.execute(statement.replace("?", "%s"), params).fetchall())
    conn = sqlite3.connect(db, timeout=60)
    try:
        return list(conn.execute(statement, params).fetchall())
    finally:
        conn.close()


def holder(db: str) -> str:
    held = rows(db, "SELECT holder FROM leases WHERE name = 'engine'")
    return str(held[0][0]) if held else ""


def take_over(db: str, workers: list[Worker], timeout: float = 600.0) -> tuple[Worker, float]:
    """Wait until one of `workers` holds the engine lease: that one, and when it was seen to."""
    tags = {f":{w.pid}:": w for w in workers}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = holder(db)
        for tag, w in tags.items():
            if tag in held:
                return w, time.time()
        if all(not w.alive() for w in workers):
            break
        time.sleep(0.005)
    raise RuntimeError("no worker took the engine lease over (see workers.log)")


def waiting(db: str) -> tuple[int, int]:
    """(queued, unfinished) requests."""
    ((queued, unfinished),) = rows(
        db,
        "SELECT COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0), COUNT(*) "
        "FROM requests WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
    )
    return int(queued), int(unfinished)


def awaiting_download(db: str) -> int:
    """Batches the provider has ended that are not ingested yet."""
    return int(
        rows(
            db,
            "SELECT COUNT(*) FROM batches WHERE state IN ('completed', 'failed', 'expired', "
            "'cancelled') AND provider_batch_id IS NOT NULL",
        )[0][0]
    )
