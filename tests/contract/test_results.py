"""What every provider's results become (issue 15): a queue run by the engine against the
emulator, then `llmbatch results` read back against the provider's own result lines.

Each exported line must carry the provider's own answer — its body unchanged under the
user's custom id, an error with its code — and the CSV's `output_text` the text of that
answer, on every registered provider (folded from tests/e2e/test_anthropic_output.py, which
did this for Anthropic alone). The priced cache traffic of tests/e2e/test_anthropic_cost.py
runs here too, on the providers that price cache writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from genai_prices import calc_price, extract_usage
from test_ownership import DOORS

from helpers import E2E_KEY_ENV, cli, drain, fast_settings, provider_params, sent_ids, sql
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.providers import available, format_of, make_provider
from llmbatch.providers.base import read_lines
from llmbatch.providers.compatible import SHIPPED

KEYS = {"id", "custom_id", "provider", "response", "error"}


@pytest.fixture(params=provider_params(sorted(available())))
def name(request: pytest.FixtureRequest) -> str:
    if request.param not in DOORS:
        pytest.fail(f"provider {request.param!r} has no door in the ownership contract suite")
    return str(request.param)


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=21) as e:
        yield e


def failing(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """An item llmbatch accepts that the provider answers with an error when it runs."""
    if name == "gemini":
        item["request"]["contents"] = [{"role": "user", "parts": "not a list"}]
    elif name == "anthropic":
        item["params"]["messages"] = []  # invalid_request_error
    else:
        item["body"]["messages"] = "not a list"
    return item


def native(name: str, line: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(the attempt id it was sent under, the answer's body or None for an error) from one
    of the provider's own result lines."""
    if name == "gemini":
        return line["key"], line.get("response")
    if name == "anthropic":
        result = line["result"]
        return line["custom_id"], result.get("message") if result["type"] == "succeeded" else None
    response = line.get("response") or {}
    ok = response.get("status_code") == 200
    return line["custom_id"], response.get("body") if ok else None


def provider_lines(db: str, name: str, emu: RunningEmulator, folder: Path) -> dict[str, Any]:
    """The user's custom id -> the provider's own answer body (None: an error), read from
    every batch of the run through the provider's transport (kept: delete_files=False)."""
    provider = make_provider(name, **fast_settings(emu).providers[name])
    sent = sent_ids(db)
    owner = {
        sent[int(a)]: str(c)
        for a, c in sql(
            db, "SELECT a.id, r.custom_id FROM attempts a JOIN requests r ON r.id = a.request_id"
        )
        if int(a) in sent
    }
    out: dict[str, Any] = {}
    batches = [str(b) for (b,) in sql(db, "SELECT provider_batch_id FROM batches")]
    for status in provider.poll(batches, len(batches)):
        for _kind, raw in read_lines(provider.download(status, folder)):
            attempt, body = native(name, orjson.loads(raw))
            out[owner[attempt]] = body
    return out


def test_exported_results_are_the_providers_own_answers(
    name: str, db: str, emu: RunningEmulator, tmp_path: Path
) -> None:
    least = SHIPPED[name].min_requests if name in SHIPPED else 1  # Cerebras: 10
    items = DOORS[name].items(name, max(8, least), "r ü/")
    items[-1] = failing(name, items[-1])
    with Queue(db, "q", provider=name) as q:
        assert q.add_many(items).added == len(items)
    drain(db, fast_settings(emu, delete_files=False))
    answers = provider_lines(db, name, emu, tmp_path)
    assert len(answers) == len(items)

    lines = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    assert len(lines) == len(items) and all(set(ln) == KEYS for ln in lines)
    assert len({ln["id"] for ln in lines}) == len(items)
    by_id = {ln["custom_id"]: ln for ln in lines}
    for custom_id, body in answers.items():
        line = by_id[custom_id]
        assert line["provider"] == name
        if body is not None:
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert line["response"]["body"] == body
        else:
            assert line["error"]["code"] and line["error"]["message"]
            status = line["response"]["status_code"] if line["response"] else None
            assert status is None or 400 <= status < 500
    failed = str(items[-1].get("custom_id", items[-1].get("key")))
    assert answers[failed] is None and by_id[failed]["error"] is not None

    rows = list(csv.DictReader(io.StringIO(cli("--db", db, "results", "--format", "csv").stdout)))
    text = {r["custom_id"]: r["output_text"] for r in rows}
    fmt = format_of(name)
    for custom_id, body in answers.items():
        want = fmt.output_text(body) if body is not None else ""
        assert text[custom_id] == want and (want or body is None)


# -- cache traffic at batch prices ------------------------------------------------------------
# The providers whose usage counts cache writes apart (5-minute and 1-hour) and prices them.
CACHE_WRITES = {"anthropic"}

# model -> whether the price data has a batch price for it (known here, not asked of llmbatch)
MODELS = {"claude-haiku-4-5": True, "claude-3-5-haiku-latest": False, "claude-sonnet-4-5": True}
PREFIX_5M = "Answer as a careful reviewer of batch systems. " * 300
PREFIX_1H = "You grade essays on a scale of one to ten and say why. " * 250
TOOLS = [{"name": f"tool_{i}", "description": "look things up " * 80,
          "input_schema": {"type": "object", "properties": {}}} for i in range(3)]  # fmt: skip
LONG = "long context " * 101_000  # past 200k tokens under the emulator's rule: tier 1


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


def independent(
    lines: list[dict[str, Any]], when: datetime, price_key: str
) -> dict[str, tuple[Decimal, Decimal]]:
    """model -> (batch, real-time) USD of every exported result, priced request by request."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for line in lines:
        if line["error"] is not None:
            continue
        body = line["response"]["body"]
        model = body["model"]
        usage = extract_usage(body, provider_id=price_key).usage
        real = Decimal(calc_price(usage, model, provider_id=price_key,
                                  genai_request_timestamp=when).total_price)  # fmt: skip
        if MODELS[model]:
            batch = Decimal(calc_price(
                usage, model, provider_id=price_key, genai_request_timestamp=when,
                price_context={"processing": "batch"},
            ).total_price)  # fmt: skip
        else:
            batch = real / 2  # no batch price in the data: Anthropic's 50 % off
        b, r = out.get(model, (Decimal(0), Decimal(0)))
        out[model] = (b + batch, r + real)
    return out


def test_report_prices_cache_traffic_like_an_independent_computation(
    name: str, db: str, emu: RunningEmulator
) -> None:
    """A queue whose requests write and read the provider's prompt cache (5-minute and 1-hour
    writes, system prompts and tools, several models, one request past Sonnet's 200k-token
    tier): `llmbatch report` must equal an independent computation that reads only the
    exported results, turns each usage into genai-prices usage with genai-prices' own
    extractor, and prices every request on its own, without llmbatch.pricing or
    llmbatch.usage. (Folded from tests/e2e/test_anthropic_cost.py.)"""
    if name not in CACHE_WRITES:
        pytest.skip(
            f"{name}: no cache writes priced apart (its costs: test_engine_kinds.py's cost "
            "contract, tests/e2e/test_cost.py)"
        )
    items = [{"custom_id": f"a{i}", "params": params(i)} for i in range(60)]
    long = {"model": "claude-sonnet-4-5", "max_tokens": 20,
            "system": [{"type": "text", "text": PREFIX_5M, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": LONG}]}  # fmt: skip
    items.append({"custom_id": "long", "params": long})
    with Queue(db, "q", provider=name) as q:
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
    expected = independent(lines, datetime.now(UTC), format_of(name).price_key)
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
