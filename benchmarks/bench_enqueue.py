"""Enqueue throughput: validation, canonical hash, uniqueness and import bookkeeping included.

    python benchmarks/bench_enqueue.py [--requests N] [--small] [--pg DSN]

Generates N seeded chat-completion lines (benchmarks/gen_requests.py), then enqueues them
with `llmbatch enqueue`'s code path into a fresh SQLite file and, if a PostgreSQL DSN is given
(--pg, LLMBATCH_BENCH_PG or LLMBATCH_TEST_PG), a fresh PostgreSQL database. Each run is a
fresh process, so its peak RSS is its own; the parser child's peak is reported apart.
Prints one JSON line. Floors (1M requests, 2 cores): SQLite ≥ 75,000/s, PostgreSQL ≥
60,000/s, peak RSS < 200 MB.

`raw_executemany` is the floor SQLite is held to (issue 23: ≥ 0.8× it, `vs_raw`): the same
rows, made before the clock starts (validated, hashed), inserted into the same `requests` and
`request_bodies` tables with their indexes by a bare `executemany` in one transaction per
50,000, into a fresh store file of the same schema.

The CPU seconds (`writer_cpu_s`, `parser_cpu_s`, `server_cpu_s`: the PostgreSQL backend's,
read from /proc where the server is local; the raw insert's `cpu_s`) say how much work there
was: on a shared machine the wall figures are mostly waiting for a core.

Issue 23's SQLite enqueue at 1M (branch `enqueue`), 2026-12-08 01:13-01:45 on the shared
2-core machine, this code and main at 7496c68 in their own worktrees and venvs, alternated on
one generated file. Where the writer's time went: a bare sqlite3 loop of the same rows in
chunks of 10,000 (CPU s / MB written per 1M): `requests` alone 5.5 / 442, `request_bodies`
alone 7.5 / 2,741 for a 438 MB table. Each commit rewrote in the WAL every page of the
bodies' hash index it touched, and hashes are random: once that index (~30 MB) outgrew a
chunk's reach, a commit of 10,000 touched most of its leaf pages (~22 MB a commit). A page
cache of 64 MiB instead of 16 saved 0.5 CPU s and no writes; checkpoints every 128 MB of WAL
instead of 32 ~0.3-0.5 CPU s and ~200 MB (left as they are: a WAL file keeps its largest
size). Now the bodies of an import are held and written 50,000 at a time in hash order, and
the rest in the import's own commit (the rows are invisible until then; a body follows its
row, so no clean-up sees it as no one's; bodies leave the buffer only when the transaction
that wrote them commits). Bare loop, both tables: 11.4 -> 9.7 CPU s, 3,230 -> 1,872 MB
(100,000 at a time: 9.5, 1,594). `enqueue_file` alone at 1M, load 4.5-5.9, main / this code
/ this code / main: wall 38.7 / 27.1 / 24.1 / 37.3 s, writer 15.41 / 12.09 / 12.01 / 15.77
CPU s, parser 8.64 / 7.44 / 7.37 / 8.43, written 3,408 / 2,041 MB. This benchmark at 1M:
at load 10.3 main 99.3 s (writer 16.09, parser 8.50), at 7.6 this code 49.4 s (13.15,
7.78); as the load fell to 4.0 and 2.8, this code 22.6 s (13.47, 8.03), main 18.5 s (15.21,
8.48) (the raw insert, the same code in both, took 17.0 and 22.8 s in those two runs: the
walls there are the disk's and the load's). The writer's peak RSS 108 -> 128-133 MB (the
held bodies, ~25 MB); the rows and the same rejects, dumped and compared with main's on a
130,000-line file with a duplicate and a bad line (`--skip-invalid`, then again without it):
identical. What the writer spends now (1M): `requests` ~5.5 CPU s (its `requests_ready`
index is half the table's file: 35 of 68 MB at 300,000, 0.3 CPU s per 300,000), the bodies
~4, unmarshalling the chunks ~3. `bench_end_to_end --requests 1000000 --no-anthropic
--no-gemini`, one run each as the machine went quiet (01:51-01:55, load 0.7-2.3): main's
enqueue phase 29.2 s (`enqueue_cpu_s` 22.2), this code's 13.8 s (19.7); the whole run 69.1
against 55.4 s (floor 25.4 and 14.5 s in those runs: 2.72x and 3.81x); worker peak RSS 139.2
against 143.7 MB.

Issue 23's PostgreSQL enqueue (branch `pgenq`), 2026-12-08 00:30-01:06 on the shared 2-core
machine (load 5-12), this code and main at 9cc0e5d in their own worktrees and venvs, each
`--worker` run alone into a fresh database, alternated on one generated file. Where the
server's time went before (backend CPU s per 200,000, read from /proc statement by
statement): COPY into the staging table 0.26, its move into `requests` with ON CONFLICT 1.19,
the bodies' move with ON CONFLICT 1.12: the staging table written and read twice, a conflict
probe before every speculative insertion, and a heap insert per row where COPY batches them.
Now a chunk is COPYed straight into `requests`, and its bodies (one per hash, in hash order:
a third less server CPU than line order) straight into `request_bodies`, each in a
savepoint; a unique violation (a re-enqueue, a duplicate, a concurrent import, a body stored
before) rolls that COPY back, and the chunk and the rest of its import go the staged way as
before. Rows and bodies of both dumped and compared: identical. A re-enqueue of 200,000
unchanged lines (its first COPY fails at its first row) costs what it did: server 1.49, 1.44
/ 1.44, 1.45 CPU s, writer 1.12, 1.12 / 1.19, 1.22. 1,000,000 requests, two rounds (this /
main): server CPU 8.33, 6.99 / 14.79, 13.89 s; writer 3.09, 2.90 / 2.22, 2.13;
parser 7.87, 7.26 / 7.61, 7.16; wall (load 10-12) 43.0, 41.4 / 67.4, 44.2 s. The writer pays
~0.8 s for two COPYs and the sort; `set_types(["bytea"])` had found psycopg's Python-level
DB-API `Binary` dumper by the type's oid (~0.1 writer CPU s per 100,000 until given the C
one). What remains on the server (perf, 200,000): index inserts 55 % (the requests COPY is
0.78 s, of which `requests_ready` 0.22 and the (queue, custom_id) key 0.18; then the bodies'
hash key), the heap multi-insert 18 %, COPY's parsing 11 %, WAL 6 %; text keys `COLLATE "C"`
saved nothing here (C.UTF-8). The writer waits on the store, not on the parser: of 35-41 s at
1M, 3-4 s went waiting for chunks, the child's start included; each chunk's commit waited
14-18 ms (~1.6 s per 1M: larger chunks on PostgreSQL would halve it). The whole benchmark at 1M,
01:01-01:05 (load 11-12): PostgreSQL 43.75 s, 22,857/s (server 8.67, writer 3.44, parser
8.44 CPU s); SQLite's code is unchanged (81.8 s against the raw insert's 50.4 at this load).
Writer + server, the critical path, went from ~16-17 to ~10-11 CPU s per 1M: ~90,000/s with
a core free for them; the 60,000/s floor is not shown met on this loaded machine.

Issue 23's enqueue work (branch `enqueue`), 2026-12-07 22:06-22:48 on the shared 2-core
machine (load 8.5-15; each `--worker` run and the raw insert alternated on one generated
file, main at c09e663 in its own worktree and venv). The parser child per line, counted by
valgrind (instructions, which the load does not move): 94.7k -> 64.1k (loads 12k, text
sizes 18k -> 10k, the hash 11k -> 10k, the rest the Python around them; the fast path
`Format.fast_fields` and rows made in `parse_chunks`). 1,000,000 requests, three rounds
(main / this code / raw, seconds and CPU s writer + parser): before the bodies were sorted,
89.3 (17.95 + 11.95) / 67.3 (17.85 + 8.73) / 39.1 (16.52), `vs_raw` 0.44 -> 0.58; after,
74.4 (17.38 + 11.92) / 51.2 (18.00 + 9.82) / 49.8 (18.22), 0.67 -> 0.97, and 96.2 (20.27 +
14.40) / 67.0 (17.09 + 9.37) / 65.0 (18.59), 0.68 -> 0.97. 100,000, medians of 3 at load 15:
main 13.4 s (writer 1.62, parser 1.86), this code at 7f12a16 (before its last two steps)
9.98 s (1.48, 1.19), raw 6.73 s (1.44): 0.50 -> 0.67. At 23:01-23:03 (load 3.3-5.2, after
merging main): 100,000, medians of 3, main 4.98 s (1.30 + 1.46), this code 2.86 s (1.32 +
1.01), raw 1.96 s (1.15): 0.39 -> 0.69; 1,000,000, one round, main 24.6 s (17.08 + 11.49),
this code 23.7 s (17.09 + 9.41), raw 20.1 s (17.45): 0.82 -> 0.85. With a core free the
writer is the critical path, and its CPU is the raw insert's (the hash-ordered bodies did
not show in it here: 17.08 against 17.09); under load the parser's CPU counts. On a loaded machine the wall follows the CPU share the
two processes get: with Linux's autogroup they share one session's. Those loaded figures were
taken with the parser child in a session of its own (a second share), which the lead took
out again: it would take more of a user's machine than their other work gets, and escape
job control.

On the quiet machine (2026-12-07 20:32-20:33, load 0.96-1.06, nothing else running;
`2b377dc`), 100,000 requests, alternating this code / before issue 17 (a54e24d^) / before
issue 15 (f3de825), two rounds, each commit in its own worktree and venv: SQLite 1.73, 1.65 s
/ 1.76, 1.87 s / 1.73, 1.74 s; PostgreSQL 1.91, 1.98 s / 2.26, 2.25 s / 2.22, 2.40 s: no
slower than before on SQLite, ~13 % faster on PostgreSQL (issues 15 and 17's floor). `vs_raw`
at 100,000: 0.73 (1.73 s against the bare executemany's 1.27 s).

Earlier, 2026-12-07 19:09-19:25 UTC on the shared 2-core machine (five sessions' tests
and benchmarks: load 7-18 throughout, so the walls below are not a quiet machine's):
- 1,000,000 requests (load 10-7): SQLite 76.5 s, 13,066/s (writer 18.7 CPU s, parser child
  13.5), raw executemany 30.4 s (17.7 CPU s): `vs_raw` 0.40 by wall, 0.95 by the writer's
  CPU (the writer's work is the raw insert's; its wall waits for a core beside its parser).
  PostgreSQL 47.9 s, 20,862/s: writer 3.1 CPU s and backend 17.5 (the critical path, 20.6
  CPU s: ~48,500/s if it had the cores), parser 13.7. Neither floor is shown met on this
  machine; PostgreSQL's backend CPU alone is past the 16.7 s that 60,000/s allows.
- 100,000 requests, interleaved in the same minutes, each commit in its own worktree and venv
  (medians of 3; load 11-18), `bench_enqueue` wall SQLite / PostgreSQL: this code 10.44 /
  8.11 s; main before it (46fc538) 9.68 / 10.78; before issue 17 (a54e24d^) 9.40 / 8.81;
  before issue 15 (f3de825) 10.23 / 8.92. CPU seconds of `enqueue_file` alone, in the same
  way: SQLite writer / parser 1.34 / 1.54, 1.43 / 1.44, 1.15 / 1.80, 1.09 / 1.61 (the
  pipeline waits on the larger: 1.54 against 1.44, 1.80 and 1.61); PostgreSQL writer /
  backend 0.35 / 1.58, 0.44 / 2.10, 0.47 / 1.61, 0.44 / 1.58 (the critical path 1.93 against
  2.54, 2.08 and 2.02). What won PostgreSQL's time back: the bodies inserted by a scan of
  the staging table (the join with the inserted rows was a merge join whose sort spilled to
  disk) and no per-row foreign-key check on `requests.import_id` (migration 0016), ~0.5 CPU s
  per 100,000 between them. SQLite's writer still pays ~0.2 CPU s per 100,000 for
  `request_bodies` (a second table and its hash index: 0.5 CPU s of the writer's 1.34); the
  size stats moved to the parser child and marshal for the hand-off took back the rest.
- `bench_end_to_end --requests 100000 --no-anthropic` (and `--no-gemini` here: the code
  before issue 15 had no Gemini run; this code's run also times `floor.py` first, theirs do
  not), 19:24-19:45, alternating this code, a54e24d^, f3de825, f3de825, a54e24d^, this
  code (load 7-19; f3de825's two ran at the highest, 13-19), medians of 2: SQLite 49.3 s
  against 67.6 and 134.1 (its enqueue phase 8.8 against 9.3 and 21.5 s), PostgreSQL 48.4 s
  against 91.4 and 150.6 (enqueue 6.4 against 8.4 and 15.9 s); worker CPU s SQLite 7.6-9.6
  against 10.6-11.2 and 11.0-11.2, PostgreSQL 3.2-4.4 against 9.5-10.0 and 9.8-10.9.
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
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))
from gen_requests import lines


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB: VmHWM, which starts afresh at exec. `ru_maxrss`
    does not: a child spawned by vfork/exec keeps its parent's peak (this benchmark's parent
    peaks in `_raw`, so the PostgreSQL writer, run after it, reported the parent's ~250 MB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _server_cpu(store: object) -> Callable[[], float | None]:
    """The CPU seconds so far of the PostgreSQL backend serving `store`, read from /proc
    where the server runs on this machine (None elsewhere, and for SQLite)."""
    conn = getattr(store, "_conn", None)
    if conn is None or not hasattr(conn, "pgconn"):
        return lambda: None
    stat = Path(f"/proc/{conn.execute('SELECT pg_backend_pid()').fetchone()[0]}/stat")

    def read() -> float | None:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return read


def _worker(db: str, path: str) -> None:
    from llmbatch.importer import enqueue_file
    from llmbatch.store import open_store

    store = open_store(db)
    server = _server_cpu(store)
    s0, c0, t = server(), os.times(), time.perf_counter()
    report = enqueue_file(store, path, queue="bench")
    seconds, c1, s1 = time.perf_counter() - t, os.times(), server()
    store.close()
    print(json.dumps({
        "added": report.added, "seconds": seconds,
        "writer_cpu_s": round(c1.user + c1.system - c0.user - c0.system, 2),
        "parser_cpu_s": round(c1.children_user + c1.children_system, 2),
        "server_cpu_s": None if s0 is None or s1 is None else round(s1 - s0, 2),
        "writer_rss_mb": peak_rss_mb(),
        "parser_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))  # fmt: skip


def _raw(db: str, path: Path) -> dict[str, float]:
    """Requests per second of a bare executemany of the enqueue's rows (made beforehand)."""
    import sqlite3

    import orjson

    from llmbatch.importer import RowDefaults
    from llmbatch.requests import make_request
    from llmbatch.store import open_store

    open_store(db).close()  # the schema, indexes included
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    insert = (
        "INSERT INTO requests (queue, custom_id, import_id, line, provider, endpoint, model, "
        "body_hash, priority, deadline, text_chars, text_bytes, inputs, created_at, updated_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    )
    bodies = "INSERT INTO request_bodies (hash, body) VALUES (?, ?) ON CONFLICT DO NOTHING"
    defaults, now, seconds, cpu, n = RowDefaults("bench", 1), time.time(), 0.0, 0.0, 0
    with open(path, "rb") as f:
        while True:
            chunk = [orjson.loads(raw) for raw in f.readlines(50_000 * 500)]
            if not chunk:
                break
            rows = [
                defaults.row(make_request(d["custom_id"], d["body"]), n + i, now)
                for i, d in enumerate(chunk, 1)
            ]
            t, c = time.perf_counter(), time.process_time()
            conn.execute("BEGIN")
            conn.executemany(insert, rows)
            conn.executemany(bodies, [(r[8], r[7]) for r in rows])
            conn.execute("COMMIT")
            seconds += time.perf_counter() - t
            cpu += time.process_time() - c
            n += len(rows)
    conn.close()
    return {
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "requests_per_s": round(n / seconds),
    }


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
        report["sqlite"] = sqlite = _run(str(Path(tmp) / "bench.db"), path, size)
        raw = report["raw_executemany"] = _raw(str(Path(tmp) / "raw.db"), path)
        report["vs_raw"] = round(sqlite["requests_per_s"] / raw["requests_per_s"], 2)
        if args.pg:
            name, dsn = _pg_database(args.pg)
            try:
                report["postgres"] = _run(dsn, path, size)
            finally:
                _drop(args.pg, name)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
