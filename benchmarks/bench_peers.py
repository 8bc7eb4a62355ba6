"""llmbatch side by side with the batch tools on PyPI, on the same emulator (issue 23).

    python benchmarks/bench_peers.py [--requests 5000 20000] [--venvs DIR] [--small]

Each flow is its own process, timed from start to results read (wall) with its peak RSS
(`wait4`): llmbatch's command line (`enqueue`, `wait`, `results`: three processes, the RSS
is the largest), llmbatch's Python API (`Queue.add_file`, `run`, `results`), and each peer
in its own virtual environment under `--venvs` (made and `pip install`ed on first use):
offpeak (`offpeak.run`), langbatch (`OpenAIChatCompletionBatch` start, status, results) and
openbatch (`BatchCollector` writes the file) with the bare openai SDK (upload, create,
retrieve until done, content). A tool that cannot be installed is skipped with one line.
Every flow polls every 0.5 s; the emulator runs at time scale 1 in its own process, so a
batch is done as soon as the emulator has worked through it (instant batches).

Floors (a local benchmark, not in CI): at 5,000 and 20,000 requests llmbatch's command line
and its API each finish before every peer, and use the least peak RSS. With CI set (or
--small) the peers are skipped in one line and llmbatch's two flows run at 200 requests.
What the peers do not do is not timed here: only llmbatch creates no second batch when a
create answers 500 after doing the work (tests/e2e/test_exactly_once.py).

Each flow's CPU seconds (`cpu_s`, from wait4) are printed beside its wall seconds: on a
loaded machine the wall is mostly waiting for a core, and the CPU says how much work each
did. llmbatch's bytecode is compiled first (`compile_llmbatch`), as pip compiles the peers'
at install: a checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile every module
in every process.

Measured 2026-12-08 00:47-00:53 on the shared 2-core machine under load 7-11.4, main
(`9cc0e5d`) and this code interleaved, two rounds each (CPU s, peak MB; wall is 2-4x CPU at
this load and says nothing):

| requests | llmbatch CLI | llmbatch API | offpeak | langbatch | openbatch + SDK |
|---|---|---|---|---|---|
| 5,000 (main) | 1.39, 1.38 / 92.5 | 1.33, 1.46 / 104 | 0.87, 1.00 / 82 | 1.19, 1.23 / 90 | 0.91, 0.90 / 67 |
| 5,000 | 1.34, 1.34 / 92.5 | 1.55, 1.43 / 104 | 1.10, 0.99 / 82 | 1.24, 1.13 / 90 | 0.85, 0.80 / 67 |
| 20,000 (main) | 2.34, 2.21 / 96 | 2.60, 2.55 / 151 | 1.80, 1.69 / 166 | 2.45, 2.23 / 188 | 1.49, 1.49 / 108 |
| 20,000 | 2.10, 2.08 / 96 | 2.38, 2.51 / 151 | 1.59, 1.61 / 166 | 2.00, 2.19 / 188-191 | 1.31, 1.50 / 108 |

What changed (the command line's own reads of the store): a queue named by `-q` is checked with
one probe of the (queue, custom_id) index (`Store.has_requests`), where it counted every request
of every queue (~10 ms at 20,000); `wait` and `run` read the store's counts once where they read
them twice (failures before and the progress bar's start; the table and failures after: 7 -> 5
reads in a 20,000 `wait`, ~12 ms each); the counts of one queue read that queue's rows through
the index, not every queue's; the config check imports the OpenAI-compatible services' table (~3
ms) only for a table or provider of that kind (after these figures). Per step, three rounds
interleaved at load 10.5-11.5 (CPU s), 5,000: `wait` 0.84-0.90 against 0.88-0.94, `results` 0.19
against 0.21; at 20,000 the steps are within the noise (`wait` 1.35-1.41 against 1.32-1.35). A
200-request queue in a store that holds a finished 20,000-request one: `wait` 0.70-0.73 against
0.80-0.91; a `wait` with nothing left to do on that store 0.25 against 0.36. Merged with main
`7496c68` (the API's results held lighter), against it, one pair run twice at load 6.7-11.6 (CPU
s): the command line at 5,000 1.60, 1.33 against 1.45, 1.46; at 20,000 2.26, 2.28 against 2.56,
2.36; peaks the same (92.3 and 96.0 MB).

Where a command's start goes (`-X importtime`, CPU measured around each import, load ~7):
`--version` 0.06-0.07 CPU s (Python ~0.015, click ~0.025, llmbatch's CLI ~0.02; 0.23-0.32 s wall
at load 7-10). A config file costs every command ~0.04 (`results` at 5,000 with
`[providers.openai]` 0.20-0.27 against 0.16-0.20 with an empty one): the plugin found through
its entry point (`importlib.metadata` ~0.011 with the `email` package it reads metadata with,
the scan ~0.005), pydantic-core for the tables' validators (~0.013, `typing_extensions` in it),
the plugin's modules; `enqueue` and `wait` load `importlib.metadata` and pydantic-core anyway
(genai-prices, the SDK), so only `results` could gain, and every command must refuse a typo.
llmbatch's dataclasses: 58 made in `results` (0.033 CPU s), store/types.py's 30 frozen slotted
ones 0.015-0.02 in every command. The `openai` SDK: its `__init__` imports `openai.types` whole
(113 imports, ~730 modules, 650 pydantic models; `eval_create_params` -> `graders` ->
`responses` alone is 0.31 of its 0.57 s of imports), and no part of the client imports without
that `__init__`: 0.31-0.35 CPU s and ~21 MB of `wait`'s peak (Python and llmbatch 27 MB, with
the SDK 48-63, 92 after the ingest at 5,000). Its client's TLS context (the CA bundle, ~0.017)
is made for an http:// base too. `enqueue`'s estimate line loads the price data (genai-prices
with pydantic, httpx2 and asyncio through its updater, ~0.15-0.2 of `enqueue`'s 0.35 at 5,000).
A 5,000-request `wait` makes 10 HTTP calls: upload, create, a poll in the same tick (0.04 s
after the create), the sweep's list of batches and of uploads, then 0.5 s after that poll
answered the poll that sees it done (the emulator takes ~0.35 s), the output's size and content,
two deletes; there is no full interval slept before the first poll. What remains is outside the
command line: the SDK (its import alone ~0.33 CPU s and ~21 MB of every sending process; a
plain-httpx2 prototype's figures below), the estimate's price data, and at 5,000 the ingest's
parse, which holds ~21 MB (64 -> 85 MB before `_apply`) of the peak where openbatch's whole flow
peaks at 67. Floors not met: at 5,000 the command line's CPU is ~1.6x openbatch's and its peak
92.5 MB against 67; at 20,000 its peak (96 MB) is the lowest of every flow, its CPU ~1.4x
openbatch's.

Measured 2026-12-08 00:52-00:57 on the shared 2-core machine under load 10.5-12 (wall s is
2-4x CPU and not comparable between runs), main (`9cc0e5d`) and this code interleaved, two
rounds each (CPU s, peak MB):

| requests | llmbatch CLI | llmbatch API | offpeak | langbatch | openbatch + SDK |
|---|---|---|---|---|---|
| 5,000 (main) | 1.49, 1.35 / 92 | 1.46, 1.32 / 104 | 0.98, 0.96 / 82 | 1.08, 1.12 / 90 | 0.92, 0.89 / 67 |
| 5,000 | 1.48, 1.35 / 92 | 1.41, 1.27 / 94 | 1.05, 0.83 / 82 | 1.17, 1.07 / 93 | 0.86, 0.86 / 67 |
| 20,000 (main) | 2.20, 2.20 / 96 | 2.54, 2.47 / 151 | 1.71, 1.47 / 167 | 2.26, 1.94 / 187-191 | 1.69, 1.35 / 107 |
| 20,000 | 2.31, 2.29 / 96 | 2.27, 2.66 / 106 | 1.77, 1.85 / 166 | 2.22, 2.11 / 187 | 1.44, 1.49 / 108 |

What changed (the Python API's small job): a `Result` works out its `id` and parsed `body` when
first read (`export._lazy`), and the rows of one export share their state, provider, model and
endpoint strings: 20,000 results held 20,000 parsed bodies (~1.8 KB each) and 80,000 copies of
four strings. Peak RSS through the API 151 -> 106 MB at 20,000 (below openbatch's 108 and every
other peer's) and 104 -> 94 MB at 5,000; `list(q.results())` at 20,000 in one process 0.39-0.42
-> 0.23 CPU s (one full collection in it, not two: the bodies' ~160,000 dicts and lists no
longer made the collector walk the SDK's heap again); the whole API flow at 20,000 as its own
process, interleaved at load 10: 2.66, 2.84 -> 2.31, 2.29 CPU s (the table's runs spread too far
to show it). A sweep reads the uploads list a page of 100 first (it read 10,000 in one page,
~2.5 MB and a model each, on an account that keeps its files; the emulator's account holds few,
so no figure here moves by it). HTTP calls of one API job (`Queue.run`, 5,000): upload, create,
a list of batches in the same tick (an instant provider's batch ends in one `run`), the sweep (a
list of batches, a list of uploads: kept, f55f19a: only the list finds a duplicate another
process made), a 0.5 s wait, the list that sees it completed, the output's size (a download is
checked whole), its content, two deletes: 10, each 2-20 ms; openbatch makes 3 and its polls. Not
the CPU: the `openai` SDK is.

What remains is the SDK, in every flow that sends: its import (~0.4 CPU s against ~0.09 for
httpx2 alone, which it brings), ~24 MB of RSS, and ~55,000 objects every full collection and the
interpreter's last collections at exit walk (a process's exit after the flow is ~0.3-0.45 CPU
s). A prototype of the OpenAI transport on plain httpx2 (upload, create, list, retrieve,
content, delete; no error mapping: a measurement, not code to ship), with this code, in the same
runs (load 7.8-8.6; CPU s / MB): 5,000: 0.84, 0.74 / 81 against 1.39, 1.24 / 94 with the SDK;
20,000: 1.54, 1.50 / 93 against 2.30, 2.07 / 106: the peers' CPU in the table above (openbatch
0.86-0.92 at 5,000, 1.35-1.69 at 20,000), the work left being ingest. At 5,000 the RSS floor
(openbatch's 67 MB) stays out of reach while the price data loads in ingest to settle a batch's
cost (genai-prices' snapshot: ~18 MB, ~33,000 objects, ~0.1 CPU s).

On the quiet machine (2026-12-07 20:36, load 1.4-1.2, nothing else running; `2b377dc`), wall
s / CPU s / peak MB: 5,000: llmbatch CLI 2.64 / 2.08 / 103, API 1.97 / 1.41 / 116; offpeak
1.41 / 0.87 / 83, langbatch 1.57 / 1.04 / 93, openbatch 1.50 / 0.97 / 68. 20,000: CLI 4.18 /
3.54 / 117, API 3.64 / 3.03 / 173; offpeak 2.24 / 1.68 / 168, langbatch 2.75 / 2.21 / 205,
openbatch 2.11 / 1.55 / 108. Not met: llmbatch's CPU is ~1.5-2x the peers'.

Measured 2026-12-07 23:09-23:12 on the shared 2-core machine under load 5-8.5, main
(`bad1ad3`) and this code interleaved, two rounds each (CPU s, peak MB; an earlier pair of
rounds at load 2-3.5 against `3c7b715` gave the same RSS and CLI 1.56-1.92 against
1.76-1.77 at 5,000):

| requests | llmbatch CLI | llmbatch API | offpeak | langbatch | openbatch + SDK |
|---|---|---|---|---|---|
| 5,000 (main) | 2.14, 2.08 / 100 | 1.42, 1.12 / 110 | 1.18, 1.07 / 81 | 1.34, 1.29 / 89 | 1.05, 1.12 / 67 |
| 5,000 | 1.62, 2.08 / 93 | 1.02, 1.32 / 105 | 0.96, 1.25 / 81 | 1.04, 1.40 / 89 | 0.97, 1.16 / 67 |
| 20,000 (main) | 2.77, 3.03 / 114 | 2.42, 2.89 / 166 | 2.03, 2.20 / 166 | 2.43, 2.37 / 187 | 2.33, 1.74 / 108 |
| 20,000 | 2.80, 3.63 / 97 | 2.46, 2.79 / 152 | 1.96, 2.21 / 166 | 2.52, 2.95 / 187-193 | 2.12, 2.52 / 108 |

What changed: SQLite's page cache grows with the file (an eighth of it, 2 to 16 MiB,
store/sqlite.py `cache_kib`): a fixed 16 MiB cache held most of a 20,000-request queue's
25 MB file in memory (peak RSS at 20,000: API 166 -> 152 MB, CLI 114 -> 97; 20,000 through
the API in one process: after `run` 111 -> 96 MB; its CPU, twelve runs of each interleaved
at load 2-6, 2.17 s against 2.10 with the 16 MiB cache, the runs spreading 0.35 s). The
price data loaded without genai-prices' package __init__, which imports its network updater
(httpx2, asyncio; ~0.05 CPU s of `enqueue`'s estimate line, 0.23 -> 0.19 s for that line
alone; the lead took it out again: it rebuilt another package's import by hand, and would
break on that package's next layout). `wait` off a terminal imports no rich (~0.04 s); `results` no pricing module
(~6 ms). Per step at 5,000, load 2.5-2.8, three rounds (CPU s): `enqueue` 0.32-0.40 against
0.37-0.39, `wait` 0.88-1.02 against 1.00-1.10, `results` 0.22-0.25 against 0.23-0.24. CPU
between two runs of the same code moves by 0.3 s at load 5-8, more than these changes; the
RSS figures repeat to 1 MB. The CLI's peak is now below every peer's but openbatch's (67-108
MB: it holds no SDK models of results, only the output's lines); the API's at 20,000 below
offpeak's and langbatch's. What remains (`-X importtime`, quiet): the `openai` SDK's import
(~0.5 s in `wait`, every peer pays it too); the config check in every process with a config
file (the provider plugins' entry points and pydantic-core's validators, ~0.02-0.04 s);
llmbatch's dataclasses, made at import in every process (53 in `results`, 0.03 CPU s; 79 in
`wait`, 0.045; store/types.py's 30 alone ~0.028 s); the export itself is ~0.05 s of
`results`' 0.22 at 5,000.

Measured 2026-12-07 22:31-22:37 on the shared 2-core machine under load 7-10, main
(`e3566ec`) and this code interleaved, two rounds each (CPU s; wall s is ~2-3x CPU at this
load and not comparable between runs; peak MB):

| requests | llmbatch CLI | llmbatch API | offpeak | langbatch | openbatch + SDK |
|---|---|---|---|---|---|
| 5,000 (main) | 2.70, 2.18 / 101 | 1.63, 1.47 / 110 | 1.05, 0.90 / 82 | 1.26, 1.16 / 90 | 1.04, 0.95 / 67 |
| 5,000 | 1.73, 1.61 / 101 | 1.09, 1.01 / 109 | 1.03, 0.90 / 82 | 1.16, 1.08 / 89 | 1.00, 0.97 / 68 |
| 20,000 (main) | 3.37, 3.36 / 115 | 2.90, 2.87 / 167 | 1.86, 1.75 / 166 | 2.42, 2.16 / 187 | 1.87, 1.86 / 108 |
| 20,000 | 2.88, 2.64 / 115 | 2.38, 2.41 / 166 | 1.86, 1.72 / 167 | 2.30, 2.16 / 192 | 1.91, 1.81 / 108 |

What changed (issue 23): a process that loads the `openai` SDK or the price data imports it
with the garbage collector paused and froze it (`llmbatch.heap`), and every process froze
its heap at exit (since then, the lead kept the freezing to the CLI's processes: in a
program using the API it would keep the host's objects of that moment from ever being
collected as cyclic garbage, so the API flow gives back ~0.25-0.45 CPU s of the figures
above): each full collection walked the SDK's ~100,000 and the price data's
~75,000 objects again (gen-2 time at 20,000 through the API 0.34 -> 0.09 CPU s), and the
interpreter's last collections at exit cost ~0.25 CPU s in every process that had loaded the
SDK; a sending process imported `httpx` beside the SDK's `httpx2` (~0.1 s); the export built
a dict per row (~0.1 s at 20,000). At 5,000 the API's CPU is now the peers' (1.0-1.1 s
against 0.9-1.2), the command line's ~0.6 s more (three processes, each starting Python,
click and the store, ~0.1 s; `enqueue`'s estimate loads the price data, ~0.2 s, for its one
line). At 20,000 both are ~0.5-1 s above offpeak and openbatch: per-request Python in
enqueue (~0.2 s), pack (~0.25 s), ingest (~0.9 s: parse 0.27, apply 0.45) and `results`
(~0.4 s), measured in-process with `time.process_time` around each phase. RSS: the API flow
at 20,000 grows by ~40 MB in `run` (SQLite's page caches of 16 MiB a connection, a chunk of
findings) and ~57 MB holding 20,000 `Result`s (each keeps its row and its parsed body);
openbatch holds the output's text lines. Floors still not met.

Measured 2026-12-07 20:01 on the shared 2-core machine under load 4.5-5 (main, then this
code, in the same minute; wall s / CPU s / peak MB):

| requests | llmbatch CLI | llmbatch API | offpeak | langbatch | openbatch + SDK |
|---|---|---|---|---|---|
| 5,000 (main) | 3.67 / 2.35 / 103 | 2.68 / 1.59 / 116 | 1.71 / 0.96 / 81 | 2.21 / 1.24 / 93 | 1.91 / 1.04 / 67 |
| 5,000 | 3.44 / 2.17 / 103 | 2.41 / 1.54 / 116 | 1.67 / 0.94 / 82 | 1.90 / 1.17 / 93 | 1.70 / 1.03 / 67 |
| 20,000 (main) | 5.58 / 3.86 / 117 | 4.48 / 3.04 / 173 | 2.92 / 1.78 / 167 | 3.83 / 2.37 / 187 | 2.71 / 1.77 / 108 |
| 20,000 | 5.01 / 3.61 / 117 | 4.46 / 3.02 / 173 | 3.58 / 1.74 / 166 | 3.72 / 2.26 / 191 | 3.05 / 1.64 / 108 |

The floors are not met, and what stands between is CPU, not waiting. At load 15-17 (19:15)
every flow's wall was ~3x its CPU, llmbatch's (7.59 / 2.46, 5.82 / 1.83) as the peers'
(3.59 / 1.23 ...): a loaded machine makes every CPU second cost three, so llmbatch's larger
wall was its larger CPU waiting for a core. Quiet (load 1-2, 19:58), wall minus CPU is
0.6-0.8 s for llmbatch's CLI (three process starts, one 0.5 s poll sleep) and 0.5-0.6 s for
the peers (one 0.5 s sleep). One 5,000-request `wait`, per HTTP call (an httpx hook, quiet):
start 0; upload 0.92 s (Python, llmbatch, the `openai` SDK's import, the pack); create
+0.01; a poll in the same tick +0.03 (a cron `run` finds an instant batch so); the sweep's
list of batches and of uploads +0.05; a 0.48 s sleep; the poll that sees it completed at
+0.55 from the create (the emulator took ~0.35 s; the peers sleep 0.5 s and retrieve); the
output's size and content +0.01; the ingest 0.33 s; two deletes 6 ms; exit 0.03 s later.
Before this code a tick that packed and uploaded for 0.9 s counted the next poll from its
start, so it polled again at once (one list call more), and a batch that showed nothing new
was polled 0.5, 1, 2, 4 s apart: with a batch validating 3 s, `Queue.run` took 5.8-6.4 s on
main and 5.5-5.8 s now (polled every 0.5 s for a batch's first minute,
defaults.STEADY_POLL_S). What is left is CPU: `enqueue` ~0.4 s, `wait` ~0.9 s before the
upload (the SDK import ~0.7 s, which every peer pays too, and the pack) and 0.33 s of ingest
at 5,000, `results` ~0.3 s, each process starting Python and llmbatch again. The next
levers: the OpenAI batch calls over plain HTTP (no SDK import), the pack and ingest of a
small job, `results` reading rows in bulk.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import orjson

MODEL = "gpt-4o-mini"
KEY = "sk-bench-not-a-secret"
POLL = 0.5
PEERS = ("offpeak", "langbatch", "openbatch")

# Each peer's flow, run by its own venv's python: argv = base_url, input jsonl, work dir.
# Each reads the same requests (custom_id, messages) and must end with every result read.
PEER_SCRIPTS = {
    "offpeak": """
        import json, sys, offpeak
        from openai import OpenAI
        from offpeak.venues.openai_batch import OpenAIBatch
        base, src, work = sys.argv[1:4]
        rows = [json.loads(x) for x in open(src)]
        jobs = [offpeak.job(r["body"]["model"], r["body"]["messages"]) for r in rows]
        venue = OpenAIBatch(client=OpenAI(base_url=base, api_key="KEY"))
        results = offpeak.run(jobs, "2h", venues=[venue], poll_interval=POLL, fallback="none")
        ok = sum(1 for r in results if str(getattr(r, "status", "")).lower().endswith("ok")
                 or getattr(r, "text", None))
        print(json.dumps({"results": len(results), "ok": ok}))
    """,
    "langbatch": """
        import json, logging, sys, time
        logging.disable(logging.INFO)
        from openai import OpenAI
        from langbatch.openai import OpenAIChatCompletionBatch
        base, src, work = sys.argv[1:4]
        rows = [json.loads(x) for x in open(src)]
        client = OpenAI(base_url=base, api_key="KEY")
        batch = OpenAIChatCompletionBatch.create(
            [r["body"]["messages"] for r in rows], request_kwargs={"model": rows[0]["body"]["model"]},
            batch_kwargs={"client": client})
        batch.start()
        while batch.get_status() not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(POLL)
        ok, failed = batch.get_results()
        print(json.dumps({"results": len(ok or []) + len(failed or []), "ok": len(ok or [])}))
    """,
    "openbatch": """
        import json, sys, time
        from pathlib import Path
        from openai import OpenAI
        from openbatch import BatchCollector
        base, src, work = sys.argv[1:4]
        path = Path(work) / "openbatch.jsonl"
        collector = BatchCollector(path)
        for x in open(src):
            r = json.loads(x)
            collector.chat.completions.create(r["custom_id"], r["body"]["model"],
                                              messages=r["body"]["messages"])
        client = OpenAI(base_url=base, api_key="KEY")
        f = client.files.create(file=path.open("rb"), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
        while b.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(POLL)
            b = client.batches.retrieve(b.id)
        lines = client.files.content(b.output_file_id).text.splitlines()
        ok = sum(1 for ln in lines if json.loads(ln)["response"]["status_code"] == 200)
        print(json.dumps({"results": len(lines), "ok": ok}))
    """,
}

API_SCRIPT = """
    import json, sys
    from llmbatch import EngineSettings, Queue
    base, src, work = sys.argv[1:4]
    settings = EngineSettings(poll_interval=POLL, first_poll=POLL,
                              providers={"openai": {"base_url": base, "api_key_env": "KEY_ENV"}})
    with Queue(work + "/api.db", "q", settings=settings) as q:
        q.add_file(src)
        q.run()
        results = list(q.results())
    ok = sum(1 for r in results if r.state == "succeeded")
    print(json.dumps({"results": len(results), "ok": ok}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbatch.emulator", "--port", str(port), "--data-dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the emulator did not start")


def write_requests(path: Path, n: int) -> None:
    with path.open("wb") as f:
        for i in range(n):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"question {i}: why?"}],
            }
            f.write(orjson.dumps({"custom_id": f"r{i}", "method": "POST",
                                  "url": "/v1/chat/completions", "body": body}) + b"\n")  # fmt: skip


