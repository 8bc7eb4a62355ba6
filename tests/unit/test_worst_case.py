"""A request's worst case counts every multiplier the provider bills (worst.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal
from functools import cache
from typing import Any

import orjson
import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from llmbatch.emulator.anthropic_synth import cache_use, count_prompt, message
from llmbatch.emulator.models import ModelCard, build, builtin_ids
from llmbatch.emulator.synth import respond
from llmbatch.pricing import Tokens, model_prices
from llmbatch.providers import format_of
from llmbatch.worst import (
    BASE,
    PER_PART,
    UNKNOWN_MAX,
    WorstCase,
    image_bound,
    worst_case,
)

CHAT, RESPONSES, MESSAGES = "/v1/chat/completions", "/v1/responses", "/v1/messages"
DAY = date(2026, 11, 26)


def _gp(model: str, provider: str, tokens: int, output: int, **cache: int) -> int:
    """An independent batch price from genai-prices itself, micro-USD rounded up."""
    total = calc_price(
        Usage(input_tokens=tokens, output_tokens=output, **cache),
        model,
        provider_id=provider,
        genai_request_timestamp=datetime(2026, 11, 26, 12, tzinfo=UTC),
        price_context={"processing": "batch"},  # type: ignore[arg-type]
    ).total_price
    return int((Decimal(total) * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


@cache
def card(door: str, model: str) -> ModelCard:
    """The emulator's card of a model (its window and largest output), as it serves it."""
    found = build(door, builtin_ids(door)).get(model)
    assert found is not None, model
    return found


def wc(
    model: str,
    endpoint: str,
    body: dict[str, Any],
    window: int | None = 128_000,
    provider: str = "openai",
    **kw: object,
) -> WorstCase:
    return worst_case(model_prices(provider, model, DAY), endpoint, body, window, **kw)  # type: ignore[arg-type]


def chat(content: object, **extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def test_text_is_bounded_by_its_bytes_and_priced_by_genai_prices() -> None:
    w = wc("gpt-4o-mini", CHAT, chat("héllo wörld", max_tokens=100))
    text = len(b"user") + len("héllo wörld".encode())
    assert w.input_tokens == BASE + text + PER_PART
    assert (w.output_tokens, w.bound) == (100, "request")
    assert w.micro == _gp("gpt-4o-mini", "openai", w.input_tokens, 100)


def test_n_and_best_of_multiply_the_output() -> None:
    one = wc("gpt-4o-mini", CHAT, chat("hi", max_tokens=100))
    eight = wc("gpt-4o-mini", CHAT, chat("hi", max_tokens=100, n=8))
    assert eight.output_tokens == 800 and eight.micro is not None and one.micro is not None
    assert eight.micro > 7 * (one.micro - _gp("gpt-4o-mini", "openai", one.input_tokens, 0))
    legacy = {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "n": 2, "best_of": 5}
    assert wc("gpt-3.5-turbo-instruct", "/v1/completions", legacy).output_tokens == 5 * 16


def test_a_prediction_is_billed_as_output() -> None:
    w = wc(
        "gpt-4o",
        CHAT,
        chat("hi", max_tokens=10, prediction={"type": "content", "content": "x" * 500}),
    )
    assert w.output_tokens == 510


@pytest.mark.parametrize(
    ("model", "detail", "most"),
    [
        ("gpt-4o", "high", 85 + 8 * 170),
        ("gpt-4o", "low", 85),
        ("gpt-4o-mini", None, 2833 + 8 * 5667),
        ("gpt-4.1-mini", "low", 2489),
        ("o4-mini", None, 2642),
        ("gpt-5", "auto", 70 + 8 * 140),
        ("some-new-model", None, 4000),
    ],
)
def test_each_image_costs_the_most_its_model_can_bill(
    model: str, detail: str | None, most: int
) -> None:
    assert image_bound("openai", model, detail) == most
    inline = "data:image/png;base64," + "A" * 40_000  # its base64 is not text
    part = {"type": "image_url", "image_url": {"url": inline, "detail": detail}}
    w = wc(model, CHAT, chat([{"type": "text", "text": "x"}, part]))
    base = wc(model, CHAT, chat([{"type": "text", "text": "x"}]))
    assert w.input_tokens - base.input_tokens == most + PER_PART  # the part's own framing
    assert (
        image_bound("anthropic", "claude-haiku-4-5", "low") == format_of("anthropic").image_tokens
    )


def test_files_and_documents_by_url_are_bounded_by_the_context_window() -> None:
    doc = {"type": "input_file", "file_url": "https://example.com/a.pdf"}
    w = wc(
        "gpt-4o",
        RESPONSES,
        {"model": "gpt-4o", "input": [{"role": "user", "content": [doc]}], "max_output_tokens": 50},
    )
    assert w.input_tokens == 128_000
    unknown = wc(
        "gpt-4o",
        RESPONSES,
        {"model": "gpt-4o", "input": [{"role": "user", "content": [doc]}]},
        window=None,
    )
    assert unknown.input_tokens == UNKNOWN_MAX and unknown.bound == "unknown maximum"
    text_doc = {"type": "document", "source": {"type": "text", "data": "short"}}
    w = wc(
        "claude-haiku-4-5",
        MESSAGES,
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [text_doc]}],
        },
        200_000,
        "anthropic",
    )
    assert w.input_tokens < 100  # a plain-text document is its text


