"""Webhook delivery: how soon after ingest a receiver hears, and that none is lost when
workers are killed.

    python benchmarks/bench_webhooks.py [--small] [--kills N] [--receiver-delay S]

A real HTTP receiver on loopback verifies every signature (`llmbatch.webhooks.verify`).

1. latency: one engine drains generated requests through the emulator (a separate process) in
   batches of 50; each `batch.ingested` event's delay is the receiver's clock at arrival minus
   the moment the batch was marked ingested (its `ingested` event row). Floor: p99 < 1 s.
2. kills: real `llmbatch worker` processes drain another queue (2,000 requests in batches of
   20) and are SIGKILLed at random instants (`--kills`, 30; 5 with `--small`), each replaced
   at once; the receiver pauses up to `--receiver-delay` (0.3 s) before answering, and every
   other kill waits for a delivery in flight (`kills_mid_delivery`), the rest land anywhere. Then every batch ingested must have raised
   its `batch.ingested` event and the queue its `queue.finished` (`never_raised`), every
   event must have reached the receiver with a good signature (`lost`), and an event
   delivered again must be the same bytes (`redelivered_changed`): duplicates are what the
   README allows (at least once, the same id, receivers dedupe on it). Floors: all 0.

Prints one JSON line (with the load average); exits 1 if a floor is missed. `--small` runs
in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_end_to_end import KEY_ENV, enqueue, settings, start_emulator
from gen_requests import lines
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.webhooks import WebhookSettings, WebhookVerificationError, verify
from llmbatch.worker import drain

SECRET_ENV = "LLMBATCH_BENCH_WEBHOOK_SECRET"
SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQ="


class Receiver:
    """Records (event id, arrival time) of each delivery whose signature checks out, and
    the body of each event id (a redelivery must be the same event). With `delay`, it takes
    a random pause up to that long before answering, so kills land mid-delivery too."""

    def __init__(self) -> None:
        self.got: list[tuple[str, float]] = []
        self.bodies: dict[str, bytes] = {}
        self.changed = 0  # event ids delivered again with another body
        self.bad = 0
        self.delay = 0.0
        self.in_flight = 0
        self.lock = threading.Lock()
        rng = random.Random(2)
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                at = time.time()
                try:
                    event = verify(body, dict(self.headers), SECRET)
                    event_id = str(event["id"])
                    with rx.lock:
                        rx.got.append((event_id, at))
                        if rx.bodies.setdefault(event_id, body) != body:
                            rx.changed += 1
                    status = 200
                except WebhookVerificationError:
                    rx.bad += 1
                    status = 400
                if rx.delay:
                    with rx.lock:
                        rx.in_flight += 1
                        pause = rng.uniform(0, rx.delay)
                    time.sleep(pause)
                    with rx.lock:
                        rx.in_flight -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for event_id, at in list(self.got):
            out.setdefault(event_id, at)
        return out


def rows(db: str, statement: str) -> list[tuple[Any, ...]]:
    store: Any = open_store(db)
    try:
        with store._read() as cur:
            cur.execute(statement)
            return list(cur.fetchall())
    finally:
        store.close()


def latency(tmp: Path, url: str, rx: Receiver, n: int) -> dict[str, Any]:
    path = tmp / "latency.jsonl"
    with open(path, "wb") as f:
        for line in lines(n, seed=3):
            f.write(line)
    db = str(tmp / "latency.db")
    enqueue(db, path)
    hooks = WebhookSettings(url=rx.url, secret_env=SECRET_ENV)
    engine = Engine(open_store(db), settings(url, webhooks=hooks, max_batch_requests=50))
    assert drain(engine, queue="bench", timeout=600).finished
    deadline = time.monotonic() + 30
    while rows(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")[0][0]:
        assert time.monotonic() < deadline
        engine.tick(time.time())
    engine.close()
    first = rx.first()
    # from the moment the batch was marked ingested (the event row's wall clock)
    delays = sorted(
        first[f"evt_{sid}_batch_{b}"] - float(at)
        for sid, b, at in rows(
            db,
            "SELECT (SELECT value FROM meta WHERE key = 'store_id'), batch_id, at FROM events "
            "WHERE kind = 'ingested'",
        )
    )
    return {
        "events": len(delays),
        "p50_s": round(delays[len(delays) // 2], 3),
        "p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3),
        "max_s": round(delays[-1], 3),
    }


def kills(tmp: Path, url: str, rx: Receiver, n: int, count: int, delay: float) -> dict[str, Any]:
    path = tmp / "kills.jsonl"
    with open(path, "wb") as f:
        for line in lines(n, seed=5):
            f.write(line)
    db = str(tmp / "kills.db")
    enqueue(db, path)
    config = tmp / "llmbatch.toml"
    config.write_text(
        "[engine]\npoll_interval = 0.1\nmax_poll_interval = 0.5\nsettle_seconds = 2\n"
        "submit_timeout = 2\nmax_batch_requests = 20\nlease_ttl = 10\n"
        f'[providers.openai]\nbase_url = "{url}/v1"\napi_key_env = "{KEY_ENV}"\n'
        f'[webhooks]\nurl = "{rx.url}"\nsecret_env = "{SECRET_ENV}"\n'
    )
    env = {**os.environ, "LLMBATCH_DB": db, "LLMBATCH_CONFIG": str(config)}
    exe = str(Path(sys.executable).parent / "llmbatch")
    rng = random.Random(1)
    done_kills = mid_delivery = 0
    rx.delay = delay

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [exe, "worker", "--interval", "0.05"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    w = start()
    try:
        while done_kills < count:
            if done_kills % 2:  # every other kill while a delivery is in flight
                deadline = time.monotonic() + 15
                while not rx.in_flight and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.02))
            else:  # the others anywhere: start-up, packing, polling, ingest, delivery
                time.sleep(rng.uniform(0.3, 2.0))
            with rx.lock:
                mid_delivery += rx.in_flight > 0
            w.send_signal(signal.SIGKILL)
            w.wait()
            done_kills += 1
            w = start()
        deadline = time.monotonic() + 120
        while True:
            unfinished = rows(
                db,
                "SELECT (SELECT COUNT(*) FROM requests WHERE state NOT IN "
                "('succeeded', 'failed', 'cancelled')), "
                "(SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL)",
            )[0]
            if unfinished == (0, 0):
                break
            assert time.monotonic() < deadline, unfinished
            time.sleep(0.1)
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(30)
    rx.delay = 0.0
    events = {str(e) for (e,) in rows(db, "SELECT event_id FROM outbox")}
    # what must have been raised: each batch ingested, and the queue finishing once at least
    (sid,) = rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0]
    ingested = [b for (b,) in rows(db, "SELECT id FROM batches WHERE state = 'ingested'")]
    owed = {f"evt_{sid}_batch_{b}" for b in ingested}
    finished = [e for e in events if e.startswith(f"evt_{sid}_queue_")]
    got = [e for e, _at in rx.got if e in events]
    return {
        "kills": done_kills,
        "kills_mid_delivery": mid_delivery,
        "batches": len(ingested),
        "events": len(events),
        "never_raised": len(owed - events) + (0 if finished else 1),
        "lost": len(events - set(got)),
        "delivered_more_than_once": len(got) - len(set(got)),
        "redelivered_changed": rx.changed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--kills", type=int, default=None)
    ap.add_argument(
        "--receiver-delay",
        type=float,
        default=0.3,
        help="the receiver's longest pause before answering in the kill run (seconds)",
    )
    args = ap.parse_args()
    load = round(os.getloadavg()[0], 2)
    os.environ[KEY_ENV] = "sk-bench-not-a-secret"
    os.environ[SECRET_ENV] = SECRET
    with tempfile.TemporaryDirectory(prefix="llmbatch-bench-webhooks-") as tmp_s:
        tmp = Path(tmp_s)
        emulator, url = start_emulator(tmp / "emulator")
        rx = Receiver()
        try:
            lat = latency(tmp, url, rx, 500 if args.small else 10_000)
            count = args.kills or (5 if args.small else 30)
            size = 200 if args.small else 2_000
            kill = kills(tmp, url, rx, size, count, args.receiver_delay)
        finally:
            emulator.terminate()
            emulator.wait(10)
            rx.server.shutdown()
    out = {
        "latency": lat,
        "kills": kill,
        "bad_signatures": rx.bad,
        "floors": {"p99_s": 1.0, "lost": 0},
    }
    out["load_avg_1m"] = {"start": load, "end": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    failed = kill["lost"] or kill["never_raised"] or kill["redelivered_changed"] or rx.bad
    if lat["p99_s"] >= 1.0 or failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
