"""Anthropic input at the door: `{"custom_id", "params"}` lines and the Python API."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.providers.anthropic_format import MAX_REQUEST_BYTES
from llmbatch.requests import (
    LineError,
    make_request,
    parse_line,
    parse_obj,
)


def params(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}], **extra}  # fmt: skip


def reason(obj: object) -> str:
    with pytest.raises(LineError) as exc:
        parse_obj(obj)
    return str(exc.value)


@given(
    st.text(min_size=1, max_size=512).filter(
        lambda s: not any(c < " " or "\x7f" <= c <= "\x9f" for c in s)
    )
)
def test_any_user_custom_id_is_accepted_the_provider_sees_attempt_ids(custom_id: str) -> None:
    r = parse_obj({"custom_id": custom_id, "params": params()})
    assert (r.custom_id, r.provider) == (custom_id, "anthropic")


def test_custom_ids_anthropic_would_refuse_are_ours_to_keep() -> None:
    for custom_id in ("has space", "ü", "a/b", "x" * 65, "semi;colon", "dot.ted"):
        assert parse_obj({"custom_id": custom_id, "params": params()}).custom_id == custom_id


def test_max_tokens_is_required_and_a_positive_whole_number() -> None:
    no_cap = params()
    del no_cap["max_tokens"]
    assert reason({"custom_id": "a", "params": no_cap}) == (
        "params.max_tokens is missing (Anthropic requires it)"
    )
    for bad, shown in ((0, "0"), (-3, "-3"), ("10", "'10'"), (1.5, "1.5"), (True, "true"),
                       (None, None)):  # fmt: skip
        got = reason({"custom_id": "a", "params": params(max_tokens=bad)})
        if shown is None:
            assert "missing" in got
        else:
            assert got == f"params.max_tokens must be a whole number of 1 or more, got {shown}"


def test_the_python_api_applies_the_same_rules() -> None:
    r = make_request("any id at all", params(), provider="anthropic")
    assert (r.provider, r.endpoint, r.model) == ("anthropic", "/v1/messages", "claude-haiku-4-5")
    with pytest.raises(LineError, match="max_tokens is missing"):
        make_request("a", {"model": "claude-haiku-4-5", "messages": []}, provider="anthropic")


def test_an_over_size_request_is_refused_with_its_size() -> None:
    fits = params(system="x" * (MAX_REQUEST_BYTES - 200))
    assert parse_obj({"custom_id": "a", "params": fits}).provider == "anthropic"
    big = params(system="x" * MAX_REQUEST_BYTES)
    got = reason({"custom_id": "a", "params": big})
    assert got.startswith("params are 30.0 MiB; one Anthropic request may be at most 30 MiB")


def test_an_unknown_model_is_left_to_the_provider() -> None:
    # model names change faster than llmbatch: an unknown one comes back as an errored result
    r = parse_line(orjson.dumps({"custom_id": "a", "params": params(model="claude-next-9")}))
    assert r.model == "claude-next-9"