def test_tool_definitions_count_their_json_and_the_tool_prompt() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with_tool = wc("gpt-4o", CHAT, chat("hi", tools=[tool]))
    without = wc("gpt-4o", CHAT, chat("hi"))
    assert (
        with_tool.input_tokens - without.input_tokens
        == len(orjson.dumps([tool])) + format_of("openai").tool_prompt_tokens
    )
    claude = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    t = {"name": "f", "input_schema": {"type": "object"}}
    a = wc("claude-haiku-4-5", MESSAGES, {**claude, "tools": [t]}, 200_000, "anthropic")
    b = wc("claude-haiku-4-5", MESSAGES, claude, 200_000, "anthropic")
    assert (
        a.input_tokens - b.input_tokens
        == len(orjson.dumps([t])) + format_of("anthropic").tool_prompt_tokens
    )


def test_cache_writes_are_priced_at_their_longest_ttl() -> None:
    def body(ttl: str | None) -> dict[str, object]:
        block: dict[str, object] = {"type": "text", "text": "context " * 50}
        if ttl:
            block["cache_control"] = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}
        return {
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "system": [block],
            "messages": [{"role": "user", "content": "hi"}],
        }

    plain, five, hour = (
        wc("claude-sonnet-4-5", MESSAGES, body(t), 200_000, "anthropic") for t in (None, "5m", "1h")
    )
    n, m = five.input_tokens, hour.input_tokens
    assert five.micro == _gp("claude-sonnet-4-5", "anthropic", n, 10, cache_write_tokens=n)
    assert hour.micro == _gp(
        "claude-sonnet-4-5", "anthropic", m, 10, cache_write_tokens=m, cache_write_1h_tokens=m
    )
    assert plain.micro is not None and five.micro is not None and hour.micro is not None
    assert plain.micro < five.micro < hour.micro
    top = wc(
        "claude-sonnet-4-5",
        MESSAGES,
        {**body(None), "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        200_000,
        "anthropic",
    )
    k = top.input_tokens  # automatic caching (a top-level cache_control) writes too
    assert top.micro == _gp(
        "claude-sonnet-4-5", "anthropic", k, 10, cache_write_tokens=k, cache_write_1h_tokens=k
    )


def test_previous_response_id_waits_unless_both_sides_are_bounded() -> None:
    body = {"model": "gpt-4o", "input": "and then?", "previous_response_id": "resp_1"}
    w = wc("gpt-4o", RESPONSES, body, assume_context=5000)
    assert w.hold is not None and "max_output_tokens" in w.hold and not w.allowable
    w = wc("gpt-4o", RESPONSES, {**body, "max_output_tokens": 100})
    assert w.hold is not None and "assume_context_tokens" in w.hold
    bounded = wc("gpt-4o", RESPONSES, {**body, "max_output_tokens": 100}, assume_context=5000)
    plain = wc(
        "gpt-4o", RESPONSES, {"model": "gpt-4o", "input": "and then?", "max_output_tokens": 100}
    )
    assert bounded.hold is None and bounded.input_tokens == plain.input_tokens + 5000
    assert wc("gpt-4o", RESPONSES, {**body, "conversation": "conv_1"}).hold is not None
    legacy = {"model": "gpt-3.5-turbo-instruct", "prompt": "a prompt, not a stored one"}
    assert wc("gpt-3.5-turbo-instruct", "/v1/completions", legacy).hold is None


def test_hosted_tools_wait_like_an_unpriced_model() -> None:
    w = wc(
        "gpt-4o",
        RESPONSES,
        {
            "model": "gpt-4o",
            "input": "news?",
            "max_output_tokens": 9,
            "tools": [{"type": "web_search"}],
        },
    )
    assert w.hold is not None and "web_search" in w.hold and w.allowable
    claude = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    editor = {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
    assert (
        wc("claude-haiku-4-5", MESSAGES, {**claude, "tools": [editor]}, 200_000, "anthropic").hold
        is None
    )  # a client tool
    search = {"type": "web_search_20250305", "name": "web_search"}
    assert (
        wc("claude-haiku-4-5", MESSAGES, {**claude, "tools": [search]}, 200_000, "anthropic").hold
        is not None
    )


def test_without_a_cap_the_model_maximum_or_the_window_bounds_output() -> None:
    body = chat("hi")
    assert wc("gpt-4o-mini", CHAT, body, max_output=16_384).output_tokens == 16_384
    assert wc("gpt-4o-mini", CHAT, body).output_tokens == 128_000
    w = wc("gpt-4o-mini", CHAT, body, window=None)
    assert (w.output_tokens, w.bound) == (UNKNOWN_MAX, "unknown maximum")


def test_the_tier_of_the_input_bound_is_priced() -> None:
    text = "x" * 250_000
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": text}],
    }
    w = wc("claude-sonnet-4-5", MESSAGES, body, 1_000_000, "anthropic")
    assert w.micro == _gp("claude-sonnet-4-5", "anthropic", w.input_tokens, 10)


# -- the bound holds against what the emulator bills ----------------------------------------
WORDS = st.sampled_from(["the", "batch", "{", '"a":', "1,2,3", "日本語", "naïve", "\n", "😀"])
TEXT = st.lists(WORDS, min_size=1, max_size=40).map(" ".join)


@st.composite
def openai_request(draw: st.DrawFn) -> dict[str, object]:
    model = draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini", "gpt-5"]))
    parts: list[dict[str, object]] = [{"type": "text", "text": draw(TEXT)}]
    for k in range(draw(st.integers(0, 3))):
        detail = draw(st.sampled_from([None, "low", "high", "auto"]))
        parts.append(
            {
                "type": "image_url",
                "image_url": {
                    "url": f"https://img.example/{draw(st.integers(0, 10**6))}/{k}.png",
                    **({"detail": detail} if detail else {}),
                },
            }
        )
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": parts}]}
    body["max_tokens"] = draw(st.integers(1, 4000))
    body["n"] = draw(st.integers(1, 8))
    if draw(st.booleans()):
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": draw(TEXT),
                    "parameters": {"type": "object"},
                },
            }
        ]
    return body


