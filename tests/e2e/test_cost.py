"""Reported costs against an independent computation from the exported results.

The independent side reads only what `llmbatch results` exports (the providers' own usage
objects), prices every request on its own with genai-prices directly, and does not import
llmbatch.pricing (nor the report's aggregation). LLMBATCH_COST_N sets the run's size
(the issue's figure: 100,000; CI default: 3,000).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from genai_prices import Usage, calc_price

from llmbatch import EngineSettings, Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.export import jsonl_line
from llmbatch.report import build, render, totals
from llmbatch.store import open_store

KEY_ENV = "LLMBATCH_E2E_KEY"
N = int(os.environ.get("LLMBATCH_COST_N", "3000"))
# model -> (endpoint, whether the price data has a batch price: known here, not asked of us)
MODELS = {
    "gpt-4o-mini": ("/v1/chat/completions", True),
    "gpt-5-mini": ("/v1/chat/completions", True),  # reasoning tokens inside the output
    "text-embedding-3-small": ("/v1/embeddings", False),  # OpenAI's 50 % applies
}


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=11) as e:
        yield e


def items(n: int) -> Iterator[dict[str, Any]]:
    names = list(MODELS)
    for i in range(n):
        model = names[i % len(names)]
        endpoint, _ = MODELS[model]
        text = " ".join(f"word{j}" for j in range(i % 37 + 1))
        if endpoint == "/v1/embeddings":
            body: dict[str, Any] = {"model": model, "input": text}
        else:
            body = {"model": model, "messages": [{"role": "user", "content": text}],
                    "max_completion_tokens": 50 + i % 200}  # fmt: skip
        yield {"custom_id": f"c{i}", "url": endpoint, "body": body}


def independent(lines: list[bytes], when: datetime) -> tuple[Decimal, Decimal]:
    """(batch, real-time) USD of every exported result, priced request by request."""
    batch = real = Decimal(0)
    for raw in lines:
        line = orjson.loads(raw)
        if line.get("response") is None:
            continue
        body = line["response"]["body"]
        # A reply names the dated snapshot its alias ran as (gpt-4o-mini-2024-07-18): price
        # the model that was asked for, as the request named it.
        model = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", body["model"])
        u = body["usage"]
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        usage = Usage(input_tokens=u["prompt_tokens"], output_tokens=u.get("completion_tokens", 0))
        if cached:
            usage.cache_read_tokens = cached
        r = Decimal(
            calc_price(usage, model, provider_id="openai", genai_request_timestamp=when).total_price
        )
        if MODELS[model][1]:
            b = Decimal(
                calc_price(
                    usage, model, provider_id="openai", genai_request_timestamp=when,
                    price_context={"processing": "batch"},
                ).total_price
            )  # fmt: skip
        else:
            b = r / 2
        real += r
        batch += b
    return batch, real


@pytest.mark.slow
def test_reported_costs_equal_an_independent_computation(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    db = str(tmp_path / "q.db")
    with Queue(db, "q") as q:
        assert q.add_many(list(items(N))).added == N
    settings = EngineSettings(
        poll_interval=0.05, max_poll_interval=0.2, settle_seconds=0.5, backoff_seconds=0.1,
        max_batch_requests=max(500, N // 10),
        providers={"openai": {"base_url": emu.base_url, "api_key_env": KEY_ENV}},
    )  # fmt: skip
    store = open_store(db)
    engine = Engine(store, settings)
    deadline = time.monotonic() + 60 + N / 500
    try:
        while store.unfinished_count():
            engine.tick(time.time())
            assert time.monotonic() < deadline, "run did not finish"
            time.sleep(0.02)
    finally:
        engine.close()
    exported = [jsonl_line(r, store.store_id) for r in store.iter_results()]
    assert len(exported) == N
    lines = build(store)
    # the running totals (whole days) and the sum over every result (from 1 s past midnight)
    raw = build(store, since=datetime.fromtimestamp(1, UTC))
    assert [ln.record() for ln in raw] == [ln.record() for ln in lines]
    store.close()
    total = totals(lines)
    assert total.requests == N and total.unpriced == 0
    expected_batch, expected_real = independent(exported, datetime.now(UTC))
    assert expected_batch > 0 and expected_real > expected_batch
    assert abs(total.batch_usd - expected_batch) <= Decimal("0.000001"), (
        total.batch_usd,
        expected_batch,
    )
    assert abs(total.realtime_usd - expected_real) <= Decimal("0.000001"), (
        total.realtime_usd,
        expected_real,
    )
    derived = {ln.model for ln in build(open_store(db), group_by=("model",)) if ln.derived}
    assert derived == {"text-embedding-3-small"}
    # reasoning is stored apart and was not added to the output a second time
    assert "gpt-5-mini" in render(lines, "csv")


def test_report_of_an_empty_period_is_empty_not_a_crash(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    store = open_store(db)
    lines = build(
        store, since=datetime(2020, 1, 1, tzinfo=UTC), until=datetime(2020, 2, 1, tzinfo=UTC)
    )
    assert lines == []
    assert "nothing was spent" in render(lines)
    assert orjson.loads(render(lines, "json"))["lines"] == []
    assert render(lines, "csv").startswith("date,queue,model")
    store.close()


def test_report_command_formats_and_bad_dates(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from llmbatch.cli import main

    db = str(tmp_path / "c.db")
    open_store(db).close()
    runner = CliRunner()
    ok = runner.invoke(main, ["--db", db, "report", "--group-by", "day", "--format", "json"])
    assert ok.exit_code == 0, ok.output
    assert orjson.loads(ok.output)["total"]["batch_usd"] == "0"
    bad = runner.invoke(main, ["--db", db, "report", "--since", "last tuesday"])
    assert bad.exit_code != 0
    assert "'last tuesday' is not a date" in bad.output
