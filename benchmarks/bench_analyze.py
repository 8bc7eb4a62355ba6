"""`llmbatch analyze` over a large usage export: time and peak memory, both input shapes.

    python benchmarks/bench_analyze.py [--records N] [--small]

Writes N per-call records (default 1,000,000; --small: 50,000) over 30 days, 6 models and 8
tags, one JSON object a line, and a pretty-printed file of OpenAI usage pages (indent 2, so
every value spans many lines: the buffered path) holding N/10 results; then analyses each in
a child process and reports its seconds and peak RSS. Prints one JSON line. Targets for 1M
records: under 30 s and under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-5.4", "claude-haiku-4-5", "ft:mine"]
TAGS = [f"team-{i}" for i in range(8)]
START = 1_796_000_000  # 2026-11-30
DAY = 86400
CHILD = """
import resource, sys, time
from llmbatch.analyze import analyze_file, render
t = time.perf_counter()
a = analyze_file(sys.argv[1], exclude_tags=["team-0"])
render(a, "json")
seconds = time.perf_counter() - t
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(a.lines))
"""


def write_records(path: Path, n: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            rec = {
                "timestamp": START + rng.randrange(30 * DAY),
                "model": rng.choice(MODELS),
                "input_tokens": rng.randrange(50, 4000),
                "output_tokens": rng.randrange(1, 800),
                "cached_tokens": rng.choice((0, 0, 128)),
                "tag": rng.choice(TAGS),
                "batch": rng.random() < 0.3,
            }
            f.write(json.dumps(rec) + "\n")


def write_pages(path: Path, results: int, seed: int = 5) -> None:
    """Pretty-printed pages (30 one-day buckets each), concatenated, until `results`."""
    rng = random.Random(seed)
    written = 0
    with open(path, "w") as f:
        while written < results:
            data = []
            for day in range(30):
                rows = []
                for model in MODELS:
                    for batch in (False, True):
                        rows.append(
                            {
                                "object": "organization.usage.completions.result",
                                "model": model,
                                "batch": batch,
                                "project_id": rng.choice(TAGS),
                                "input_tokens": rng.randrange(10**6),
                                "input_cached_tokens": 0,
                                "output_tokens": rng.randrange(10**5),
                                "num_model_requests": rng.randrange(1, 1000),
                            }
                        )
                written += len(rows)
                data.append(
                    {
                        "object": "bucket",
                        "start_time": START + day * DAY,
                        "end_time": START + (day + 1) * DAY,
                        "results": rows,
                    }
                )
            page = {"object": "page", "data": data, "has_more": False, "next_page": None}
            f.write(json.dumps(page, indent=2) + "\n")


def analyse(path: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, lines) of one analysis in a fresh child process (its RSS
    includes the interpreter and the imports, about 60 MB)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--small", action="store_true", help="50,000 records (CI)")
    args = ap.parse_args()
    n = 50_000 if args.small else args.records
    with tempfile.TemporaryDirectory() as tmp:
        records, pages = Path(tmp) / "calls.jsonl", Path(tmp) / "pages.json"
        t = time.perf_counter()
        write_records(records, n)
        write_pages(pages, n // 10)
        made = time.perf_counter() - t
        rec_s, rec_mb, rec_lines = analyse(records)
        page_s, page_mb, _ = analyse(pages)
        sizes = records.stat().st_size, pages.stat().st_size
    ok = rec_s < 30 and rec_mb < 200 if n >= 1_000_000 else None
    print(
        json.dumps(
            {
                "bench": "analyze",
                "records": n,
                "records_mb": round(sizes[0] / 2**20, 1),
                "records_seconds": round(rec_s, 2),
                "records_peak_rss_mb": round(rec_mb, 1),
                "records_per_s": round(n / rec_s),
                "lines": rec_lines,
                "pages_results": n // 10,
                "pages_mb": round(sizes[1] / 2**20, 1),
                "pages_seconds": round(page_s, 2),
                "pages_peak_rss_mb": round(page_mb, 1),
                "target": "1M records < 30 s, < 200 MB",
                "ok": ok,
                "make_seconds": round(made, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
