"""Crash matrix: SIGKILL real `llmbatch worker` processes at random instants of their work,
restart them, drain; then check exactly-once and say where each kill landed.

Each round enqueues `--round` fresh requests (20,000; `--small`: 1,000); a new round starts
when the last one has drained, until `--kills` kills (1,000; `--small`: 30) or
`--max-seconds`. A worker is killed at a uniform instant of its active time: `U(0,
--max-life)` seconds after it takes the engine lease, never while it imports (it prints
`serving` once its SDKs are loaded; warm standbys wait for the lease, paused while a kill
lands, then one takes the lease over from the dead worker as a restarted one would). A
last worker drains the queue.

Then, from the store and from the emulator (its API and its call log):
- every request has exactly one terminal outcome and one result (`lost`, `duplicated`:
  also a request sent in two created batches, i.e. paid twice);
- no intent has two provider batches (`double_creates`), every create call made one batch;
- every provider batch created is ingested (`not_ingested`).

Each kill is put in one window of the protocol (see `WINDOWS`), from the store's event log
(the journal's events carry their wall-clock instant) and the emulator's call log (a call
logged after the kill was under way when it landed: the emulator finishes a handler whose
client died), plus the count of queued requests read right after the kill. The emulator
answers every call a little late, after doing its work, and runs each batch for about a
second, so that each window is wide enough to be hit. `kills.jsonl` in the work directory
has every kill and its window; `--reclassify` classifies a finished run again.

Prints one JSON line; exit status 1 on any violation, or if `--kills` >= 1000 and a window
of the provider's protocol was hit fewer than 10 times.

    python benchmarks/crash_matrix.py --small                     # CI: 30 kills, OpenAI
    python benchmarks/crash_matrix.py --kills 1000                # the issue's figure
    python benchmarks/crash_matrix.py --kills 200 --provider anthropic
    python benchmarks/crash_matrix.py --kills 200 --provider mixed --db postgresql://...

The store is a SQLite file in the work directory unless `--db` names an empty PostgreSQL
database; the emulator runs as its own process (`python -m llmbatch.emulator`).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbatch import Queue
from llmbatch.emulator import EmulatorControl

KEY_ENV = "LLMBATCH_CRASH_MATRIX_KEY"
LLMBATCH = str(Path(sys.executable).parent / "llmbatch")
FINAL = ("succeeded", "failed", "cancelled")

#: Where a kill can land, in the order a request meets them.
WINDOWS = {
    "takeover": "lease taken from the dead worker, nothing sent or written yet (the first "
    "tick's reads, the SDK client's first use)",
    "idle": "no step under way: between ticks, the tick's bookkeeping, reading an answer",
    "packing": "requests queued, no step under way: picking them, committing the intent",
    "intent": "intent committed, nothing sent: writing the batch file",
    "upload": "upload started, its file id not recorded (the file may exist)",
    "uploaded": "file id recorded, create not started",
    "create": "create started, its batch id not recorded (the batch may exist)",
    "reconcile": "listing batches/files to find what an interrupted intent left",
    "poll": "listing or retrieving batches in flight",
    "sweep": "listing uploads for ones no intent uses",
    "download": "fetching a result file",
    "ingest": "a result file arrived; outcomes being recorded, batch not yet ingested",
}
PROTOCOL = {
    "openai": set(WINDOWS),
    "anthropic": set(WINDOWS) - {"upload", "uploaded", "sweep"},
}
OPEN_STEP = {
    "intent": "intent",
    "upload_started": "upload",
    "uploaded": "uploaded",
    "create_started": "create",
}
JOURNAL = (*OPEN_STEP, "submitted", "ingested")
#: Seconds the emulator waits before answering, after doing the work: a kill lands between
#: "the provider did it" and "we recorded it" as often as the issue needs, and lists and
#: downloads take a little of the time they take for real (lists a little slower than the
#: rest: at 814 kills with 0.02 s, the poll and sweep windows had only 6 and 5 hits).
LATENCY = {
    "files.create": 0.01, "batches.create": 0.02, "messages.batches.create": 0.02,
    "files.retrieve": 0.01, "files.content": 0.02, "messages.batches.results": 0.02,
    "batches.list": 0.06, "batches.retrieve": 0.02, "files.list": 0.08,
    "messages.batches.list": 0.06, "messages.batches.retrieve": 0.02,
}  # fmt: skip
#: A batch takes a second or so to run, so that workers poll batches in flight.
EMULATOR = {"validating_seconds": 0.3, "rate": 200.0}
SETTLE_CALLS = 0.15  # seconds for the emulator to log the call a killed worker was making


# -- processes ---------------------------------------------------------------------------
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
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/_emulator/health", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.1)


class Worker:
    """One `llmbatch worker` process; `ready` is when it printed that it is serving."""

    def __init__(self, db: str, config: Path, log: Path) -> None:
        env = {**os.environ, KEY_ENV: "sk-crash-matrix"}
        for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
            env.pop(name, None)
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.ready = 0.0
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
                out.write(line)
        self._serving.set()  # it died first: wait_ready sees ready == 0

    def wait_ready(self, timeout: float = 180.0) -> float:
        if not self._serving.wait(timeout) or not self.ready:
            self.kill()
            raise RuntimeError("a worker did not start (see workers.log)")
        return self.ready

    def kill(self) -> float:
        """SIGKILL; returns the instant it was sent, once the process is reaped."""
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()  # reaped: a zombie would still look alive to the next worker
        self._copier.join(timeout=10)
        return at

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self._copier.join(timeout=10)


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


def take_over(db: str, workers: list[Worker], timeout: float = 180.0) -> tuple[Worker, float]:
    """Wait until one of `workers` holds the engine lease: that one, and when it was seen to."""
    tags = {f":{w.proc.pid}:": w for w in workers}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = rows(db, "SELECT holder FROM leases WHERE name = 'engine'")
        for tag, w in tags.items():
            if held and tag in str(held[0][0]):
                return w, time.time()
        if all(w.proc.poll() is not None for w in workers):
            break
        time.sleep(0.005)
    raise RuntimeError("no worker took the engine lease over (see workers.log)")


def waiting(db: str) -> tuple[int, int]:
    """(queued, unfinished) requests."""
    (queued, unfinished), = rows(
        db,
        "SELECT COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0), COUNT(*) "
        "FROM requests WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
    )  # fmt: skip
    return int(queued), int(unfinished)


def requests_for(provider: str, start: int, n: int) -> dict[str, list[dict[str, Any]]]:
    """A round's requests per provider; `mixed` alternates them."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in range(start, start + n):
        p = provider if provider != "mixed" else ("openai", "anthropic")[i % 2]
        messages = [{"role": "user", "content": f"crash matrix {i}"}]
        if p == "anthropic":
            params = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": messages}
            out[p].append({"custom_id": f"c{i}", "params": params})
        else:
            out[p].append(
                {"custom_id": f"c{i}", "body": {"model": "gpt-4o-mini", "messages": messages}}
            )
    return out


