"""The physical floor of llmbatch's work without HTTP: raw sqlite3 + orjson, nothing else.

    python benchmarks/floor.py [--requests N] [--small]

Three phases over the same input file `bench_end_to_end` enqueues (benchmarks/gen_requests.py):

- `enqueue`: parse every line with orjson, write its body back as JSON and insert one row per
  request (custom id, model, body, a 16-byte body hash) in one transaction with `executemany`;
- `pack`: read the bodies back out of the database in id order and write the batch file
  (`{"custom_id", "method", "url", "body"}` lines);
- `ingest`: parse a result file of the same size as the emulator's (one OpenAI batch output
  line per request, usage included) with orjson, insert one result row per line with
  `executemany` and mark every request succeeded with one set-based `UPDATE … FROM`.

What llmbatch adds on top (validation, the canonical hash, imports, leases, fences, attempts,
nonces, costs, HTTP, the emulator) is what `bench_end_to_end` measures against this: it runs
`floor()` in the same invocation on the same file and prints the ratio. The result file is
written before the clock starts (the emulator's work, not ours). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from gen_requests import lines

SCHEMA = (
    "CREATE TABLE requests (id INTEGER PRIMARY KEY, custom_id TEXT NOT NULL UNIQUE, "
    "model TEXT NOT NULL, body BLOB NOT NULL, body_hash BLOB NOT NULL, "
    "state TEXT NOT NULL DEFAULT 'queued')",
    "CREATE TABLE results (request_id INTEGER PRIMARY KEY, status_code INTEGER, body BLOB, "
    "input_tokens INTEGER, output_tokens INTEGER)",
)


def result_file(path: Path, n: int) -> None:
    """One OpenAI batch output line per request of `path`'s first n lines (the emulator's work)."""
    with open(path, "wb") as f:
        for i in range(1, n + 1):
            body = {
                "id": f"chatcmpl-{i}",
                "object": "chat.completion",
                "created": 1765000000,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "positive"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 61, "completion_tokens": 1, "total_tokens": 62},
            }
            line = {
                "id": f"batch_req_{i}",
                "custom_id": f"r-{i}",
                "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
                "error": None,
            }
            f.write(orjson.dumps(line) + b"\n")


def floor(requests: Path, workdir: Path) -> dict[str, float]:
    """Seconds of each phase (and their total) over the request file `requests`."""
    db = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for statement in SCHEMA:
        db.execute(statement)
    out: dict[str, float] = {}

    cpu = _cpu()
    t = time.perf_counter()
    with open(requests, "rb") as f:  # streamed: executemany takes an iterator
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO requests (custom_id, model, body, body_hash) VALUES (?, ?, ?, ?)",
            map(_request_row, f),
        )
        db.execute("COMMIT")
    n = int(db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    out["enqueue"] = time.perf_counter() - t

    t = time.perf_counter()
    with open(workdir / "batch.jsonl", "wb") as f:
        for rid, body in db.execute("SELECT id, body FROM requests ORDER BY id"):
            f.write(
                b'{"custom_id":"r-%d","method":"POST","url":"/v1/chat/completions","body":' % rid
            )
            f.write(body)
            f.write(b"}\n")
    out["pack"] = time.perf_counter() - t

    writing = _cpu()
    result_file(workdir / "results.jsonl", n)  # the emulator's work: not counted
    writing = _cpu() - writing
    t = time.perf_counter()
    db.execute("BEGIN")
    with open(workdir / "results.jsonl", "rb") as f:
        db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?)", map(_result_row, f))
    db.execute(
        "UPDATE requests SET state = 'succeeded' FROM results "
        "WHERE results.request_id = requests.id AND results.status_code = 200"
    )
    db.execute("COMMIT")
    out["ingest"] = time.perf_counter() - t
    db.close()
    out = {k: round(v, 2) for k, v in out.items()}
    out["seconds"] = round(sum(out.values()), 2)
    # on a loaded machine the seconds include waiting for a core; this is the work alone
    out["cpu_s"] = round(_cpu() - cpu - writing, 2)
    return out


def _request_row(raw: bytes) -> tuple[str, str, bytes, bytes]:
    line = orjson.loads(raw)
    body = orjson.dumps(line["body"])
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return line["custom_id"], line["body"]["model"], body, digest


def _result_row(raw: bytes) -> tuple[int, int, bytes, int, int]:
    line = orjson.loads(raw)
    response = line["response"]
    body = response["body"]
    usage = body["usage"]
    return (
        int(line["custom_id"][2:]),
        response["status_code"],
        orjson.dumps(body),
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--small", action="store_true", help="10,000 requests")
    args = ap.parse_args()
    n = 10_000 if args.small else args.requests
    with tempfile.TemporaryDirectory(prefix="llmbatch-floor-") as tmp:
        path = Path(tmp) / "requests.jsonl"
        with open(path, "wb") as f:
            for line in lines(n):
                f.write(line)
        print(json.dumps({"bench": "floor", "requests": n, **floor(path, Path(tmp))}))


if __name__ == "__main__":
    main()
