"""What archiving to a local S3 server adds to the end-to-end path of `bench_end_to_end`.

    python benchmarks/bench_archive.py [--requests N] [--repeat PAIRS] [--small]

The same generated requests are drained on SQLite through the emulator (a separate process
over loopback) in pairs of runs, the order alternating: once without `[archive]`, once
archiving every batch to moto's S3 server (a separate process, spoken to over HTTP through
boto3, multipart above 8 MiB). Prints one JSON line: the median seconds of each kind from
enqueue to results readable (`bench_end_to_end`'s figure) and of the drain alone, the
overhead of the medians and of each pair, the seconds the archiving thread was busy, the
bytes and objects archived per run, the worker's CPU seconds (and of them its engine thread's
while draining), its peak RSS, and the load
average. Floor (2 cores): archiving adds < 20 % at 100,000 requests. `--small` runs one
pair of 2,000.

On the quiet machine two runs gave +20.3 % and +16.6 % before the work below. Then, at
100,000 requests, `--repeat 1` twelve times, this branch and the code before it (same
script, `PYTHONPATH` to each's src) interleaved on the shared 2-core machine at load 8-13
(2026-12-07 22:26-22:43; one pair's wall overhead there swings -14 to +60 %, so the CPU
seconds are the comparison), medians of 6 each, what archiving added:
- before: end-to-end +5.5 %, worker CPU +1.15 s (of it the engine thread +0.46 s), the
  S3 and emulator servers +0.85 s;
- after: end-to-end +0.5 %, worker CPU +0.90 s (engine thread +0.12 s), servers +0.72 s.
What moved: the engine's ingest read the batch's attempt map and wrote attempts.jsonl (a
blake2b and a line per request) on its own path; the archiving thread joins the map now,
one orjson call a line (about 30 ms of CPU per 10,000 attempts). Uploads carry the SHA-256
the archive takes anyway (per part for multipart) and are not hashed again for SigV4 over
plain HTTP, nor CRC32'd: a few hundredths of a second per run (SHA-256 runs at ~1.7 GB/s
here: 150 MB archived a run). What is left is per request, not per byte: moto's ~7 ms of
CPU per request (about 9 S3 requests a batch), boto3's per-upload set-up, and the
emulator's 3 file deletes a batch. A timeline at load 10: each batch's archive (0.4-0.8 s)
ends before the next ingest; after the drain only the last batch's is left (~0.3 s).

Still +22.9 % on the quiet machine (pairs +19.2, +27.0). A timeline (2026-12-08, load 5-10)
showed the drain's two phases: the ten batches sent one after the other (the engine idle
about half of it, between sends and waiting for the emulator), then the ten ingests back to
back (the engine busy throughout); each batch's whole archive (15 MB: input 5.3, output 8.0,
attempts.jsonl 1.6, results.jsonl empty here; 7 S3 requests) ran during the next ingest,
the last one's after the drain. Now what is fixed before a batch's ingest is sent before it
(`Archiver.early`, a thread of its own): its input file and attempts.jsonl once the batch
is sent (the map pass, ~30 ms of Python a batch, into the sending phase's idle time), its
output file once downloaded (while ingest reads it); the archive after the ingest takes
those uploads and reads from the store only the attempts of the results the provider's
files do not hold. Files under the part size go in one `put_object` (the transfer manager
set up threads and futures per file). Same script, this branch and main (`7496c68`, and
`9cc0e5d` before the merge) interleaved, 10 runs each (`--repeat 1`, and 2 with
`--repeat 2`; 2026-12-08 00:57-01:35, load 6.5-15.5; wall overheads there swing -51 to
+108 % for either, so they compare nothing), medians:
- `archive_tail_s` (after the last ingest until every archive is written): main 0.34 s
  (0.16-1.21), this branch 0.10 (0.04-0.22);
- `archive_busy_s` (the archiving thread's passes): 7.3 -> 3.1 s;
- the archiving threads' CPU (worker CPU with archives less its engine thread's): 0.88 ->
  0.77 s; the S3 server's (split out now) 0.73-0.86 s on main, 0.73-0.87 here (the bytes,
  149 MB a run, and the 7 requests a batch are the same: moto's ~4.3 ms of CPU per MB is
  most of it); the engine thread's own CPU, with archives less without, +0.09 and +0.17 s
  (each spread -0.3 to +0.6: noise at that load).
In the quietest minutes (01:41-01:45, load 2.6-4.5, `--repeat 2`, main `c95124e`): main
-17.6 and +25.6 % (tail 0.21 s), this branch -13.8 and +0.8 % (tail 0.05 s).
On the quiet machine the expected effect: the tail (~0.3 s there) goes under 0.1 s, and about
half of the archiving work (CPU and GIL) leaves the back-to-back ingests for the sending
phase's idle time; from +22.9 % (~1.6 s) to an estimated +11-15 %, not measured here.

On the quiet machine (2026-12-08, the lead, nothing else running, load 0.5-2.4), with the
early uploads: +13.4 % (pairs +7.6, +20.5), +11.7 % (+28.0, +11.7, -4.6) and +13.8 % (+17.5,
+15.2, +2.6) end to end; the tail after the last ingest 0.05 s; the archiving threads ~1 CPU
s and moto ~1 CPU s a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_end_to_end import (
    KEY_ENV,
    cpu_s,
    emulator_cpu_s,
    enqueue,
    free_port,
    settings,
    start_emulator,
)
from gen_requests import lines
from llmbatch.archive import ArchiveSettings
from llmbatch.engine import Engine
from llmbatch.store import open_store
from llmbatch.worker import drain

AWS = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHARCHIVE0000",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-not-real",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **AWS},
    )  # fmt: skip
    import socket

    deadline = time.monotonic() + 120  # its imports take a minute on a loaded machine
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def drained(
    db: str, url: str, archive: ArchiveSettings | None, servers: tuple[int, ...]
) -> dict[str, float]:
    """Drain queue `bench`; seconds, and CPU seconds of this worker and of the emulator and
    S3 server processes (`servers`): on a loaded machine, the work apart from waiting."""
    store = open_store(db)
    engine = Engine(store, settings(url, archive=archive, max_batch_requests=10_000))
    t0, cpu, engine_cpu = time.perf_counter(), cpu_s(), time.thread_time()
    others = [emulator_cpu_s(pid) for pid in servers]
    result = drain(engine, queue="bench", timeout=1800)
    assert result.finished
    drained_at = time.perf_counter()
    engine_cpu = time.thread_time() - engine_cpu  # the drain's own thread: the engine's
    if archive is not None:  # the last archives, written after the last ingest
        while store.archive_due(time.time() + 1e9, 1):
            engine.tick(time.time())
            time.sleep(0.05)
        assert engine.archiver is not None
        engine.archiver.close()
    seconds, cpu = time.perf_counter() - t0, cpu_s() - cpu
    tail = time.perf_counter() - drained_at  # the archives written after the last ingest
    archive_s = engine.archiver.busy_seconds if engine.archiver is not None else 0.0
    engine.close()
    store.close()
    others = [emulator_cpu_s(pid) - cpu0 for pid, cpu0 in zip(servers, others, strict=True)]
    return {
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "engine_cpu_s": round(engine_cpu, 2),
        "servers_cpu_s": round(sum(others), 2),
        "s3_cpu_s": round(others[-1], 2),  # the S3 server's alone (the last of `servers`)
        "archive_s": round(archive_s, 2),
        "tail_s": round(tail, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--small", action="store_true", help="2,000 requests, one pair")
    ap.add_argument("--repeat", type=int, default=None, help="pairs of runs (3; 1 with --small)")
    args = ap.parse_args()
    args.repeat = args.repeat or (1 if args.small else 3)
    load = [round(x, 2) for x in os.getloadavg()]
    n = 2_000 if args.small else args.requests
    os.environ.update(AWS)
    os.environ[KEY_ENV] = "sk-bench-not-a-secret"
    import boto3

    with tempfile.TemporaryDirectory(prefix="llmbatch-bench-archive-") as tmp_s:
        tmp = Path(tmp_s)
        path = tmp / "requests.jsonl"
        with open(path, "wb") as f:
            for line in lines(n):
                f.write(line)
        emulator, url = start_emulator(tmp / "emulator")
        moto, s3_url = start_moto()
        try:
            s3 = boto3.session.Session().client("s3", endpoint_url=s3_url)
            s3.create_bucket(Bucket="bench-archive")
            warm = tmp / "warm.jsonl"  # first-run costs (imports, the emulator's caches) apart
            with open(warm, "wb") as f:
                for line in lines(200, seed=1):
                    f.write(line)
            enqueue(str(tmp / "warm.db"), warm)
            servers = (emulator.pid, moto.pid)
            drained(str(tmp / "warm.db"), url, None, servers)
            archive = ArchiveSettings(url="s3://bench-archive/llmbatch", endpoint_url=s3_url)
            runs: list[tuple[dict[str, float], dict[str, float]]] = []
            for i in range(args.repeat):  # paired, the order alternating: load drifts
                pair: dict[bool, dict[str, float]] = {}
                for archived_run in (False, True) if i % 2 == 0 else (True, False):
                    db = str(tmp / f"{'archived' if archived_run else 'plain'}-{i}.db")
                    enqueue_s = enqueue(db, path)
                    pair[archived_run] = drained(
                        db, url, archive if archived_run else None, servers
                    )
                    pair[archived_run]["end_to_end_s"] = round(
                        enqueue_s + pair[archived_run]["seconds"], 2
                    )
                runs.append((pair[False], pair[True]))
            objects = s3.list_objects_v2(Bucket="bench-archive").get("Contents", [])
        finally:
            for p in (emulator, moto):
                p.terminate()
                p.wait(10)
    plain = {k: statistics.median(r[0][k] for r in runs) for k in runs[0][0]}
    archived = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}

    def pct(key: str, p: dict[str, float], a: dict[str, float]) -> float:
        return round(100 * (a[key] - p[key]) / p[key], 1)

    out = {
        "requests": n,
        "runs": args.repeat,
        # bench_end_to_end's figure: enqueue to results readable
        "without_archive_s": plain["end_to_end_s"],
        "with_archive_s": archived["end_to_end_s"],
        "overhead_pct": pct("end_to_end_s", plain, archived),
        "overhead_pct_each": [pct("end_to_end_s", p, a) for p, a in runs],
        # the drain alone (archiving adds nothing to enqueue): the stricter ratio
        "drain_s": {"without": plain["seconds"], "with": archived["seconds"]},
        "drain_overhead_pct": pct("seconds", plain, archived),
        "drain_overhead_pct_each": [pct("seconds", p, a) for p, a in runs],
        "archive_busy_s": archived["archive_s"],
        # of the drain with archives, the seconds after its last ingest until every archive
        # was written (the last batch's, and the closing of the engine's archiving thread)
        "archive_tail_s": archived["tail_s"],
        "worker_cpu_s": {"without": plain["cpu_s"], "with": archived["cpu_s"]},
        # of which the engine's thread, until the queue is drained (the archiving thread's
        # work is the rest): what archiving takes from the engine's own path
        "engine_cpu_s": {"without": plain["engine_cpu_s"], "with": archived["engine_cpu_s"]},
        # the emulator's and the S3 server's: the whole work, which load does not change
        "servers_cpu_s": {"without": plain["servers_cpu_s"], "with": archived["servers_cpu_s"]},
        # of which the S3 server's (the emulator's is the rest: its polls follow the wall time)
        "s3_server_cpu_s": archived["s3_cpu_s"],
        # the archiving threads' (the worker's CPU less its engine thread's, with archives)
        "archive_threads_cpu_s": round(archived["cpu_s"] - archived["engine_cpu_s"], 2),
        "cpu_overhead_pct": round(
            100
            * (archived["cpu_s"] + archived["servers_cpu_s"])
            / (plain["cpu_s"] + plain["servers_cpu_s"])
            - 100,
            1,
        ),
        "objects_per_run": len(objects) // args.repeat,
        "archived_mb_per_run": round(sum(o["Size"] for o in objects) / 1e6 / args.repeat, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m": {"start": load[0], "end": round(os.getloadavg()[0], 2)},
        "floor_overhead_pct": 20,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
