"""Seeded generator of chat-completion batch input lines (two messages, mean line ≈ 500 bytes).

python benchmarks/gen_requests.py N [--seed S] [--model M] > requests.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator

import orjson

WORDS = (  # noqa: SIM905 - one readable sentence of words
    "the quality battery price shipping arrived broken works great terrible love hate screen "
    "sound fast slow cheap expensive recommend return refund size color fits comfortable "
    "durable flimsy customer service helpful rude package box instructions easy hard setup "
    "after weeks months stopped working perfect disappointed excellent average okay"
).split()
SYSTEM = (
    "You are a careful assistant that classifies product reviews as positive, negative or "
    "neutral. Answer with one word."
)


def lines(n: int, seed: int = 7, model: str = "gpt-4o-mini", start: int = 0) -> Iterator[bytes]:
    """`n` input lines, the same for the same seed."""
    rng = random.Random(seed)
    for i in range(start, start + n):
        review = " ".join(rng.choices(WORDS, k=rng.randint(10, 40)))
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Review #{i}: {review}"},
            ],
            "max_tokens": 5,
            "temperature": 0,
        }
        yield (
            orjson.dumps(
                {
                    "custom_id": f"review-{i:08d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
            + b"\n"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default="gpt-4o-mini")
    args = ap.parse_args()
    out = sys.stdout.buffer
    for line in lines(args.n, args.seed, args.model):
        out.write(line)


if __name__ == "__main__":
    main()
