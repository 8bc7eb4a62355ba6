"""Usage per result with each endpoint's and provider's own fields; bad usage is flagged."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.pricing import Tokens
from llmbatch.providers import format_of
from llmbatch.results import parse_line
from llmbatch.usage import UsageRecord


def read_usage(
    usage: object, *, provider: str = "openai", endpoint: str | None = None
) -> UsageRecord:
    """A result's usage as its provider's format reads it (the engine asks the format)."""
    return format_of(provider).usage(usage, endpoint)


def test_chat_cached_and_reasoning_are_inside_the_totals() -> None:
    u = read_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
        endpoint="/v1/chat/completions",
    )
    assert u == UsageRecord(100, 40, cached=64, reasoning=30)
    assert u.tokens() == Tokens(input=100, cached=64, output=40)  # reasoning not added again


def test_responses_fields() -> None:
    u = read_usage(
        {
            "input_tokens": 10,
            "output_tokens": 7,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens_details": {"reasoning_tokens": 5},
        },
        endpoint="/v1/responses",
    )
    assert u == UsageRecord(10, 7, cached=2, reasoning=5)


def test_embeddings_are_input_only_and_moderations_free() -> None:
    u = read_usage({"prompt_tokens": 9, "total_tokens": 9}, endpoint="/v1/embeddings")
    assert u == UsageRecord(9, 0)
    assert read_usage(None, endpoint="/v1/moderations") == UsageRecord(0, 0)


def test_anthropic_cache_reads_and_writes_split_by_ttl() -> None:
    u = read_usage(
        {
            "input_tokens": 50,
            "output_tokens": 20,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        },
        provider="anthropic",
    )
    assert u == UsageRecord(1350, 20, cached=1000, write_5m=100, write_1h=200)
    plain = read_usage(
        {"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 7},
        provider="anthropic",
    )
    assert plain == UsageRecord(12, 1, write_5m=7)


@pytest.mark.parametrize(
    ("usage", "flag"),
    [
        (None, "missing: usage"),
        ({"completion_tokens": 3}, "missing: output_tokens"),  # responses-shaped guess
        ({"prompt_tokens": 3}, "missing: completion_tokens"),
        ({"prompt_tokens": -1, "completion_tokens": 3}, "negative: prompt_tokens=-1"),
        ({"prompt_tokens": 3, "completion_tokens": "x"}, "not a count: completion_tokens='x'"),
        (
            {"input_tokens": 3, "output_tokens": 1, "input_tokens_details": {"cached_tokens": 9}},
            "inconsistent",
        ),
    ],
)
def test_bad_usage_is_flagged_never_zero(usage: Any, flag: str) -> None:
    u = read_usage(usage, endpoint="/v1/chat/completions")
    assert u.flag is not None and u.flag.startswith(flag.split(":")[0])
    if flag != "missing: output_tokens":
        assert u.flag.startswith(flag)
    assert u.input is None and u.output is None and u.tokens() is None


def test_parse_line_reads_usage_with_the_batch_endpoint() -> None:
    body = {"object": "list", "data": [], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    line = orjson.dumps(
        {"custom_id": "s-7", "response": {"status_code": 200, "request_id": "r", "body": body}}
    )
    f = parse_line(line, "s", "/v1/embeddings", format_of("openai"))
    assert (f.input_tokens, f.output_tokens) == (4, 0)
    bad = dict(body, usage={"prompt_tokens": -4})
    f = parse_line(
        orjson.dumps(
            {"custom_id": "s-7", "response": {"status_code": 200, "request_id": "r", "body": bad}}
        ),
        "s",
        "/v1/embeddings",
        format_of("openai"),
    )
    assert f.ok and f.input_tokens is None and f.usage is not None and f.usage.flag


# -- the fast paths read exactly what the careful ones do -------------------------------------

_values = st.one_of(
    st.none(), st.integers(-3, 10**7), st.booleans(), st.floats(-2, 50), st.just("7"),
    st.just(3.0), st.lists(st.integers(), max_size=1),
)  # fmt: skip


def _maybe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not _ABSENT}


_ABSENT = object()
_slot = st.one_of(st.just(_ABSENT), _values)


@given(
    st.fixed_dictionaries({
        "input_tokens": _slot, "output_tokens": _slot, "cache_read_input_tokens": _slot,
        "cache_creation_input_tokens": _slot,
        "cache_creation": st.one_of(st.just(_ABSENT), st.none(), st.just([]), st.fixed_dictionaries(
            {"ephemeral_5m_input_tokens": _slot, "ephemeral_1h_input_tokens": _slot}).map(_maybe)),
    }).map(_maybe)
)  # fmt: skip
def test_the_anthropic_fast_path_agrees_with_the_careful_one(usage: dict[str, Any]) -> None:
    from llmbatch.usage import _cache_checked

    try:
        careful = _cache_checked(usage)
    except Exception as exc:  # the careful path raises _Bad; read_usage turns it into a flag
        careful = UsageRecord(None, None, flag=str(exc))
    assert read_usage(usage, provider="anthropic") == careful


@given(
    st.fixed_dictionaries({
        "prompt_tokens": _values, "completion_tokens": _slot,
        "prompt_tokens_details": st.one_of(st.just(_ABSENT), st.none(), st.just(1),
                                           st.fixed_dictionaries({"cached_tokens": _slot}).map(_maybe)),
        "completion_tokens_details": st.one_of(st.just(_ABSENT), st.none(), st.fixed_dictionaries(
            {"reasoning_tokens": _slot}).map(_maybe)),
    }).map(_maybe)
)  # fmt: skip
def test_the_chat_fast_path_agrees_with_the_careful_one(usage: dict[str, Any]) -> None:
    import llmbatch.usage as mod

    chat = "/v1/chat/completions"
    fast = read_usage(usage, endpoint=chat)
    real = mod._chat
    mod._chat = lambda _u, _e: None  # type: ignore[assignment]
    try:
        careful = read_usage(usage, endpoint=chat)
    finally:
        mod._chat = real
    assert fast == careful