@settings(max_examples=150, deadline=None)
@given(body=openai_request())
def test_the_bound_holds_against_the_emulators_bill_openai(body: dict[str, object]) -> None:
    model = str(body["model"])
    mp = model_prices("openai", model, DAY)
    w = worst_case(mp, CHAT, body, 1_000_000)
    out, _usage = respond(
        "chat",
        body,
        model=model,
        created=0,
        salt="s",
        length_rate=1.0,
        card=card("openai", model),
    )
    t = format_of("openai").usage(out["usage"], CHAT).tokens()
    assert t is not None and w.micro is not None
    actual = mp.cost(t, mp.tier(t.input), batch=True)
    assert actual is not None and w.micro >= actual * 1_000_000


@st.composite
def anthropic_request(draw: st.DrawFn) -> dict[str, object]:
    blocks: list[dict[str, object]] = [{"type": "text", "text": draw(TEXT)}]
    for k in range(draw(st.integers(0, 2))):
        blocks.append(
            {
                "type": "image",
                "source": {
                    "type": "url",
                    "url": f"https://img.example/{draw(st.integers(0, 10**6))}/{k}.png",
                },
            }
        )
    ttl = draw(st.sampled_from([None, "5m", "1h"]))
    if ttl:
        blocks[-1]["cache_control"] = {
            "type": "ephemeral",
            **({"ttl": "1h"} if ttl == "1h" else {}),
        }
    body: dict[str, object] = {
        "model": draw(st.sampled_from(["claude-haiku-4-5", "claude-sonnet-4-5"])),
        "max_tokens": draw(st.integers(1, 4000)),
        "system": draw(TEXT),
        "messages": [{"role": "user", "content": blocks}],
    }
    if draw(st.booleans()):
        body["tools"] = [{"name": "f", "input_schema": {"type": "object"}}]
        body["tool_choice"] = {"type": draw(st.sampled_from(["auto", "any"]))}
    return body


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(body=anthropic_request())
def test_the_bound_holds_against_the_emulators_bill_anthropic(body: dict[str, object]) -> None:
    mp = model_prices("anthropic", str(body["model"]), DAY)
    w = worst_case(mp, MESSAGES, body, 200_000)
    prompt = count_prompt(body)
    msg = message(
        body,
        salt="s",
        cache=cache_use(prompt, lambda bp: False),
        prompt=prompt,
        service_tier="standard",
        length_rate=1.0,
        ceiling=card("anthropic", str(body["model"])).max_output_tokens,
    )
    t = format_of("anthropic").usage(msg["usage"], None).tokens()
    assert t is not None and w.micro is not None
    actual = mp.cost(t, mp.tier(t.input), batch=True)
    assert actual is not None and w.micro >= actual * 1_000_000
    assert isinstance(t, Tokens)
