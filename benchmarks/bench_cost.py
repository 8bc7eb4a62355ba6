"""Pricing + report over many results, tier keys included.

    python benchmarks/bench_cost.py [--results N] [--small]

Fills a fresh SQLite store with N results (default 1,000,000; --small: 50,000) over 30 UTC
days, 3 queues and 5 models — two of them tiered (claude-sonnet-4-5 above 200k input tokens,
gpt-5.4 above 272k), one without a batch price (derived), one unknown (unpriced) — then times
`llmbatch report`'s path: the store's per-aggregate sums, one batch and one real-time price per
aggregate, the roll-up and the rendering; then two receipts (`report --batch` of one day's batch,
about 33,000 results, and `report --day --queue` of one queue's day). Prints one JSON line. Target:
under 2 s for 1M.

The results are written with plain SQL, not through ingest, so the fill adds each chunk to the
report's running totals (cost_totals) with the statement ingest runs in the same transaction
as the results (`add_cost_totals`, 500 attempts at a time, as ingest does). `--raw` times the
fallback instead: the report over a period that does not start at a UTC midnight, which sums
every result.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llmbatch import receipt, report
from llmbatch.pricing import model_prices
from llmbatch.store import open_store
from llmbatch.store.sqlfiles import as_list, queries

MODELS = [
    ("openai", "/v1/chat/completions", "gpt-4o-mini"),
    ("openai", "/v1/chat/completions", "gpt-5.4"),
    ("anthropic", "/v1/messages", "claude-sonnet-4-5"),
    ("openai", "/v1/embeddings", "text-embedding-3-small"),
    ("openai", "/v1/chat/completions", "my-finetune-unknown"),
]
DAY = 86400.0
START = 1_796_000_000.0  # 2026-11-30
FIRST_DAY = datetime.fromtimestamp(START, UTC)


def fill(db: str, n: int, seed: int = 7) -> None:
    open_store(db).close()
    rng = random.Random(seed)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO imports (id, queue, source, state, owner, low_water, started_at, "
        "heartbeat_at) VALUES (1, 'bench', 'bench', 'committed', 'bench', 0, 0, 0)"
    )
    con.execute("INSERT INTO request_bodies (hash, body) VALUES (x'68', x'7b7d')")
    chunk = 50_000
    for lo in range(0, n, chunk):
        reqs, res = [], []
        for i in range(lo, min(n, lo + chunk)):
            provider, endpoint, model = MODELS[i % len(MODELS)]
            queue = rng.choice(("reviews", "evals", "tags"))
            at = START + rng.randrange(30) * DAY + rng.random() * DAY
            inp = rng.randrange(10, 400_000) if i % 50 == 0 else rng.randrange(10, 4000)
            out = 0 if "embeddings" in endpoint else rng.randrange(1, 800)
            ok = i % 97 != 0
            tier = model_prices(provider, model, FIRST_DAY).tier(inp)
            state = "succeeded" if ok else "failed"
            reqs.append(
                (i + 1, queue, f"r{i}", 1, provider, endpoint, model, b"h", state, 1, 1, at, at)
            )
            usage = (inp, out, inp // 3) if ok else (None, None, None)
            res.append(
                (i + 1, i + 1, None if ok else "server_error", *usage, tier, int(at // DAY), at)
            )
        con.executemany(
            "INSERT INTO requests (id, queue, custom_id, import_id, provider, endpoint, model, "
            "body_hash, state, text_chars, text_bytes, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            reqs,
        )
        # one batch per UTC day (its results are recorded as it is ingested, that day)
        batch_of = {r[0]: int(r[12] // DAY - START // DAY) + 1 for r in reqs}
        con.executemany(
            "INSERT OR IGNORE INTO batches (id, provider, endpoint, model, state, "
            "provider_batch_id, request_count, created_at, ingested_at, updated_at) "
            "VALUES (?, 'openai', '/v1/chat/completions', NULL, 'ingested', ?, 0, ?, ?, ?)",
            [
                (b, f"batch_{b}", START + (b - 1) * DAY, START + b * DAY - 1, START + b * DAY)
                for b in sorted(set(batch_of.values()))
            ],
        )
        con.executemany(
            "INSERT INTO attempts (id, request_id, batch_id, state, created_at) "
            "VALUES (?, ?, ?, 'done', 0)",
            [(r[0], r[0], batch_of[r[0]]) for r in reqs],
        )
        con.executemany(
            "INSERT INTO results (attempt_id, request_id, error_code, input_tokens, "
            "output_tokens, cached_tokens, price_tier, day, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            res,
        )
        con.execute(queries()["add_cost_totals"], {"ids": as_list(r[0] for r in reqs)})
        con.commit()
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=int, default=1_000_000)
    ap.add_argument("--small", action="store_true", help="50,000 results (CI)")
    ap.add_argument("--raw", action="store_true", help="time the sum over every result")
    args = ap.parse_args()
    n = 50_000 if args.small else args.results
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        t = time.perf_counter()
        fill(db, n)
        fill_s = time.perf_counter() - t
        store = open_store(db)
        t = time.perf_counter()
        since = datetime.fromtimestamp(START - 1, UTC) if args.raw else None
        lines = report.build(store, since=since)
        text = report.render(lines, "csv")
        seconds = time.perf_counter() - t
        total = report.totals(lines)
        t = time.perf_counter()  # receipts: one batch, one queue's day
        one_batch = receipt.render(receipt.for_batch(store, "1"), "csv")
        day = receipt.for_day(store, FIRST_DAY.date() + timedelta(days=3), "reviews")
        receipt_seconds = time.perf_counter() - t
        store.close()
    print(json.dumps({
        "bench": "cost", "path": "raw" if args.raw else "totals", "results": n, "seconds": round(seconds, 3), "target_s": 2.0,
        "ok": seconds < 2.0 if n >= 1_000_000 else None, "report_lines": len(lines),
        "csv_bytes": len(text), "batch_usd": str(total.batch_usd),
        "realtime_usd": str(total.realtime_usd), "unpriced": total.unpriced,
        "fill_seconds": round(fill_s, 1), "receipt_seconds": round(receipt_seconds, 3),
        "receipt_lines": len(one_batch.splitlines()) - 1 + len(day.lines),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
