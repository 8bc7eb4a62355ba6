"""The engine with Gemini batch mode: the real emulator over real HTTP, the official SDK.

Requests enqueued as `{"key", "request"}` lines (or the Python API's items) travel inline
when the batch is small and in an uploaded file when it is not; their results, read by key
whatever order they come in, are given in the one results envelope with the native body and
`"provider": "gemini"`; usage is priced through genai-prices at Google's batch prices.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from genai_prices import calc_price, extract_usage

from helpers import cli, drain, fast_settings, results_per_request, sql
from helpers import request_states as states
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store

# model -> whether the price data has a batch price for it (known here, not asked of llmbatch)
MODELS = {"gemini-2.5-flash": True, "gemini-2.0-flash": False}


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=21) as e:
        e.control.set_config(gemini_shuffle_results=True)
        yield e


def line(i: int, model: str = "gemini-2.5-flash", words: int | None = None) -> dict[str, Any]:
    text = f"request number {i}: " + "why " * (i if words is None else words)
    return {
        "key": f"gem {i}/ü",  # any string: the provider only sees attempt ids
        "request": {
            "model": model,
            "contents": [{"role": "user", "parts": [{"text": text}]}],
            "generationConfig": {"maxOutputTokens": 30},
        },
    }


def settings(emu: RunningEmulator, inline_max_bytes: int = 1 << 20, **overrides: Any) -> Any:
    s = fast_settings(emu, **overrides)
    s.providers["gemini"] = {**s.providers["gemini"], "inline_max_bytes": inline_max_bytes}
    return s


def results(db: str) -> dict[str, dict[str, Any]]:
    out = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    return {r["custom_id"]: r for r in out}


@pytest.mark.parametrize("inline_max_bytes", [1 << 20, 0], ids=["inline", "file"])
def test_a_gemini_queue_drains_with_native_bodies_each_on_its_own_request(
    db: str, emu: RunningEmulator, inline_max_bytes: int
) -> None:
    items = [line(i) for i in range(40)]
    with Queue(db, "q", provider="gemini") as q:
        assert q.add_many(items).added == 40
    drain(db, settings(emu, inline_max_bytes))
    assert states(db) == {"succeeded": 40}
    assert results_per_request(db) == {it["key"]: 1 for it in items}
    out = results(db)
    prompts = {}
    for i in range(40):
        row = out[f"gem {i}/ü"]
        assert row["provider"] == "gemini" and row["error"] is None
        assert row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert body["candidates"][0]["content"]["parts"][0]["text"]
        prompts[i] = body["usageMetadata"]["promptTokenCount"]
    # each answer is its own request's: the prompt grows with i, whatever order lines came in
    assert [prompts[i] for i in range(40)] == sorted(prompts.values())
    assert len(set(prompts.values())) == 40
    creates = [c for c in emu.control.calls() if c["path"].endswith(":batchGenerateContent")]
    uploads = [c for c in emu.control.calls() if c["path"] == "/upload/v1beta/files"]
    assert len(creates) == 1 and len(uploads) == (0 if inline_max_bytes else 2)  # start, data
    assert [c for c in emu.control.calls() if c["method"] == "DELETE"]  # cleaned up
    shown = orjson.loads(cli("--db", db, "show", "gem 3/ü", "--format", "json").stdout)
    assert [r["custom_id"] for r in shown] == ["gem 3/ü"]


def test_a_request_gemini_refuses_fails_alone_with_its_status(
    db: str, emu: RunningEmulator
) -> None:
    bad = line(99)
    bad["request"]["contents"] = [{"role": "user", "parts": "not a list"}]
    items = [line(i) for i in range(4)] + [bad]
    with Queue(db, "q", provider="gemini") as q:
        q.add_many(items)
    drain(db, settings(emu, retry=RetryPolicy(max_attempts=2, base_seconds=0.01)))
    assert states(db) == {"succeeded": 4, "failed": 1}
    row = results(db)["gem 99/ü"]
    assert row["response"]["status_code"] == 400
    assert row["error"]["code"] == "INVALID_ARGUMENT"
    assert "not retryable" in row["error"]["message"]


def test_a_mixed_openai_and_gemini_queue_drains(db: str, emu: RunningEmulator) -> None:
    chat = [
        {
            "custom_id": f"gpt {i}",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(3)
    ]
    with Queue(db, "q") as q:
        q.add_many(chat)
        q.add_many([line(i) for i in range(3)], provider="gemini")
        q.add("short form", line(7)["request"], provider="gemini")
    drain(db, settings(emu))
    assert states(db) == {"succeeded": 7}
    providers = sorted(r.get("provider", "openai") for r in results(db).values())
    assert providers == ["gemini"] * 4 + ["openai"] * 3


def test_two_models_go_in_two_batches_and_cost_like_genai_prices_says(
    db: str, emu: RunningEmulator
) -> None:
    items = [line(i, model=list(MODELS)[i % 2], words=i % 17) for i in range(30)]
    with Queue(db, "q", provider="gemini") as q:
        q.add_many(items)
    drain(db, settings(emu))
    creates = {c["path"] for c in emu.control.calls() if c["path"].endswith("Content")}
    assert creates == {f"/v1beta/models/{m}:batchGenerateContent" for m in MODELS}
    when = datetime.now(UTC)
    expected: dict[str, tuple[Decimal, Decimal]] = {}
    for key, row in results(db).items():
        body = row["response"]["body"]
        model = items[int(key.split()[1].split("/")[0])]["request"]["model"]
        usage = extract_usage(body, provider_id="google").usage
        real = Decimal(
            calc_price(usage, model, provider_id="google", genai_request_timestamp=when).total_price
        )
        batch = (
            Decimal(
                calc_price(
                    usage, model, provider_id="google", genai_request_timestamp=when,
                    price_context={"processing": "batch"},
                ).total_price
            )
            if MODELS[model]
            else real / 2
        )  # fmt: skip
        b, r = expected.get(model, (Decimal(0), Decimal(0)))
        expected[model] = (b + batch, r + real)
    report = orjson.loads(
        cli("--db", db, "report", "--group-by", "model", "--format", "json").stdout
    )
    got = {ln["model"]: ln for ln in report["lines"]}
    assert set(got) == set(MODELS)
    for model, (batch, real) in expected.items():
        assert got[model]["unpriced"] == 0
        assert abs(Decimal(got[model]["batch_usd"]) - batch) <= Decimal("0.000002")
        assert abs(Decimal(got[model]["realtime_usd"]) - real) <= Decimal("0.000002")
        assert got[model]["derived"] is (not MODELS[model])


def test_cancel_by_key_before_it_is_sent(db: str, emu: RunningEmulator) -> None:
    with Queue(db, "q", provider="gemini") as q:
        q.add_many([line(i) for i in range(3)])
    result = cli("--db", db, "cancel", "gem 1/ü")
    assert result.exit_code == 0, result.output
    drain(db, settings(emu))
    assert states(db) == {"succeeded": 2, "cancelled": 1}


def test_estimate_approximates_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line(i)) + b"\n" for i in range(5)))
    result = cli("estimate", str(path), "--provider", "gemini")
    assert result.exit_code == 0, result.output
    assert "approximated" in result.output and "1.15" in result.output
    assert "gemini-2.5-flash" in result.output


def test_an_upload_that_expired_before_its_create_is_uploaded_again(
    db: str, emu: RunningEmulator
) -> None:
    """The upload is recorded, the create refused; the worker comes back 49 hours later
    (uploads are kept 48): the file is written again, uploaded again and created once."""
    with Queue(db, "q", provider="gemini") as q:
        q.add_many([line(i) for i in range(5)])
    s = settings(emu, inline_max_bytes=0)
    emu.control.add_fault("batches.create", "500", mode="before", count=1, flavor="gemini")
    engine = Engine(open_store(db), s)
    try:
        engine.tick(time.time())
    finally:
        engine.close()
        engine.store.close()
    assert sql(db, "SELECT input_file_id IS NOT NULL FROM batches") == [(1,)]
    emu.control.advance(49 * 3600)
    drain(db, s)
    assert states(db) == {"succeeded": 5}
    log = [c["path"] for c in emu.control.calls() if c["method"] == "POST"]
    assert log.count("/upload/v1beta/files") == 4  # two uploads: start and data each
    assert sum(p.endswith(":batchGenerateContent") for p in log) == 2  # one refused
