"""Gemini's format: lines and items in, result lines and usage out (no HTTP)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmbatch.estimate import input_tokens, text_tokens
from llmbatch.pricing import model_prices
from llmbatch.providers import format_of
from llmbatch.requests import LineError, from_item, make_request, parse_line
from llmbatch.results import Anomaly
from llmbatch.results import parse_line as parse_result

FMT = format_of("gemini")


def request(text: str = "hi", model: str = "gemini-2.5-flash") -> dict[str, Any]:
    return {"model": model, "contents": [{"role": "user", "parts": [{"text": text}]}]}


def test_a_line_and_the_python_api_forms_make_the_same_request() -> None:
    line = parse_line(orjson.dumps({"key": "k1", "request": request()}), "gemini")
    assert (line.custom_id, line.provider, line.endpoint, line.model) == (
        "k1", "gemini", "generateContent", "gemini-2.5-flash",
    )  # fmt: skip
    full = from_item({"key": "k1", "request": request()}, "gemini")
    short = from_item({"custom_id": "k1", "body": request()}, "gemini")
    api = make_request("k1", request(model="models/gemini-2.5-flash"), provider="gemini")
    assert full == short
    assert api.model == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ({"key": 7, "request": request()}, "key must be a string, got number"),
        ({"request": request()}, "key is missing"),
        ({"key": "k", "request": "x"}, "request must be an object, got string"),
        ({"key": "k", "request": {"contents": []}}, "request.model is missing"),
        ({"key": "k", "request": {**request(), "contents": []}}, "request.contents must be"),
        ({"key": "k", "request": request(model="gemini-1.5-pro")}, "is retired"),
        ({"key": "k", "request": request(model="gemini-embedding-001")}, "not served by"),
        ({"key": "k", "request": request(model="gpt-4o-mini")}, "not a Gemini model"),
    ],
)
def test_bad_items_are_refused_with_the_reason(item: dict[str, Any], said: str) -> None:
    with pytest.raises(LineError, match=said):
        from_item(item, "gemini")


def test_a_request_over_20_mb_is_refused_through_the_python_api_too() -> None:
    with pytest.raises(LineError, match="at most 20 MB in one request"):
        make_request("big", request("a" * 21_000_000), provider="gemini")


def result(line: dict[str, Any]) -> Any:
    return parse_result(orjson.dumps(line), "s-n", "generateContent", FMT)


def test_results_are_read_by_key_with_usage_camel_case() -> None:
    body = {
        "candidates": [{"content": {"parts": [{"text": "thinking", "thought": True},
                                              {"text": "Hello"}, {"text": " there"}]}}],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20,
                          "thoughtsTokenCount": 5, "cachedContentTokenCount": 40},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1",
    }  # fmt: skip
    got = result({"key": "s-n-12", "response": body})
    assert (got.attempt_id, got.ok, got.status_code, got.provider_request_id) == (
        12,
        True,
        200,
        "r1",
    )
    assert (got.input_tokens, got.output_tokens) == (100, 25)
    assert got.usage is not None and (got.usage.cached, got.usage.reasoning) == (40, 5)
    assert got.model == "gemini-2.5-flash"
    assert FMT.output_text(body) == "Hello there"
    zero = result({"key": "s-n-13", "response": {"usageMetadata": {"promptTokenCount": 3}}})
    assert (zero.input_tokens, zero.output_tokens) == (3, 0)  # zero counts are left out
    missing = result({"key": "s-n-14", "response": {"candidates": []}})
    assert missing.usage is not None and missing.usage.flag == "missing: usageMetadata"


def test_error_lines_carry_their_status() -> None:
    got = result(
        {"key": "s-n-1", "error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    )
    assert (got.ok, got.status_code, got.error_code, got.error_message) == (
        False, 400, "INVALID_ARGUMENT", "bad",
    )  # fmt: skip
    assert FMT.status_code("INVALID_ARGUMENT") == 400 and FMT.status_code(None) == 200
    assert result({"key": "s-n-2", "error": {"status": "UNAVAILABLE"}}).status_code == 503
    with pytest.raises(Anomaly):
        result({"key": "s-n-3"})
    with pytest.raises(Anomaly):
        result({"custom_id": "s-n-4", "response": {}})  # a line keyed as OpenAI's


def test_the_estimate_scales_o200k_by_the_stated_factor() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    body = request(text)
    assert input_tokens("generateContent", "gemini-2.5-flash", body, "gemini") == round(
        text_tokens(text) * 1.15
    )
    assert FMT.estimate_note is not None and "1.15" in FMT.estimate_note


def test_prices_come_from_google_batch_prices_or_are_derived() -> None:
    flash = model_prices("gemini", "gemini-2.5-flash")
    assert flash.priced and not flash.derived
    older = model_prices("gemini", "gemini-2.0-flash")
    assert older.priced and older.derived  # no batch price in the data: half the real-time


def test_the_worst_case_bounds_gemini_output_and_files_of_unknown_size() -> None:
    from llmbatch.worst import worst_case

    prices = model_prices("gemini", "gemini-2.0-flash")
    capped = {**request(), "generationConfig": {"maxOutputTokens": 50, "candidateCount": 2}}
    capped["model"] = "gemini-2.0-flash"
    got = worst_case(prices, "generateContent", capped, 1_048_576, max_output=8192)
    assert (got.output_tokens, got.bound) == (100, "request")  # two candidates of 50
    thinking = {**request(), "generationConfig": {"maxOutputTokens": 50}}
    flash = model_prices("gemini", "gemini-2.5-flash")
    got = worst_case(flash, "generateContent", thinking, 1_048_576, max_output=65_536)
    assert got.output_tokens == 65_536  # thinking may run past the cap: the model's largest
    off = {
        **thinking,
        "generationConfig": {"maxOutputTokens": 50, "thinkingConfig": {"thinkingBudget": 0}},
    }
    assert (
        worst_case(flash, "generateContent", off, 1_048_576, max_output=65_536).output_tokens == 50
    )
    video = request()
    video["contents"][0]["parts"].append({"fileData": {"fileUri": "https://x/v.mp4"}})
    got = worst_case(flash, "generateContent", video, 1_048_576, max_output=65_536)
    assert got.input_tokens == 1_048_576  # a file of unknown size: the whole window
