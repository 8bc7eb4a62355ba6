"""Enqueue to results readable, through the same code path as `llmbatch run`/`wait`.

    python benchmarks/bench_end_to_end.py [--requests N] [--small] [--pg DSN] [--no-anthropic]

The emulator runs as a separate process over loopback at zero latency with its own token
rule; this process enqueues the generated requests and drains the queue with the engine.
Reports per-phase seconds (enqueue, pack, upload, emulator, download, ingest), the HTTP
calls one poll tick makes with 100 batches in flight, and this worker's peak RSS. Prints one
JSON line. Floors (2 cores): 100,000 requests under 20 s on SQLite; 1,000,000 under 120 s;
worker peak RSS under 300 MB at 1M; at most 2 poll calls per tick with 100 batches in flight.

The Anthropic run (`anthropic`) sends the same reviews as `{"custom_id", "params"}` lines
through Message Batches (inline create, results stream) on SQLite: this process enqueues,
and a child process, the worker, drains with the same engine and `drain` as `wait`, so its
peak RSS (`worker_peak_rss_mb`) is the worker's alone. Floors: 100,000 requests under 20 s,
worker peak RSS under 300 MB. The Gemini run (`gemini`, skip it with `--no-gemini`) does the
same with `{"key", "request"}` lines through google-genai (a resumable upload, the results
file downloaded): floors within 1.3x the OpenAI SQLite run's seconds (`gemini_vs_openai`),
worker peak RSS under 300 MB.

Every run also reports the CPU seconds the worker (`worker_cpu_s`, while draining), the
enqueue (`enqueue_cpu_s`, its parser child included) and the emulator (`emulator_cpu_s`) used:
on a loaded machine the wall figures include waiting for a core, and these say how much work
there was. On PostgreSQL with the server on this machine, `server_cpu_s` is what the backends
serving the enqueue and the worker used (/proc): the server's share of the work.

The floor (issue 23): `floor.py` runs first, on the same file, and `sqlite_vs_floor` /
`postgres_vs_floor` are each run's seconds over its seconds (target ≤ 3× at 100,000 and
1,000,000 on SQLite). Where the time goes, from cProfile at 20,000 and the run below, on the
shared 2-core machine at load 26–37 (wall seconds there are mostly waiting for a core, so the
CPU seconds are the comparison; 50,000 requests, schema 0012, set-based pack and ingest):
floor 32.8 s wall, 2.25 CPU s; SQLite 188 s wall (5.7× the floor), enqueue 3.9 + worker
8.8 CPU s (5.7× the floor's CPU), emulator 7.8 CPU s; PostgreSQL 194 s (5.9×), 2.5 + 4.3 CPU s.
- enqueue (floor: orjson parse + insert): per line, validation by the provider's format,
  canonical JSON, the blake2b identity hash and text sizes in the parser child, then one
  `executemany` per chunk into `requests` and `request_bodies` (a body once per hash). The
  writer mostly waits on the parser: the per-line Python in the child is the cost.
- pack (floor: read bodies in id order, write the file): candidates page by page in packing
  order (the body length from `request_bodies` by hash), `packing.cut` per request in
  Python, the intent in one statement per table (a JSON list / BIGINT[] of ids), then the
  file from `batch_lines` (2,000 rows a page, joined to `request_bodies`). Five durable
  commits a batch (the intent; the upload and the create each stamped before and recorded
  after) cost an fsync each, at ~300 requests a batch in this run.
- upload, poll, download: HTTP and the emulator (its CPU is about the worker's), and the
  emulator's batch time; `emulator_and_waiting` is the drain's wall time outside every phase.
- ingest (floor: orjson parse + one insert and one set-based update): per line, the ordering
  pass (an index made a block at a time, then one `pread` a line in attempt order), orjson,
  and the format's fast path (OpenAI: a 2xx line with plain usage) straight into a tuple
  that is the results row with five values added: no `Finding`, `Outcome` or parameter
  dict a line, the tally summed per chunk. The store's part is one transaction per chunk: on
  SQLite an `executemany` per statement, on PostgreSQL a binary COPY into a staging table and
  one statement per table (per outcome kind for the requests). After that change (replayed on
  a 50,000-line batch's snapshot, CPU s at load 9-14) ingest went 1.77-1.95 -> 1.14-1.27 s,
  about half of it now SQLite's own (the results insert ~0.25 s, the commits ~0.12, the cost
  totals ~0.08), the rest orjson, the ordering pass and the per-line Python left.
Request bodies are written once (schema 0012): no state change above rewrites one.

On the quiet machine (2026-12-07, load ~1, nothing else running), 100,000 requests
`--no-anthropic --no-gemini`: at 18:34 (`46fc538`) floor 2.56 s, SQLite 18.09 s (**7.07x**,
worker CPU 6.81 s, emulator 6.51 s), PostgreSQL 25.02 s (9.77x); at 20:33 (`2b377dc`, after
the enqueue, ingest and emulator work of issue 23) floor 1.86 s, SQLite **9.57 s (5.15x)**:
enqueue 1.68, pack 0.64, upload 0.65, download 1.08, ingest 3.54, emulator and waiting 1.91;
worker CPU 5.62 s, enqueue 2.61, emulator 3.21; PostgreSQL 15.93 s (8.56x): pack 3.0, upload
2.12, ingest 7.21. In the same minutes the code before issue 17 (a54e24d^) took 16.71 s on
SQLite and 25.72 s on PostgreSQL, before issue 15 (f3de825) 16.75 s and 24.64 s. The 3x floor
is not met; ingest's per-line Python and PostgreSQL's per-row server work (seven writes a
request, four foreign-key checks) are the largest parts left.
At 23:24-23:32 (`7347aee`: ingest's success tuples, schema 0017, the emulator's prepared
lines; load 1.3-2.2, nothing else running): 100,000, floor 2.04 s, SQLite **7.05 s (3.46x)**:
enqueue 1.70, pack 0.78, upload 0.65, download 0.15, ingest 2.27, emulator and waiting 1.34;
worker CPU 4.44 s, emulator 1.79; PostgreSQL 12.67 s (6.21x): pack 2.81, upload 1.67, ingest
4.64, the server's CPU 7.69 s. 1,000,000: floor 20.28 s, SQLite **75.2 s (3.71x)**: enqueue
21.2, pack 11.1, upload 4.8, ingest 25.7, emulator and waiting 11.0; worker CPU 49.6 s,
emulator 19.1; PostgreSQL 152.5 s (7.52x; 470 s at 21:48 under load before schema 0017 and
the id lists read once); worker peak RSS 99.5 MB at 10,000, 137.4 MB at 1,000,000 (this
process's, the floor and the enqueue included). Still not met: 3x on SQLite, 4x on
PostgreSQL; pack (a request's three state changes, `packing.cut` per request) and ingest's
SQL (~half of it now) are the largest parts left.

The worker's side on SQLite, 2026-12-08 (branch `sqlite`; the shared 2-core machine at load
7-15, so CPU seconds, not walls; "main" is the drain's own thread, read with thread_time):
- Sequencing (a timeline at 200,000, four intents of 50,000): the first intent commits 0.76 s
  after the drain starts (the SDK's import, the first page of candidates); each intent is
  cut, committed, written, uploaded and created (~1.1 s) before the next is cut, and the
  emulator had every batch done by the first poll, so the four ingests ran back to back with
  no wait: the worker is CPU-bound, never waiting on the emulator, which is idle while the
  worker ingests (at 1,000,000 the same: twenty intents sent, then twenty ingests).
  `emulator_and_waiting` was mostly the candidates and `packing.cut` (~0.4 s a batch), not
  timed before; they are counted in `pack` now.
- pack: the candidates read each body (not its length) and the cut keeps them in a spool
  file (`submitter.Spool`, two integers a request in memory); the intent's file is written
  from it once the intent commits (a body never changes), so the join of attempts, requests
  and request_bodies that read every body again is gone (it was ~1.0 of 5.5 CPU s of SQL at
  200,000). Pack and upload, main CPU at 300,000: 5.46 5.87 -> 5.00 4.95 s (-12 %).
- ingest: a batch of 20,000 requests or more is read by a second process (`reading.py`:
  the same items, marshalled back; it starts while the file downloads; if it stops, the rest
  is read here), so the ordering pass, orjson and the per-line reading run on the core the
  emulator leaves idle while the worker records. Main CPU at 300,000: 6.15 6.39 -> 3.90 3.97
  s (-37 %), the child 3.48 3.57; the whole drain's main thread 11.71 12.37 -> 8.99 9.01 s
  (-25 %), with the child 12.55 12.66 (+4 %: the hand-off and a second interpreter; read
  here, 50,000 lines take 0.25 CPU s, in the child 0.35 plus 0.02 here). `worker_cpu_s`
  counts the children. On a quiet machine the drain's wall is about its main thread's.
  Runs of this file on the loaded machine (the floor in the same run; walls there are
  mostly waiting for a core, and two busy processes wait more than one): 100,000 at load
  8-12, main 3.18x and 5.03x the floor, this branch 5.77x and 6.29x; 1,000,000, a pair at
  load 11 (a 10,000 run beside the branch's), main 210.5 s (3.54x, worker CPU 42.8 s), the
  branch 314.6 s (3.59x, 44.5 with its children); a pair at load 9-12, main 231.1 s (6.26x;
  drain 167.9: pack 31.4, upload 13.0, ingest 84.0, waiting 34.8; worker CPU 42.7), the branch
  194.4 s (5.29x; drain 139.4: pack 61.1 with the cut, upload 14.8, ingest 54.0, waiting 5.8;
  worker CPU 38.4 with its children). A quiet machine's figures are still to be taken: the
  3x floor is not shown met here.
  Left: SQLite's own statements are now most of the main thread (the candidates' body
  lookups by hash ~16 % of its samples, the results insert ~13 %, commits ~11 %, the
  submit's two updates ~6 %, the cost totals ~4 %).

The emulator's side at 100,000 requests (per-thread CPU from /proc and cProfile of its worker
thread): validating parsed each line and counted its prompt, processing read it again,
parsed it again and hashed its body; the worker looked at the store every 10 ms even with no
batch active; downloads went in 64 KB pieces, a thread hop each; a batch's last line done,
finalizing and completing each waited a round, behind the other batch's validation (~2 s).
Validation now keeps what a plain chat line's reply needs (body hash, prompt tokens, cap,
ids) in processing order (`emulator/prepared.py`), so processing parses no JSON; the thread
rests while nothing is active; downloads go in 1 MB pieces; a batch completes in the step
that ran its last line. Seven runs interleaved with the code before (2026-12-07 22:05-22:53,
load 7-17 on the shared machine): `emulator_cpu_s` 3.11 3.05 2.84 2.93 3.21 3.19 2.47 ->
2.01 1.85 1.75 1.78 2.02 1.79 1.79 (-38 %; the worker thread ~16 us a request, the event
loop and its threads ~0.35 s: multipart upload parsing and downloads);
`emulator_and_waiting` 12.08 8.42 5.09 5.11 6.71 2.37 2.20 -> 6.09 5.64 4.70 4.95 3.94 3.56
3.69: wall seconds there follow the machine's load (the two shortest "before" runs came in a
quiet minute, ingest 3.9-4.4 s against 8.8-12.3 in the others), so halving is not shown.
Then (2026-12-08): the emulator's worker thread holds the GIL through a 50,000-line batch's
validation (~0.5 CPU s), and starlette wrote each upload piece past its first MB through a
thread hop, each hop waiting up to a switch interval (5 ms) for the GIL: a 25 MB upload
beside a busy thread took 1.1-1.6 s instead of ~0.3, and a trace of the 1,000,000 run shows
every batch reaching the emulator only after the one before it had completed. The file part
is now written as it arrives, on the event loop (no spooled copy, no hop); in a 300,000 run
batches overlap (the 4th and 5th arrived 2.5 and 2.0 s before the one before completed).
Interleaved with main at load 7-15: 100,000 requests, `emulator_cpu_s` 1.64 1.63 1.76 1.51
-> 1.49 1.50 1.40 1.65; 200,000, `emulator_cpu_s` 3.37 3.31 3.13 3.36 -> 3.01 3.10 3.01
3.29, upload 4.20 3.23 3.13 2.89 -> 1.88 1.83 2.66 3.87 s, `emulator_and_waiting` 10.34
6.48 8.54 8.07 -> 5.11 6.51 6.83 9.17, seconds 50.7 34.6 47.6 40.8 -> 37.4 32.2 42.0 46.6.

The worker's side at 100,000 requests (two intents of 50,000 lines), from cProfile of the
drain, a per-statement timer on PostgreSQL and the worker's bytes written (/proc/self/io),
before and after in the same minutes on the shared 2-core machine at load 9–19 (wall seconds
there are mostly waiting for a core; three rounds, before/after interleaved, figures in
round order; the third "after" ran as the load fell from 12 to 10, which flatters its walls):
- ingest, SQLite: the provider writes results in its own order, so each 5,000-line chunk
  touched rows all over `attempts` and `requests` and every chunk's commit rewrote nearly
  every page of both into the WAL (and its checkpoints). Lines are now applied in attempt
  order (`results.in_attempt_order`: a quick pass indexes each line's attempt number and
  offset, then each line is read back and parsed in full): the worker's disk writes
  826 -> 453 MB, the ingest phase 22.9/20.8/31.2 -> 16.8/15.2/6.7 s, worker CPU
  9.4/9.0/9.3 -> 8.4/7.6/6.7 s (mean -18 %).
  Recording a chunk reads each attempt's request id alone (not the request's counters: one
  index lookup a line, not two). What remains is the per-line Python (orjson, the format's
  `result` and usage, the tally, each `Outcome`) and the store's inserts and updates.
- pack, PostgreSQL: `batch_lines` paged with `ORDER BY line LIMIT`, which on a table not yet
  analyzed sorted every later line of the intent for each 2,000-line page (quadratic in the
  batch: 5.4 s of one run's statement time); it reads ranges of lines now (2.3 s, under
  similar load). Pack 23.3/14.9/15.5 -> 12.4/11.3/5.2 s.
- PostgreSQL as a whole (111/70/81 -> 76/67/33 s; worker CPU ~4 s either way, against ~8 on
  SQLite): the time is the server's per-row work, not round trips or commits (191
  transactions a run). Each request is written seven times (pack: its request updated and
  attempt inserted; submit: both again; ingest: both again and its result inserted), every
  update of `requests` non-HOT (its state is in three partial indexes' predicates), and
  four foreign-key checks lock a parent row (attempts -> requests, batches; results ->
  attempts, requests): in a 50,000-row attempts insert they are 1.0–1.15 s of 1.5–1.6 s.
  SQLite never enforced those keys (foreign_keys is off); migration 0017 drops them on
  PostgreSQL (below).
- upload and download stream (the file handle to the SDK's multipart; the result file in
  1 MB chunks to disk); their seconds are the emulator parsing and writing.
Worker peak RSS 137/136/139 -> 141/141/141 MB (the index of a batch's lines, 4 integers a
line, and its sort).

PostgreSQL after migration 0017 (the foreign keys of attempts and results not checked; attempts
at fillfactor 50, so their two updates are HOT: 174,087 of 200,000 were, 0.2 % before) and
ingest's cost totals read from the staged chunk: 100,000 requests, the PostgreSQL run alone
with its backend's CPU read from /proc around every statement, main and this branch
interleaved, three rounds each at load 12-25: the server's CPU while draining 9.85/9.83/10.3
-> 7.24/7.07/6.78 s (-30 %; pack 3.3 -> 2.6, upload 1.5 -> 1.1, ingest 4.9 -> 3.2), the
worker's unchanged (4.4/4.4/4.6 -> 4.5/4.5/4.3). Per statement: the attempts insert 1.11 -> 0.42 s, the results insert
1.64 -> 0.76, the outcome's attempts update 1.02 -> 0.65, the submit's 0.60 -> 0.14, the cost
totals 0.50 -> 0.28. Upload took 2.12 s on PostgreSQL against SQLite's 0.65 because its server
time is the submit's two set updates (every attempt and request of the batch packed ->
submitted, 1.5 s of server CPU per 100,000), not the file (`batch_lines` is counted in pack).
What was left was mostly the three state changes of each request (packed, submitted, its
outcome; ~0.8 s a pass per 100,000): never HOT, as `state` was in the three partial indexes'
predicates. Migration 0018 gives those indexes `waiting` to read instead (`state` while the
request waits to be packed, NULL after; a stored column PostgreSQL computes) and `requests`
a fillfactor of 50, so the submit and the outcome rewrite no index: on a copy of the table,
100,000 rows, the three passes 0.72/0.81/1.19 -> 0.61/0.32/0.34 CPU s (fillfactor 70: the
last two 0.49/0.47; the insert's cost the same at 50 as at 100). An intent's lines
(`batch_lines`) read each request and body by key now: as a join, the planner hashed each
2,000-line page's attempts and read all of `requests` to match them (or merged from its first
id), once per page, quadratic in the store. 100,000 requests, the PostgreSQL run alone, main
(9cc0e5d) and this change interleaved, four rounds each at load 5-11 (2026-12-08 00:42-01:07):
the server's CPU while draining 5.71/5.88/6.36/5.27 -> 4.56/5.07/4.21/4.61 s (-21 %; the last
two with `batch_lines` by key: -24 %), the worker's 2.44/2.50/2.73/2.29 -> 2.26/2.68/2.21/2.42,
the enqueue's server CPU unchanged (1.37/1.39/1.55/1.23 -> 1.30/1.44/1.56/1.35); 200,000 of
300,000 request updates HOT (none before), `requests` 111.5 -> 68.7 MB. Per statement: the
submit's requests update 0.78 -> 0.33 s, the outcome's 0.80 -> 0.35. At 200,000, two rounds
at load 9-11 (01:20-01:24): 12.41/11.43 -> 10.46/9.68 s (-15 %), the worker's 4.69/4.22 ->
4.50/4.09, `batch_lines` 1.39/1.23 -> 1.45/1.18 (these runs' plans were not the quadratic
ones: by key is a guard, tested with the plan a store analyzed mid-pack got). Against main
with the enqueue's COPY straight into `requests` (01c739c), 100,000, two rounds at load 10-12:
draining 5.65/5.51 -> 4.59/4.71 s, the enqueue's server CPU 0.66/0.65 -> 0.71/0.71 (the COPY
fills half pages: twice as many). At 1,000,000 (the
PostgreSQL run alone, base at load 7, this change at 10-12): the server's CPU while draining
72.9 -> 58.4 s (-20 %), the submit's update 9.33 -> 4.06, the outcome's 9.26 -> 3.57,
`batch_lines` 8.27 -> 7.67 (the backend's CPU only: a parallel plan's helpers are not
counted, and the join's plan there was not recorded), `requests` 1,115 -> 708 MB. The whole bench at 1,000,000 at load 9-12 (00:51-01:03): floor
72.6 s, SQLite 238.9 s (3.29x), PostgreSQL 349.9 s (**4.82x**; server CPU 16.2 enqueue + 55.2
draining, worker 18.9). Again with main's COPY enqueue merged (01:29-01:38, load 10.4 falling
to 5.8 as other work ended, so the later runs are flattered): floor 53.5 s, SQLite 234.6 s,
PostgreSQL 181.9 s (3.40x; server CPU 8.8 enqueue + 60.1 draining, worker 19.7, enqueue 11.5).
The quiet machine's figure is still to be taken.
Left, at 1,000,000 (server CPU s): the pack's update (10.2, each request packed is a new
version with new entries in the primary key and the (queue, custom_id) unique index: it leaves
the packing index, so it cannot be HOT), the candidates (10.0, of which ~98 % is reading each
body's length from `request_bodies` by hash: a `body_bytes` column written at enqueue would
make it an index walk on `requests` alone, 115 -> 2 ms a 5,000-row page in EXPLAIN ANALYZE),
`batch_lines` (7.7, the same body lookups, by key), the enqueue's two inserts (7.5 each),
the results insert (5.7) and the attempts' outcome update (4.4). `has_unfinished` reads all of
`requests` once drained (1.4 s for 2 calls): no index can say "not ended" without `state`.
At 10,000 requests the same run spent 3.06 of its 3.67 s of server CPU in one statement:
before `attempts` is analyzed, the planner put a chunk's JSON list of attempt ids inside a
nested loop and parsed its 5,000 ids again for each attempt row (quadratic in the batch).
PostgreSQL's dialect reads every such list as `= ANY(ARRAY(...))` now, parsed once: 0.63 s
in all at 10,000; at 100,000, against main in the same minutes at load 12, the server's CPU
while draining 10.46 -> 6.90 s (-34 %; pack 3.41 -> 2.63, upload 1.55 -> 1.08, ingest 5.27 ->
2.97), enqueue 1.73 -> 1.63, the worker's 4.75 -> 4.38.

The RSS floor (issue 23: 1M at most 10k's + 50 MB), 2026-12-08 02:38-02:42 (branch `rss`, main
1b241c2 and this code side by side, load 1.8-3.1): main 142.3 / 143.7 MB at 1M (10k's 99.4
+ 43-44: met, a thin margin), this code 131.8 / 132.0 MB; at 300,000 main 140.1 MB, each change
alone 134.6 (bodies held 10,000 at a time, not 50,000), 137.0 (the result reader 2 chunks
ahead, not 8), 139.9 (no reader child: not it). Cost: the enqueue's CPU 19.71 / 18.78 ->
21.78 / 21.00 s (+2.1 s at 1M, the bodies' smaller hash-ordered runs); worker CPU 38.58 /
41.45 -> 37.95 / 41.38 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from floor import floor
from gen_requests import SYSTEM, WORDS, lines
from llmbatch.emulator import EmulatorControl
from llmbatch.engine import Engine, EngineSettings
from llmbatch.importer import enqueue_file
from llmbatch.store import open_store
from llmbatch.worker import drain

KEY_ENV = "LLMBATCH_BENCH_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbatch.emulator", "--port", str(port), "--data-dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    control = EmulatorControl(url, timeout=5)
    deadline = time.monotonic() + 120  # its imports take a minute on a loaded machine
    while time.monotonic() < deadline:
        try:
            control.call("GET", "/health")
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the emulator did not start")


def settings(url: str, **extra: object) -> EngineSettings:
    providers = {
        "openai": {"base_url": url + "/v1", "api_key_env": KEY_ENV},
        "anthropic": {"base_url": url, "api_key_env": KEY_ENV},
        "gemini": {"base_url": url, "api_key_env": KEY_ENV},
    }
    return EngineSettings(
        poll_interval=0.1, max_poll_interval=0.5, settle_seconds=5, providers=providers, **extra
    )  # type: ignore[arg-type]


def anthropic_lines(n: int, seed: int = 7, model: str = "claude-haiku-4-5") -> Iterator[bytes]:
    """The reviews of `gen_requests.lines` as Anthropic `{"custom_id", "params"}` lines."""
    rng = random.Random(seed)
    for i in range(n):
        review = " ".join(rng.choices(WORDS, k=rng.randint(10, 40)))
        params = {
            "model": model,
            "max_tokens": 5,
            "temperature": 0,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": f"Review #{i}: {review}"}],
        }
        yield orjson.dumps({"custom_id": f"review-{i:08d}", "params": params}) + b"\n"


def gemini_lines(n: int, seed: int = 7, model: str = "gemini-2.5-flash-lite") -> Iterator[bytes]:
    """The reviews of `gen_requests.lines` as Gemini `{"key", "request"}` lines."""
    rng = random.Random(seed)
    for i in range(n):
        review = " ".join(rng.choices(WORDS, k=rng.randint(10, 40)))
        request = {
            "model": model,
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [{"role": "user", "parts": [{"text": f"Review #{i}: {review}"}]}],
            "generationConfig": {"maxOutputTokens": 5, "temperature": 0},
        }
        yield orjson.dumps({"key": f"review-{i:08d}", "request": request}) + b"\n"


def enqueue(db: str, path: Path, **options: str) -> float:
    """Seconds to enqueue `path` into queue `bench` of a fresh store."""
    store = open_store(db)
    t0, server = time.perf_counter(), server_cpu_s(store)
    enqueue_file(store, path, queue="bench", **options)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    SERVER_CPU["enqueue"] = round(server_cpu_s(store) - server, 2) if server >= 0 else -1.0
    store.close()
    return seconds


def work(db: str, url: str) -> dict[str, object]:
    """Drain queue `bench` as `llmbatch wait` does; seconds per phase and requests done."""
    store = open_store(db)
    engine = Engine(store, settings(url))
    t1, cpu, server = time.perf_counter(), cpu_s(children=True), server_cpu_s(store)
    result = drain(engine, queue="bench", timeout=1800)
    drain_s, cpu = time.perf_counter() - t1, cpu_s(children=True) - cpu  # its readers too
    SERVER_CPU["worker"] = round(server_cpu_s(store) - server, 2) if server >= 0 else -1.0
    t = dict(engine.timings)
    engine.close()
    succeeded = sum(c.n for c in store.counts("bench") if c.state == "succeeded")
    store.close()
    busy = sum(t.values())
    phases = {k: round(v, 2) for k, v in t.items()}
    phases["emulator_and_waiting"] = round(max(0.0, drain_s - busy), 2)
    return {"finished": result.finished, "succeeded": succeeded, "drain_s": drain_s,
            "worker_cpu_s": round(cpu, 2), "phases": phases}  # fmt: skip


def summary(n: int, enqueue_s: float, drained: dict[str, object]) -> dict[str, object]:
    drain_s = drained.pop("drain_s")
    assert isinstance(drain_s, float)
    phases = drained.pop("phases")
    assert isinstance(phases, dict)
    phases["enqueue"] = round(enqueue_s, 2)
    return {**drained, "seconds": round(enqueue_s + drain_s, 2),
            "requests_per_s": round(n / (enqueue_s + drain_s)), "phases": phases}  # fmt: skip


def run(db: str, url: str, path: Path, n: int, emulator: int) -> dict[str, object]:
    cpu = cpu_s(children=True)
    enqueue_s = enqueue(db, path)
    enqueue_cpu = round(cpu_s(children=True) - cpu, 2)  # the parser child's included
    before = emulator_cpu_s(emulator)
    drained = work(db, url)
    used = round(emulator_cpu_s(emulator) - before, 2)
    out = {**summary(n, enqueue_s, drained), "enqueue_cpu_s": enqueue_cpu, "emulator_cpu_s": used}
    if db.startswith("postgres") and SERVER_CPU["worker"] >= 0:  # a server on this machine
        out["server_cpu_s"] = dict(SERVER_CPU)
    return out


def run_anthropic(
    url: str, tmp: Path, n: int, emulator: int, name: str = "anthropic"
) -> dict[str, object]:
    """The Anthropic (or Gemini) run: enqueue here, drain in a child process (the worker)."""
    path = tmp / f"{name}.jsonl"
    with open(path, "wb") as f:
        for line in (gemini_lines if name == "gemini" else anthropic_lines)(n):
            f.write(line)
    db = str(tmp / f"{name}.db")
    enqueue_s = enqueue(db, path, **({"provider": name} if name == "gemini" else {}))
    before = emulator_cpu_s(emulator)
    child = subprocess.run(
        [sys.executable, __file__, "--worker", db, "--url", url],
        check=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    drained = json.loads(child.stdout)
    rss = drained.pop("worker_peak_rss_mb")
    used = round(emulator_cpu_s(emulator) - before, 2)
    return {**summary(n, enqueue_s, drained), "emulator_cpu_s": used, "worker_peak_rss_mb": rss}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_s(children: bool = False) -> float:
    """CPU seconds this process (and, with `children`, its waited-for children) has used: on
    a loaded machine, the work apart from waiting."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    used = r.ru_utime + r.ru_stime
    if children:
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        used += c.ru_utime + c.ru_stime
    return used


