"""The reserved worst case against what the emulator bills, request by request.

    python benchmarks/bench_worst_case.py [FILE] [--small]

For each request of benchmarks/data/worst_set.jsonl (1,200 requests with `n`, `best_of`,
tools, images by URL and inline, files and PDFs, 5-minute and 1-hour cache writes; --small:
the first 300), the worst case a budget reserves (llmbatch/worst.py, priced at the batch price)
beside the emulator's bill for the same request: its own token rule and the providers'
documented counting of images, documents and tool prompts (emulator/usage_rules.py), every
capped reply run into its cap (`length_rate` 1; an uncapped one is bounded by the model's
largest output, from the emulator's model catalog), every cache breakpoint a write. A
request the model's card refuses (billed input past its context window, a cap past its
largest output) is refused by the provider, unbilled, and is left out. Prints one JSON line: requests compared, how many the worst case fell short of
(must be 0), and the ratio worst / actual (min, median, p90), and the microseconds a worst
case takes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from llmbatch.budget import context_window
from llmbatch.emulator.anthropic_synth import (
    MessagesError,
    cache_use,
    check_params,
    check_window,
    count_prompt,
    message,
)
from llmbatch.emulator.models import Catalog, build, builtin_ids
from llmbatch.emulator.synth import RequestError, kind_of, respond
from llmbatch.estimate import model_max_output
from llmbatch.pricing import model_prices
from llmbatch.providers import format_of
from llmbatch.worst import worst_case

DEFAULT_SET = Path(__file__).with_name("data") / "worst_set.jsonl"
DAY = date(2026, 11, 26)
RATES: dict[tuple[str, str], dict[int, Any]] = {}


@dataclass(frozen=True, slots=True)
class Compared:
    custom_id: str
    worst: int  # micro-USD reserved
    actual: int | None  # micro-USD the emulator bills (None: refused, over the window)
    seconds: float  # to compute the worst case


@cache
def catalog(door: str) -> Catalog:
    """The emulator's built-in models of a door (windows, largest outputs), as it serves them."""
    return build(door, builtin_ids(door))


def billed(provider: str, endpoint: str, body: dict[str, Any]) -> Any:
    """The emulator's usage for one request, every capped reply at its cap, every breakpoint
    written; None if the model's card refuses it (the provider bills nothing)."""
    model = str(body["model"])
    if provider == "anthropic":
        try:
            card = check_params(body, catalog("anthropic"))
            prompt = count_prompt(body)
            check_window(prompt, card)
        except MessagesError:
            return None
        use = cache_use(prompt, lambda bp: False)
        msg = message(
            body,
            salt="bench",
            cache=use,
            prompt=prompt,
            service_tier="standard",
            length_rate=1.0,
            ceiling=card.max_output_tokens,
        )
        return format_of("anthropic").usage(msg["usage"], None).tokens()
    kind = kind_of(endpoint) or "chat"
    try:
        out, _usage = respond(
            kind,
            body,
            model=model,
            created=0,
            salt="bench",
            length_rate=1.0,
            card=catalog("openai").get(model),
        )
    except RequestError:
        return None
    return format_of(provider).usage(out.get("usage"), endpoint).tokens()


def compare(line: bytes) -> Compared:
    obj = orjson.loads(line)
    if "params" in obj:
        provider, endpoint, body = "anthropic", "/v1/messages", obj["params"]
    else:
        provider, endpoint, body = "openai", obj["url"], obj["body"]
    model = str(body["model"])
    prices = model_prices(provider, model, DAY)
    window = context_window(provider, model)
    most = model_max_output(model)
    rates = RATES.setdefault((provider, model), {})  # as a budget's plan keeps them per cut
    started = time.perf_counter()
    w = worst_case(prices, endpoint, body, window, max_output=most, cache=rates)
    seconds = time.perf_counter() - started
    assert w.micro is not None, f"{obj['custom_id']}: {model} is unpriced"
    tokens = billed(provider, endpoint, body)
    if tokens is None or (window and tokens.input > window):
        return Compared(obj["custom_id"], w.micro, None, seconds)
    cost = prices.cost(tokens, prices.tier(tokens.input), batch=True)
    assert cost is not None
    return Compared(obj["custom_id"], w.micro, int(cost * 1_000_000), seconds)


def run(path: Path, limit: int | None = None) -> list[Compared]:
    with path.open("rb") as f:
        lines = [ln for ln in f if ln.strip()][:limit]
    return [compare(ln) for ln in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT_SET)
    ap.add_argument("--small", action="store_true", help="the first 300 requests")
    args = ap.parse_args()
    out = run(args.file, 300 if args.small else None)
    billed_ = [c for c in out if c.actual is not None]
    ratios = sorted(c.worst / max(c.actual or 0, 1) for c in billed_)
    short = [c.custom_id for c in billed_ if c.actual is not None and c.worst < c.actual]
    print(
        json.dumps(
            {
                "bench": "worst_case",
                "requests": len(out),
                "compared": len(billed_),
                "refused_over_window": len(out) - len(billed_),
                "short": len(short),
                "short_ids": short[:10],
                "ratio_min": round(ratios[0], 3),
                "ratio_median": round(ratios[len(ratios) // 2], 3),
                "ratio_p90": round(ratios[int(len(ratios) * 0.9)], 3),
                "us_per_worst_case": round(sum(c.seconds for c in out) / len(out) * 1e6, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