def enqueue(db: str, provider: str, start: int, n: int) -> None:
    for p, items in requests_for(provider, start, n).items():
        with Queue(db, "crash", provider=p) as q:
            q.add_many(items)


def write_config(path: Path, url: str, batch: int, provider: str) -> Path:
    text = (
        # an unknown create waits submit_timeout + settle_seconds (27 s + 1 s under a 30 s
        # lease if not set); the emulator answers in well under a second
        "[engine]\nlease_ttl = 30.0\nsubmit_timeout = 2.0\nsettle_seconds = 1.0\n"
        "poll_interval = 0.1\n"
        "max_poll_interval = 0.3\nbackoff_seconds = 0.2\nmax_batch_requests = "
        f"{batch}\n"
        # kept so the audit can read every input and result; a real run deletes them
        "delete_files = false\n"
        # small batches reach OpenAI's 2,000 creates an hour; the emulator has no such limit
        "batches_per_hour = 1000000\n"
    )
    if provider in ("openai", "mixed"):
        text += f'\n[providers.openai]\nbase_url = "{url}/v1"\napi_key_env = "{KEY_ENV}"\n'
    if provider in ("anthropic", "mixed"):
        text += f'\n[providers.anthropic]\nbase_url = "{url}"\napi_key_env = "{KEY_ENV}"\n'
    path.write_text(text)
    return path