SERVER_CPU = {"enqueue": -1.0, "worker": -1.0}  # the last run's, by the server's backend


def server_cpu_s(store: object) -> float:
    """CPU seconds the PostgreSQL backend serving `store` has used (-1: not a PostgreSQL store,
    or a server on another machine): the server's side of the work."""
    conn = getattr(store, "_conn", None)
    info = getattr(conn, "info", None)
    if info is None or not hasattr(info, "backend_pid"):
        return -1.0
    used = emulator_cpu_s(int(info.backend_pid))
    return used if Path(f"/proc/{info.backend_pid}").exists() else -1.0


def emulator_cpu_s(pid: int) -> float:
    """CPU seconds the emulator process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def poll_calls(url: str, tmp: Path, batches: int = 100) -> int:
    """HTTP calls of one poll tick with `batches` batches in flight (downloads not counted)."""
    control = EmulatorControl(url)
    control.next_batches(count=batches, hold="validating")
    path = tmp / "poll.jsonl"
    with open(path, "wb") as f:
        for line in lines(batches * 10, seed=99):
            f.write(line)
    store = open_store(str(tmp / "poll.db"))
    enqueue_file(store, path, queue="poll")
    engine = Engine(store, settings(url, max_batch_requests=10))
    engine.tick(time.time())  # packs and submits 100 batches
    since = max((c["seq"] for c in control.calls()), default=0)
    engine.next_poll_at = 0
    engine.tick(time.time())
    calls = [
        c
        for c in control.calls(since)
        if c["path"].startswith("/v1/batches") and c["method"] == "GET"
    ]
    engine.close()
    store.close()
    return len(calls)


def pg_database(dsn: str) -> tuple[str, str]:
    import psycopg

    name = f"llmbatch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def drop_database(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--small", action="store_true", help="10,000 requests (what CI runs)")
    ap.add_argument(
        "--pg", default=os.environ.get("LLMBATCH_BENCH_PG") or os.environ.get("LLMBATCH_TEST_PG")
    )
    ap.add_argument("--no-anthropic", action="store_true", help="skip the Anthropic run")
    ap.add_argument("--no-gemini", action="store_true", help="skip the Gemini run")
    ap.add_argument("--worker", metavar="DB", help=argparse.SUPPRESS)  # the Anthropic run's child
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = 10_000 if args.small else args.requests
    os.environ.setdefault(KEY_ENV, "bench-key")
    if args.worker:
        drained = work(args.worker, args.url)
        print(json.dumps({**drained, "worker_peak_rss_mb": peak_rss_mb()}))
        return
    with tempfile.TemporaryDirectory(prefix="llmbatch-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        proc, url = start_emulator(tmp / "emulator")
        try:
            path = tmp / "requests.jsonl"
            with open(path, "wb") as f:
                for line in lines(n):
                    f.write(line)
            report: dict[str, object] = {"bench": "end_to_end", "requests": n}
            (tmp / "floor").mkdir()
            # the floor first, on the same file: the same disk cache and machine load
            floored = report["floor"] = floor(path, tmp / "floor")
            floor_s = floored["seconds"]
            sqlite = report["sqlite"] = run(str(tmp / "bench.db"), url, path, n, proc.pid)
            sqlite_s = float(sqlite["seconds"])  # type: ignore[arg-type]
            report["sqlite_vs_floor"] = round(sqlite_s / floor_s, 2)
            report["worker_peak_rss_mb"] = peak_rss_mb()
            if args.pg:
                name, dsn = pg_database(args.pg)
                try:
                    postgres = report["postgres"] = run(dsn, url, path, n, proc.pid)
                    pg_s = float(postgres["seconds"])  # type: ignore[arg-type]
                    report["postgres_vs_floor"] = round(pg_s / floor_s, 2)
                finally:
                    drop_database(args.pg, name)
            report["poll_calls_100_batches"] = poll_calls(url, tmp)
            if not args.no_anthropic:
                report["anthropic"] = run_anthropic(url, tmp, n, proc.pid)
            if not args.no_gemini:
                gemini = report["gemini"] = run_anthropic(url, tmp, n, proc.pid, "gemini")
                openai = report["sqlite"]
                assert isinstance(openai, dict)
                report["gemini_vs_openai"] = round(gemini["seconds"] / openai["seconds"], 2)  # type: ignore[operator]
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
