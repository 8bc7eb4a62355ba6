"""Enqueue throughput: validation, canonical hash, uniqueness and import bookkeeping included.

    python benchmarks/bench_enqueue.py [--requests N] [--small] [--pg DSN]

Generates N seeded chat-completion lines (benchmarks/gen_requests.py), then enqueues them
with `llmbatch enqueue`'s code path into a fresh SQLite file and, if a PostgreSQL DSN is given
(--pg, LLMBATCH_BENCH_PG or LLMBATCH_TEST_PG), a fresh PostgreSQL database. Each run is a
fresh process, so its peak RSS is its own; the parser child's peak is reported apart.
Prints one JSON line. Floors (1M requests, 2 cores): SQLite ≥ 75,000/s, PostgreSQL ≥
30,000/s, peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))
from gen_requests import lines


def _worker(db: str, path: str) -> None:
    from llmbatch.importer import enqueue_file
    from llmbatch.store import open_store

    store = open_store(db)
    t = time.perf_counter()
    report = enqueue_file(store, path, queue="bench")
    seconds = time.perf_counter() - t
    store.close()
    print(json.dumps({
        "added": report.added, "seconds": seconds,
        "writer_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parser_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))  # fmt: skip


def _run(db: str, path: Path, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", db, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["requests_per_s"] = round(r["added"] / r["seconds"])
    r["mb_per_s"] = round(size / r["seconds"] / 1e6, 1)
    r["seconds"] = round(r["seconds"], 2)
    r["writer_rss_mb"] = round(r["writer_rss_mb"], 1)
    r["parser_rss_mb"] = round(r["parser_rss_mb"], 1)
    return r


def _pg_database(dsn: str) -> tuple[str, str]:
    import psycopg

    name = f"llmbatch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    # A URL, not key=value: the store takes anything else for a SQLite path.
    return name, urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def _drop(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--small", action="store_true", help="20,000 requests (what CI runs)")
    ap.add_argument(
        "--pg", default=os.environ.get("LLMBATCH_BENCH_PG") or os.environ.get("LLMBATCH_TEST_PG")
    )
    args = ap.parse_args()
    n = 20_000 if args.small else args.requests
    with tempfile.TemporaryDirectory(prefix="llmbatch-bench-") as tmp:
        path = Path(tmp) / "requests.jsonl"
        with open(path, "wb") as f:
            for line in lines(n):
                f.write(line)
        size = path.stat().st_size
        report: dict[str, object] = {
            "bench": "enqueue",
            "requests": n,
            "mean_line_bytes": round(size / n),
        }
        report["sqlite"] = _run(str(Path(tmp) / "bench.db"), path, size)
        if args.pg:
            name, dsn = _pg_database(args.pg)
            try:
                report["postgres"] = _run(dsn, path, size)
            finally:
                _drop(args.pg, name)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
