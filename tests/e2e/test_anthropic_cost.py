"""Anthropic costs end to end: cache writes (5-minute and 1-hour) and cache reads at batch prices.

An Anthropic queue whose requests use `cache_control` (system prompts and tools, both TTLs,
several models, one long-context request past Sonnet's 200k-token tier) runs through the
emulator with the official SDK. `llmbatch report` must equal an independent computation that
reads only the exported results (the provider's own `usage` objects), turns each into
genai-prices usage with genai-prices' own Anthropic extractor, and prices every request on
its own, without llmbatch.pricing or llmbatch.usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from genai_prices import calc_price, extract_usage

from helpers import cli, drain, fast_settings, sql
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running

# model -> whether the price data has a batch price for it (known here, not asked of llmbatch)
MODELS = {"claude-haiku-4-5": True, "claude-3-5-haiku-latest": False, "claude-sonnet-4-5": True}
PREFIX_5M = "Answer as a careful reviewer of batch systems. " * 300
PREFIX_1H = "You grade essays on a scale of one to ten and say why. " * 250
TOOLS = [{"name": f"tool_{i}", "description": "look things up " * 80,
          "input_schema": {"type": "object", "properties": {}}} for i in range(3)]  # fmt: skip
LONG = "long context " * 101_000  # past 200k tokens under the emulator's rule: tier 1


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=5) as e:
        yield e


def params(i: int) -> dict[str, Any]:
    model = list(MODELS)[i % len(MODELS)]
    p: dict[str, Any] = {
        "model": model,
        "max_tokens": 40 + i % 90,
        "messages": [{"role": "user", "content": f"question {i}: " + "why " * (i % 13)}],
    }
    kind = i % 4
    if kind == 0:  # a 5-minute system prompt
        p["system"] = [{"type": "text", "text": PREFIX_5M, "cache_control": {"type": "ephemeral"}}]
    elif kind == 1:  # a 1-hour system prompt
        p["system"] = [{"type": "text", "text": PREFIX_1H,
                        "cache_control": {"type": "ephemeral", "ttl": "1h"}}]  # fmt: skip
    elif kind == 2:  # tools cached for an hour, then a 5-minute system prompt after them
        tools = [dict(t) for t in TOOLS]
        tools[-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
        p["tools"] = tools
        p["system"] = [{"type": "text", "text": PREFIX_5M, "cache_control": {"type": "ephemeral"}}]
    return p  # kind 3: no caching at all


def independent(lines: list[dict[str, Any]], when: datetime) -> dict[str, tuple[Decimal, Decimal]]:
    """model -> (batch, real-time) USD of every exported result, priced request by request."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for line in lines:
        if line["error"] is not None:
            continue
        body = line["response"]["body"]
        model = body["model"]
        usage = extract_usage(body, provider_id="anthropic").usage
        real = Decimal(calc_price(usage, model, provider_id="anthropic",
                                  genai_request_timestamp=when).total_price)  # fmt: skip
        if MODELS[model]:
            batch = Decimal(calc_price(
                usage, model, provider_id="anthropic", genai_request_timestamp=when,
                price_context={"processing": "batch"},
            ).total_price)  # fmt: skip
        else:
            batch = real / 2  # no batch price in the data: Anthropic's 50 % off
        b, r = out.get(model, (Decimal(0), Decimal(0)))
        out[model] = (b + batch, r + real)
    return out


def test_report_prices_cache_traffic_like_an_independent_computation(
    db: str, emu: RunningEmulator
) -> None:
    items = [{"custom_id": f"a{i}", "params": params(i)} for i in range(60)]
    long = {"model": "claude-sonnet-4-5", "max_tokens": 20,
            "system": [{"type": "text", "text": PREFIX_5M, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": LONG}]}  # fmt: skip
    items.append({"custom_id": "long", "params": long})
    with Queue(db, "q", provider="anthropic") as q:
        assert q.add_many(items).added == len(items)
    drain(db, fast_settings(emu))

    lines = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    assert len(lines) == len(items) and all(ln["error"] is None for ln in lines)
    usages = [ln["response"]["body"]["usage"] for ln in lines]
    writes_5m = sum(u["cache_creation"]["ephemeral_5m_input_tokens"] for u in usages)
    writes_1h = sum(u["cache_creation"]["ephemeral_1h_input_tokens"] for u in usages)
    reads = sum(u["cache_read_input_tokens"] for u in usages)
    assert writes_5m > 0 and writes_1h > 0 and reads > 0, "the run must exercise the cache"
    long_usage = next(ln for ln in lines if ln["custom_id"] == "long")["response"]["body"]["usage"]
    assert long_usage["input_tokens"] + long_usage["cache_read_input_tokens"] > 200_000

    # the store recorded every kind of token as the provider reported it
    stored = sql(db, "SELECT SUM(cached_tokens), SUM(cache_write_5m_tokens), "
                     "SUM(cache_write_1h_tokens), SUM(input_tokens), SUM(output_tokens) FROM results")  # fmt: skip
    fresh = sum(u["input_tokens"] for u in usages)
    out = sum(u["output_tokens"] for u in usages)
    assert tuple(int(v) for v in stored[0]) == (
        reads,
        writes_5m,
        writes_1h,
        fresh + reads + writes_5m + writes_1h,
        out,
    )

    report = orjson.loads(
        cli("--db", db, "report", "--group-by", "model", "--format", "json").stdout
    )
    expected = independent(lines, datetime.now(UTC))
    got = {ln["model"]: ln for ln in report["lines"]}
    assert set(got) == set(MODELS)
    tolerance = Decimal("0.000002")  # each aggregate (two tiers for Sonnet) is kept at 1e-6 USD
    for model, (batch, real) in expected.items():
        line = got[model]
        assert line["unpriced"] == 0
        assert abs(Decimal(line["batch_usd"]) - batch) <= tolerance, (model, line, batch)
        assert abs(Decimal(line["realtime_usd"]) - real) <= tolerance, (model, line, real)
        assert line["derived"] is (not MODELS[model])
        assert Decimal(line["batch_usd"]) < Decimal(line["realtime_usd"])
    total = report["total"]
    assert total["cached_tokens"] == reads
    assert total["cache_write_5m_tokens"] == writes_5m
    assert total["cache_write_1h_tokens"] == writes_1h
    all_batch = sum(b for b, _r in expected.values())
    assert abs(Decimal(total["batch_usd"]) - all_batch) <= tolerance * len(MODELS)
    # the long request was priced in Sonnet's long-context tier, cache traffic included
    [(tier,)] = sql(db, "SELECT x.price_tier FROM results x JOIN requests r ON r.id = x.request_id "
                        "WHERE r.custom_id = 'long'")  # fmt: skip
    assert tier == 1
    table = cli("--db", db, "report", "--wide").stdout  # at 100 columns they give way
    assert "5m write" in table and "1h write" in table