class Measured(subprocess.Popen[bytes]):
    """A Popen that keeps the child's peak RSS (Linux: kB) and CPU seconds, from wait4."""

    peak_rss_kb = 0
    cpu_s = 0.0

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        try:
            pid, status, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0
        if pid:
            self.peak_rss_kb = usage.ru_maxrss
            self.cpu_s = usage.ru_utime + usage.ru_stime
        return pid, status


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MB), CPU seconds and stdout of one process."""
    started = time.perf_counter()
    proc = Measured(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"{Path(cmd[1]).name} exited {proc.returncode}: {tail[0]}")
    return wall, proc.peak_rss_kb / 1024, proc.cpu_s, out.decode()


def compile_llmbatch() -> None:
    """Write llmbatch's bytecode, as `pip install` does for the peers' packages: a checkout
    run with PYTHONDONTWRITEBYTECODE (or never imported) would otherwise compile every
    module from source in each process, which no installed copy does."""
    import compileall

    import llmbatch

    compileall.compile_dir(str(Path(llmbatch.__file__).parent), quiet=1)


def script(body: str, n: int) -> str:
    return textwrap.dedent(body).replace("POLL", str(POLL)).replace('"KEY"', repr(KEY))


def run_cli(base: str, src: Path, work: Path, env: dict[str, str]) -> dict[str, object]:
    config = work / "llmbatch.toml"
    config.write_text(
        f'[providers.openai]\nbase_url = "{base}"\napi_key_env = "LLMBATCH_BENCH_KEY"\n'
    )
    env = {**env, "LLMBATCH_CONFIG": str(config), "LLMBATCH_DB": str(work / "cli.db")}
    llmbatch = str(Path(sys.executable).parent / "llmbatch")
    steps = (
        ["enqueue", str(src), "-q", "q"],
        ["wait", "-q", "q", "--poll-interval", str(POLL)],
        ["results", "-q", "q", "-o", str(work / "cli-results.jsonl")],
    )
    wall, rss, cpu = 0.0, 0.0, 0.0
    for args in steps:
        w, r, c, _out = timed([llmbatch, *args], env, work)
        wall, rss, cpu = wall + w, max(rss, r), cpu + c
    lines = (work / "cli-results.jsonl").read_bytes().splitlines()
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(rss, 1),
        "results": len(lines),
    }


def run_python(python: str, body: str, base: str, src: Path, work: Path, env: dict[str, str],
               n: int) -> dict[str, object]:  # fmt: skip
    path = work / f"flow-{abs(hash(body))}.py"
    path.write_text(script(body, n))
    wall, rss, cpu, out = timed([python, str(path), base, str(src), str(work)], env, work)
    got = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(rss, 1), **got}


def peer_python(venvs: Path, tool: str) -> str | None:
    """The python of `tool`'s own venv, made and installed on first use; None (said in one
    line) when it cannot be installed."""
    venv = venvs / tool
    python = venv / "bin" / "python"
    if (
        python.exists()
        and subprocess.run(
            [str(python), "-c", f"import {tool}, openai"], capture_output=True
        ).returncode
        == 0
    ):
        return str(python)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", tool, "openai"], capture_output=True, text=True
    ) if made.returncode == 0 else made  # fmt: skip
    if pip.returncode != 0:
        why = (pip.stderr or "").strip().splitlines()[-1:] or ["venv failed"]
        print(f"skipped {tool}: it did not install ({why[0][:120]})", flush=True)
        return None
    return str(python)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "llmbatch-bench-peers")
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    peers = not (args.small or os.environ.get("CI"))
    sizes = [200] if not peers else args.requests
    if not peers:
        print(
            "peers skipped: bench_peers installs PyPI tools and runs locally, not in CI or --small"
        )
    pythons = {t: p for t in PEERS if peers and (p := peer_python(args.venvs, t))}
    compile_llmbatch()
    env = {**os.environ, "LLMBATCH_BENCH_KEY": KEY, "OPENAI_API_KEY": KEY}
    load = os.getloadavg()
    out: dict[str, object] = {"load_before": [round(x, 2) for x in load], "poll_s": POLL}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        root = Path(tmp)
        emulator, base = start_emulator(root / "emulator")
        try:
            for n in sizes:
                work = root / f"n{n}"
                work.mkdir()
                src = work / "requests.jsonl"
                write_requests(src, n)
                row: dict[str, object] = {
                    "llmbatch_cli": run_cli(base, src, work, env),
                    "llmbatch_api": run_python(
                        sys.executable, API_SCRIPT.replace("KEY_ENV", "LLMBATCH_BENCH_KEY"),
                        base, src, work, env, n,
                    ),
                }  # fmt: skip
                for tool, python in pythons.items():
                    try:
                        row[tool] = run_python(python, PEER_SCRIPTS[tool], base, src, work, env, n)
                    except (RuntimeError, ValueError, IndexError) as exc:
                        row[tool] = {"error": str(exc)[:200]}
                others = [
                    v for k, v in row.items() if not k.startswith("llmbatch") and "wall_s" in v
                ]
                if others:
                    fastest = min(float(v["wall_s"]) for v in others)  # type: ignore[arg-type]
                    least = min(float(v["peak_rss_mb"]) for v in others)  # type: ignore[arg-type]
                    row["floor_met"] = {
                        "cli_faster_than_every_peer": float(row["llmbatch_cli"]["wall_s"]) < fastest,  # type: ignore[index]
                        "api_faster_than_every_peer": float(row["llmbatch_api"]["wall_s"]) < fastest,  # type: ignore[index]
                        "rss_lowest": max(float(row["llmbatch_cli"]["peak_rss_mb"]),  # type: ignore[index]
                                          float(row["llmbatch_api"]["peak_rss_mb"])) < least,  # type: ignore[index]
                    }  # fmt: skip
                out[str(n)] = row
                print(json.dumps({str(n): row}), flush=True)
        finally:
            emulator.kill()
            emulator.wait()
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