# -- classifying kills ---------------------------------------------------------------------
@dataclass
class Kill:
    began: float  # the worker took the engine lease: its active time starts
    at: float  # SIGKILL sent
    queued: int  # queued requests right after the kill
    until: float  # the next worker was let go: calls logged before are the killed one's
    start_s: float  # how long the worker took to say it was serving (not counted)


def call_kind(method: str, path: str) -> str:
    parts = path.strip("/").split("/")  # v1, files|batches|messages, ...
    if parts[1:2] == ["messages"]:
        parts = ["v1", "batches", *parts[3:]]  # /v1/messages/batches/... reads like /v1/batches
    if method == "POST" and len(parts) == 2:
        return {"files": "upload", "batches": "create"}.get(parts[1], "other")
    if method == "GET" and parts[1] == "files":
        return {2: "list_files", 3: "file", 4: "content"}.get(len(parts), "other")
    if method == "GET" and parts[1] == "batches":
        return {2: "list", 3: "retrieve", 4: "content" if parts[-1] == "results" else "other"}.get(
            len(parts), "other"
        )
    return "other"


class Timeline:
    """The store's journal events and the emulator's calls, in time order."""

    def __init__(self, events: list[tuple[float, str, int]], calls: list[dict[str, Any]]) -> None:
        self.events = sorted(events)
        self.event_at = [e[0] for e in self.events]
        self.calls = sorted((float(c["at"]), call_kind(c["method"], c["path"])) for c in calls)
        self.call_at = [c[0] for c in self.calls]
        self.by_batch: dict[int, list[tuple[float, str]]] = defaultdict(list)
        for at, kind, batch in self.events:
            self.by_batch[batch].append((at, kind))

    def interrupted(self, at: float) -> list[int]:
        """Intents whose upload or create had started, not finished, at `at`."""
        out = []
        for batch, evs in self.by_batch.items():
            kinds = {k for t, k in evs if t <= at}
            if kinds & {"upload_started", "create_started"} and not kinds & {
                "submitted",
                "ingested",
            }:
                out.append(batch)
        return out

    def classify(self, k: Kill) -> str:
        # an intent left half-sent by an earlier kill, that this worker has not moved yet
        reconciling = any(
            not any(k.began < t <= k.at for t, _ in self.by_batch[b])
            for b in self.interrupted(k.began)
        )
        i = bisect.bisect_right(self.call_at, k.at)
        if i < len(self.calls) and self.calls[i][0] <= k.until:
            kind = self.calls[i][1]  # under way when the kill landed
            if kind in ("upload", "create"):
                return kind
            if kind in ("file", "content"):
                return "download"
            if kind in ("list", "retrieve", "list_files"):
                return "reconcile" if reconciling else "sweep" if kind == "list_files" else "poll"
            return "idle"
        j = bisect.bisect_right(self.event_at, k.at) - 1
        event = self.events[j] if j >= 0 and self.events[j][0] > k.began else None
        if event is not None and event[1] in OPEN_STEP:
            return OPEN_STEP[event[1]]
        last = self.calls[i - 1] if i > 0 and self.calls[i - 1][0] > k.began else None
        if event is None and last is None:
            return "takeover"
        if reconciling and event is None:
            return "reconcile"  # reading what a list answered, or about to list again
        if last is not None and (event is None or last[0] > event[0]):
            if last[1] == "file":
                return "download"  # the next request fetches its content
            if last[1] == "content":
                return "ingest"
        return "packing" if k.queued else "idle"


def classify(db: str, calls: list[dict[str, Any]], kills: list[Kill]) -> list[str]:
    """The window each kill landed in."""
    events = rows(
        db,
        "SELECT at, kind, batch_id FROM events WHERE batch_id IS NOT NULL AND kind IN "
        f"({', '.join('?' * len(JOURNAL))})",
        JOURNAL,
    )
    timeline = Timeline([(float(t), str(kind), int(b)) for t, kind, b in events], calls)
    return [timeline.classify(k) for k in kills]


