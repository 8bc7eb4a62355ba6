"""`llmbatch estimate`: tokenizer parity with tiktoken, caps and worst cases, costs, the CLI."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import cli
from llmbatch.errors import InputError
from llmbatch.estimate import (
    EXPECTED_OUTPUT,
    encoding_name,
    estimate_file,
    estimate_requests,
    from_sizes,
    input_tokens,
    model_max_output,
    text_tokens,
)
from llmbatch.pricing import Tokens, model_prices

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "benchmarks" / "data" / "estimate_set.jsonl"
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_estimate  # noqa: E402

SAMPLES = [
    "Hello, world! It's 2026-11-26.",
    "这家餐厅的服务非常好，菜品也很新鲜。今日は天気が良いので、公園で散歩をしました。",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "   leading spaces\n\n\ttabs\r\nand CRLF   ",
    "naïve café — emoji 🚀🎉 and math ∑x² ≤ ∞",
    '{"type":"object","properties":{"score":{"type":"number"}}}',
    "A" * 5000,
]


def chat(text: str = "hi", model: str = "gpt-4o-mini", **extra: object) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": f"c{abs(hash((text, model, str(extra))))}", "method": "POST",
            "url": "/v1/chat/completions", "body": body}  # fmt: skip


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_the_shipped_vocabularies_are_byte_identical_to_openais(name: str) -> None:
    assert bench_estimate.vocabulary_sha256(name) == bench_estimate.OPENAI_HASHES[name]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_token_ids_equal_tiktokens_on_a_sample(name: str) -> None:
    import bpe_openai

    ref = bench_estimate.tiktoken_encoding(name)
    ours = bpe_openai.get_encoding(name)
    lines = SHIPPED.read_bytes().splitlines()[:200]
    for text in [*SAMPLES, *(raw.decode() for raw in lines)]:
        assert ours.encode_ordinary(text) == ref.encode_ordinary(text), text[:60]
        assert text_tokens(text, name) == len(ref.encode_ordinary(text))


def test_the_shipped_set_is_varied_and_large_enough() -> None:
    reqs = bench_estimate.load(SHIPPED)
    assert len(reqs) >= 1000
    texts = SHIPPED.read_text()
    assert "这家" in texts and "def fib" in texts and '"tools"' in texts
    assert '"json_schema"' in texts and '"instructions"' in texts
    assert {p for p, *_ in reqs} == {"openai", "anthropic"}
    assert {e for _, e, *_ in reqs} >= {"/v1/chat/completions", "/v1/responses", "/v1/embeddings"}


def test_openai_input_tokens_within_5_percent_of_tiktoken_on_the_shipped_set() -> None:
    encs = {n: bench_estimate.tiktoken_encoding(n) for n in bench_estimate.OPENAI_HASHES}
    ref = bench_estimate.openai_reference(lambda m: encs[encoding_name(m)])
    err = bench_estimate.errors(bench_estimate.load(SHIPPED), "openai", ref)
    assert abs(err["aggregate_error_pct"]) < 5
    assert err["mean_abs_error_pct"] < 5


def test_anthropic_error_against_the_emulator_rule_is_measured() -> None:
    err = bench_estimate.errors(
        bench_estimate.load(SHIPPED), "anthropic", bench_estimate.emulator_rule
    )
    assert err["requests"] == 600 and err["reference_tokens"] > 0


CLAUDE = pytest.mark.skipif(
    not bench_estimate.os.environ.get("LLMBATCH_CLAUDE_TOKENIZER"),
    reason="set LLMBATCH_CLAUDE_TOKENIZER to the anthropic SDK 0.38 tokenizer.json",
)


@CLAUDE
def test_anthropic_calibration_within_5_percent_of_the_published_claude_tokenizer() -> None:
    path = bench_estimate.os.environ["LLMBATCH_CLAUDE_TOKENIZER"]
    ref = bench_estimate.claude_reference(path)
    err = bench_estimate.errors(bench_estimate.load(SHIPPED), "anthropic", ref)
    assert abs(err["aggregate_error_pct"]) < 5


def test_chat_framing_follows_openais_rule() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}
    # 3 to prime the reply, 3 a message, 1 for "user", 2 for "hello world"
    assert input_tokens("/v1/chat/completions", "gpt-4o", body) == 3 + 3 + 1 + 2
    named = {**body, "messages": [{"role": "user", "content": "hello world", "name": "bob"}]}
    assert input_tokens("/v1/chat/completions", "gpt-4o", named) == 9 + 1 + 1


def test_old_models_use_cl100k() -> None:
    assert encoding_name("gpt-4-0613") == "cl100k_base"
    assert encoding_name("text-embedding-3-small") == "cl100k_base"
    assert encoding_name("gpt-4o-mini") == "o200k_base"
    assert encoding_name("gpt-5-mini") == "o200k_base"


def test_claude_cjk_costs_more_tokens_than_its_o200k_count() -> None:
    cjk = "这家餐厅的服务非常好，菜品也很新鲜，但是价格有点贵。" * 10
    en = "The shipment arrived two days late and the box was crushed. " * 10

    def anth(text: str) -> int:
        return input_tokens(
            "/v1/messages", "claude-haiku-4-5", {"messages": [{"role": "user", "content": text}]}
        )

    assert anth(cjk) - 10 > text_tokens(cjk) * 1.3
    assert abs((anth(en) - 10) - text_tokens(en)) <= 1


def test_caps_bound_the_worst_case_and_missing_caps_use_the_models_maximum() -> None:
    reqs = [
        chat("a", max_tokens=100),
        chat("b", max_completion_tokens=2000),
        chat("c"),
        {"custom_id": "r", "method": "POST", "url": "/v1/responses",
         "body": {"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 50}},
    ]  # fmt: skip
    est = estimate_requests(reqs)
    (m,) = est.models
    assert m.requests == 4
    assert m.max_output_tokens == 100 + 2000 + model_max_output("gpt-4o-mini") + 50  # type: ignore[operator]
    assert m.expected_output_tokens == 100 + EXPECTED_OUTPUT + EXPECTED_OUTPUT + 50
    assert m.without_cap == 1 and m.unbounded == 0


def test_costs_equal_an_independent_computation_per_tier() -> None:
    big = "word " * 300_000  # above gpt-5.4's 272k tier start
    claude = {"custom_id": "a", "params": {"model": "claude-sonnet-4-5", "max_tokens": 10,
              "messages": [{"role": "user", "content": "hello"}]}}  # fmt: skip
    reqs = [claude, chat("x " * 50, "gpt-5.4", max_tokens=7), chat(big, "gpt-5.4", max_tokens=7)]
    est = estimate_requests(reqs, expected_output=5)
    assert {m.model for m in est.models} == {"claude-sonnet-4-5", "gpt-5.4"}
    for m in est.models:
        mp = model_prices(m.provider, m.model)
        want_batch = want_real = Decimal(0)
        for r in reqs:
            endpoint = str(r.get("url", "/v1/messages"))
            body = r.get("body", r.get("params"))
            assert isinstance(body, dict)
            if body["model"] != m.model:
                continue
            n = input_tokens(endpoint, m.model, body)
            t = Tokens(input=n, output=body["max_tokens"])
            want_batch += mp.cost(t, mp.tier(n), batch=True) or 0
            want_real += mp.cost(t, mp.tier(n), batch=False) or 0
        assert m.batch_worst_usd == want_batch > 0
        assert m.realtime_worst_usd == want_real
        assert m.batch_worst_usd < want_real
    gpt = next(m for m in est.models if m.model == "gpt-5.4")
    assert model_prices("openai", "gpt-5.4").thresholds, "gpt-5.4 should be tiered"
    flat = model_prices("openai", "gpt-5.4").cost(
        Tokens(input=gpt.input_tokens, output=14), 0, batch=True
    )
    assert gpt.batch_worst_usd != flat  # tiers priced apart, not one aggregate


def test_unknown_model_is_unpriced_never_zero() -> None:
    est = estimate_requests([chat("hi", "my-finetune-unknown", max_tokens=5)])
    (m,) = est.models
    assert m.batch_expected_usd is None and m.realtime_worst_usd is None
    assert est.unpriced == ["my-finetune-unknown"]
    assert "unpriced" in est.summary()


def test_unknown_model_without_cap_is_counted_unbounded() -> None:
    est = estimate_requests([chat("hi", "my-finetune-unknown")])
    assert est.models[0].unbounded == 1 and est.models[0].max_output_tokens == 0


def test_embeddings_have_no_output_and_moderations_are_free() -> None:
    emb = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
           "body": {"model": "text-embedding-3-small", "input": ["hello world", "bye"]}}  # fmt: skip
    mod = {"custom_id": "m", "method": "POST", "url": "/v1/moderations",
           "body": {"model": "omni-moderation-latest", "input": "hello"}}  # fmt: skip
    est = estimate_requests([emb, mod])
    by = {m.model: m for m in est.models}
    assert by["text-embedding-3-small"].input_tokens == 3
    assert by["text-embedding-3-small"].max_output_tokens == 0
    assert by["omni-moderation-latest"].batch_worst_usd == 0


def test_a_bad_line_names_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_bytes(
        orjson.dumps(chat()) + b"\n{not json\n" + orjson.dumps({"custom_id": "x"}) + b"\n"
    )
    with pytest.raises(InputError) as exc:
        estimate_file(f)
    assert f"{f}:2:" in str(exc.value) and f"{f}:3:" in str(exc.value)


def test_cli_estimate_on_the_shipped_set() -> None:
    r = cli("estimate", str(SHIPPED))
    assert r.exit_code == 0, r.output
    assert "claude-sonnet-4-5" in r.output and "gpt-4o-mini" in r.output
    assert "set no max_tokens" in r.output
    assert "estimate: 1,200 requests" in r.output
    j = cli("estimate", str(SHIPPED), "--format", "json")
    data = orjson.loads(j.output)
    assert sum(m["requests"] for m in data["models"]) == 1200
    assert Decimal(data["total"]["batch_worst_usd"]) > Decimal(data["total"]["batch_expected_usd"])


def test_the_cheap_summary_after_enqueue_leans_high(tmp_path: Path) -> None:
    lines = [
        orjson.dumps(chat(f"review number {i}: the box was late", max_tokens=64)) for i in range(50)
    ]
    f = tmp_path / "reviews.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    r = cli("--db", str(tmp_path / "q.db"), "enqueue", str(f))
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 1
    summary = r.stderr.splitlines()[-1]
    assert summary.startswith("estimate: 50 requests") and "from sizes" in summary
    counted = estimate_file(f)
    cheap = from_sizes(
        str(f),
        {
            ("openai", "/v1/chat/completions", "gpt-4o-mini"): [
                50,
                sum(len(orjson.loads(x)["body"]["messages"][0]["content"]) + 4 for x in lines),
                64 * 50,
                0,
                60,
            ]
        },
    )
    assert cheap.models[0].max_output_tokens == counted.models[0].max_output_tokens == 3200
    assert cheap.models[0].input_tokens >= counted.models[0].input_tokens