def reclassify(work: Path, db: str, seed: int) -> int:
    """Classify the kills of a finished run again (its store, kills.jsonl, emulator data)."""
    fields = {f.name for f in dataclasses.fields(Kill)}
    with open(work / "kills.jsonl") as f:
        kills = [Kill(**{k: v for k, v in json.loads(ln).items() if k in fields}) for ln in f]
    emulator, url = start_emulator(work, seed)
    try:
        calls = all_calls(url)
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=60)
    windows = Counter(classify(db, calls, kills))
    print(json.dumps({"kills": len(kills), "windows": dict(windows.most_common())}), flush=True)
    return 0


# -- the audit --------------------------------------------------------------------------------
def all_calls(url: str) -> list[dict[str, Any]]:
    control, out = EmulatorControl(url), []
    while True:
        page = control.calls(since=out[-1]["seq"] if out else 0)
        if not page:
            return out
        out.extend(page)


def audit(db: str, url: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Count what the store and the emulator hold."""
    (store_id,) = rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0]
    requests = rows(
        db,
        "SELECT r.id, r.state, COUNT(x.id) FROM requests r "
        "LEFT JOIN results x ON x.request_id = r.id GROUP BY r.id, r.state",
    )
    attempts = {  # custom ids as sent: `<store>-<nonce>-<attempt>` (ownership.py)
        f"{store_id}-{n}-{a}" if n else f"{store_id}-{a}": (int(r), int(b))
        for a, r, b, n in rows(
            db,
            "SELECT a.id, a.request_id, a.batch_id, t.nonce FROM attempts a "
            "JOIN batches t ON t.id = a.batch_id",
        )
    }
    ingested = {
        str(p)
        for p, s in rows(db, "SELECT provider_batch_id, state FROM batches")
        if s == "ingested"
    }
    remote: dict[str, list[str]] = {}  # provider batch id -> custom ids it carried
    remote.update(openai_batches(url, store_id))
    remote.update(anthropic_batches(url, store_id))
    per_intent: Counter[int] = Counter()
    sent: Counter[int] = Counter()  # request id -> created batches that carried it
    for custom_ids in remote.values():
        mine = [attempts[c] for c in custom_ids if c in attempts]
        for intent in {b for _r, b in mine}:
            per_intent[intent] += 1
        for request, _b in mine:
            sent[request] += 1
    creates = sum(
        1 for c in calls if call_kind(c["method"], c["path"]) == "create" and c["status"] < 300
    )
    adopted = rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'adopted'")[0][0]
    return {
        "requests": len(requests),
        "succeeded": sum(1 for _r, state, _n in requests if state == "succeeded"),
        "lost": sum(1 for _r, state, n in requests if state not in FINAL or (state != "cancelled" and n == 0)),
        "duplicated": sum(1 for _r, _s, n in requests if n > 1) + sum(1 for n in sent.values() if n > 1),
        "double_creates": sum(1 for n in per_intent.values() if n > 1),
        "intents": len(per_intent),
        "provider_batches": len(remote),
        "create_calls": creates,
        "not_ingested": sum(1 for b in remote if b not in ingested),
        "adopted_after_kill": int(adopted),
    }  # fmt: skip


def openai_batches(url: str, store_id: str) -> Iterator[tuple[str, list[str]]]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    for b in client.batches.list(limit=100):
        if (b.metadata or {}).get("llmbatch_store") == store_id:
            content = client.files.content(b.input_file_id).content
            yield b.id, [json.loads(raw)["custom_id"] for raw in content.splitlines()]


def anthropic_batches(url: str, store_id: str) -> Iterator[tuple[str, list[str]]]:
    """Anthropic batches carry no metadata: their results name our attempt ids."""
    import anthropic

    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    for b in client.messages.batches.list(limit=100):
        ids = [r.custom_id for r in client.messages.batches.results(b.id)]
        if any(i.startswith(store_id + "-") for i in ids):
            yield b.id, ids


# -- the run ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--kills", type=int, default=1000)
    p.add_argument("--small", action="store_true", help="CI size: 30 kills, rounds of 1,000")
    p.add_argument("--round", type=int, default=None, help="requests per round (20,000)")
    p.add_argument("--batch", type=int, default=100, help="requests per batch at most")
    p.add_argument("--provider", choices=("openai", "anthropic", "mixed"), default="openai")
    p.add_argument("--max-life", type=float, default=3.0, help="seconds of work, at most")
    p.add_argument(
        "--max-seconds", type=float, default=float("inf"), help="stop killing after this long"
    )
    p.add_argument("--standbys", type=int, default=2, help="warm workers waiting to take over")
    p.add_argument("--db", default=None, help="default: a SQLite file in the work dir")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reclassify", action="store_true", help="only classify --work-dir's kills")
    args = p.parse_args(argv)
    if args.reclassify:
        work = Path(args.work_dir)
        return reclassify(work, args.db or str(work / "crash.db"), args.seed)
    kills_wanted = 30 if args.small else args.kills
    round_size = args.round or (1000 if args.small else 20_000)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="llmbatch-crash-matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    db = args.db or str(work / "crash.db")
    rng = random.Random(args.seed)
    started = time.monotonic()
    emulator, url = start_emulator(work, args.seed)
    log = work / "workers.log"
    kills: list[Kill] = []
    try:
        control = EmulatorControl(url)
        for op, seconds in LATENCY.items():
            control.add_fault(op, "latency", mode="after", seconds=seconds)
        control.set_config(**EMULATOR)
        config = write_config(work / "llmbatch.toml", url, args.batch, args.provider)
        enqueue(db, args.provider, 0, round_size)
        enqueued = round_size
        # Warm standbys (started, serving, waiting for the lease) replace each killed worker,
        # so that the run is not mostly Python imports. They are paused while the kill lands
        # and the killed worker's last call is logged, then one takes the lease over from
        # the dead worker as any restarted worker would.
        standbys = [Worker(db, config, log)]
        active, began = take_over(db, standbys)
        standbys.remove(active)
        while len(kills) < kills_wanted and time.monotonic() - started < args.max_seconds:
            standbys = [w for w in standbys if w.proc.poll() is None]  # one may fail to start
            standbys += [Worker(db, config, log) for _ in range(args.standbys - len(standbys))]
            time.sleep(max(0.0, began + rng.uniform(0, args.max_life) - time.time()))
            for w in standbys:
                w.pause()
            at = active.kill()
            queued, unfinished = waiting(db)
            time.sleep(SETTLE_CALLS)
            until = time.time()
            kills.append(Kill(began, at, queued, until, active.ready - active.spawned))
            for w in standbys:
                w.resume()
            if unfinished == 0:
                enqueue(db, args.provider, enqueued, round_size)
                enqueued += round_size
            active, began = take_over(db, standbys)
            standbys.remove(active)
        deadline = time.monotonic() + 600  # the last one drains the queue
        while waiting(db)[1] and time.monotonic() < deadline:
            time.sleep(0.2)
        for w in [active, *standbys]:
            w.stop()
        calls = all_calls(url)
        figures = {"kills": len(kills), "provider": args.provider, **audit(db, url, calls)}
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=60)
    landed = classify(db, calls, kills)
    windows = Counter(landed)
    with open(work / "kills.jsonl", "w") as out:  # one line per kill, to look into a figure
        for k, w in zip(kills, landed, strict=True):
            out.write(json.dumps({**dataclasses.asdict(k), "window": w}) + "\n")
    protocol = set().union(*(PROTOCOL[x] for x in PROTOCOL if args.provider in (x, "mixed")))
    figures["windows"] = {w: windows.get(w, 0) for w in WINDOWS if w in protocol}
    floor = 10 if len(kills) >= 1000 else 0
    figures["thin_windows"] = [w for w, n in figures["windows"].items() if n < floor]
    text = log.read_text(errors="replace")
    figures["database_locked"] = text.lower().count("database is locked")
    figures["tracebacks"] = text.count("Traceback")
    figures["enqueued"] = enqueued
    starts = sorted(k.start_s for k in kills)
    figures["worker_start_s"] = round(starts[len(starts) // 2], 2)  # the median, not counted
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures), flush=True)
    bad = (
        figures["lost"] or figures["duplicated"] or figures["double_creates"]
        or figures["not_ingested"] or figures["create_calls"] != figures["provider_batches"]
        or figures["database_locked"] or figures["thin_windows"]
    )  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
