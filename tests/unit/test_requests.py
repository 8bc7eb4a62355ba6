"""Validation of input lines, one rule at a time, and the canonical body hash."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import body, line
from llmbatch.requests import (
    LineError,
    body_hash,
    line_fields,
    make_request,
    parse_line,
    parse_obj,
    text_size,
)


def reason(raw: bytes, provider: str = "openai") -> str:
    with pytest.raises(LineError) as exc:
        parse_line(raw, provider)
    return str(exc.value)


def test_a_valid_line_becomes_a_request() -> None:
    r = parse_line(line("a-1", "héllo"))
    assert (r.custom_id, r.provider, r.endpoint, r.model) == (
        "a-1", "openai", "/v1/chat/completions", "gpt-4o-mini",
    )  # fmt: skip
    assert orjson.loads(r.body) == body("héllo")
    assert (r.text_chars, r.text_bytes, r.inputs) == (len("user") + 5, len("user") + 6, 1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe{}", "not valid UTF-8 (byte 1)"),
        (b'{"custom_id": "a",', "not valid JSON"),
        (b"hello", "not valid JSON"),
        (b'{"custom_id": "a", "x": NaN}', "not valid JSON"),
        (b'{"custom_id": "a", "x": Infinity}', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b'"just a string"', "expected a JSON object, got string"),
        (b"42", "expected a JSON object, got number"),
        (b"null", "expected a JSON object, got null"),
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
    ],
)
def test_a_line_that_is_not_a_json_object(raw: bytes, expected: str) -> None:
    assert expected in reason(raw)


@pytest.mark.parametrize(
    ("custom_id", "expected"),
    [
        (None, "custom_id is missing"),
        (7, "custom_id must be a string, got number"),
        (["a"], "custom_id must be a string, got array"),
        (True, "custom_id must be a string, got boolean"),
        ("", "custom_id must be 1-512 characters, got 0"),
        ("x" * 513, "custom_id must be 1-512 characters, got 513"),
        ("a\nb", "custom_id contains a control character"),
        ("tab\there", "custom_id contains a control character"),
        ("nul\x00", "custom_id contains a control character"),
        ("c1\x85", "custom_id contains a control character"),
    ],
)
def test_custom_id_rules(custom_id: Any, expected: str) -> None:
    assert reason(line(custom_id)) == expected


def test_custom_id_missing_entirely() -> None:
    raw = orjson.dumps({"method": "POST", "url": "/v1/chat/completions", "body": body()})
    assert reason(raw) == "custom_id is missing"


@pytest.mark.parametrize("custom_id", ["a", "x" * 512, "ünïcödé ✓", "with space", "📦-1"])
def test_custom_ids_that_are_fine(custom_id: str) -> None:
    assert parse_line(line(custom_id)).custom_id == custom_id


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"method": "GET"}, "method must be \"POST\", got 'GET'"),
        ({"method": "post"}, "method must be \"POST\", got 'post'"),
        ({"method": None}, 'method must be "POST", got null'),
        ({"url": None}, "url is missing"),
        ({"url": 5}, "url must be a string"),
        ({"url": "/v1/chat"}, "url '/v1/chat' is not a batch endpoint; use one of"),
        (
            {"url": "/v1/videos"},
            "url /v1/videos cannot be batched: the Videos API was shut down on 2026-09-24",
        ),
        ({"body": None}, "body is missing"),
        ({"body": "text"}, "body must be an object, got string"),
        ({"body": {"messages": []}}, "body has no model"),
        ({"body": {"model": ""}}, "model must be a non-empty string"),
        ({"body": {"model": 4}}, "model must be a non-empty string"),
        ({"body": {"model": "m", "stream": True}}, "stream: true is not allowed in a batch"),
    ],
)
def test_openai_line_rules(overrides: dict[str, Any], expected: str) -> None:
    assert reason(line("a", **overrides)).startswith(expected)


def test_every_supported_endpoint_is_accepted() -> None:
    for url in ["/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions",
                "/v1/moderations", "/v1/images/generations", "/v1/images/edits"]:  # fmt: skip
        assert parse_line(line("a", url=url)).endpoint == url


def test_stream_false_is_fine() -> None:
    assert parse_line(line("a", body={"model": "m", "stream": False})).model == "m"


def test_a_body_nested_deeper_than_can_be_stored_is_a_line_error() -> None:
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    raw = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "m", "x": deep}}).encode()  # fmt: skip
    assert "nested too deeply" in reason(raw)
    with pytest.raises(LineError, match="nested too deeply"):
        make_request("a", {"model": "m", "x": deep})  # the Python API too
    shallow: Any = []
    for _ in range(100):
        shallow = [shallow]
    assert parse_line(line("a", body={"model": "m", "x": shallow})).model == "m"


def test_anthropic_lines() -> None:
    params = {"model": "claude-3-5-haiku", "max_tokens": 10, "messages": []}
    r = parse_line(orjson.dumps({"custom_id": "a", "params": params}))
    assert (r.provider, r.endpoint, r.model) == ("anthropic", "/v1/messages", "claude-3-5-haiku")
    bad = {"custom_id": "a", "params": {"model": "c", "messages": []}}
    assert "max_tokens is missing" in reason(orjson.dumps(bad))
    bad = {"custom_id": "a", "params": {"model": "c", "max_tokens": 1, "messages": "hi"}}
    assert reason(orjson.dumps(bad)) == "params.messages must be a list"
    bad = {"custom_id": "a", "params": {**params, "stream": True}}
    assert reason(orjson.dumps(bad)) == "stream: true is not allowed in a batch"
    assert reason(orjson.dumps({"custom_id": "a", "params": 3})) == (
        "params must be an object, got number"
    )
    assert "takes" in reason(line("a"), provider="anthropic")


def test_embedding_inputs_are_counted() -> None:
    emb = {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    assert parse_line(line("e", url="/v1/embeddings", body=emb)).inputs == 3
    one = {"model": "text-embedding-3-small", "input": "a"}
    assert parse_line(line("e", url="/v1/embeddings", body=one)).inputs == 1


def test_text_size_counts_string_values_except_the_model() -> None:
    assert text_size({"model": "gpt", "messages": [{"role": "user", "content": "né"}]}) == (6, 7)


# -- the canonical hash ----------------------------------------------------------------------


def test_a_reformatted_line_is_the_same_request() -> None:
    compact = line("a", "hello")
    obj = json.loads(compact)
    obj["body"] = dict(reversed(list(obj["body"].items())))
    pretty = json.dumps(dict(reversed(list(obj.items()))), indent=4).replace("\n", " ").encode()
    r1, r2 = parse_line(compact), parse_line(pretty)
    assert r1.body == r2.body
    assert r1.body_hash == r2.body_hash


def test_a_different_body_is_a_different_request() -> None:
    assert parse_line(line("a", "hello")).body_hash != parse_line(line("a", "hello!")).body_hash


def test_the_hash_covers_the_url() -> None:
    b = {"model": "m", "input": "x"}
    one = parse_line(line("a", url="/v1/embeddings", body=b))
    other = parse_line(line("a", url="/v1/moderations", body=b))
    assert one.body == other.body and one.body_hash != other.body_hash


def test_the_hash_ignores_the_custom_id() -> None:
    assert parse_line(line("a")).body_hash == parse_line(line("b")).body_hash


def test_the_python_api_and_a_line_agree() -> None:
    assert make_request("a", body("x")).body_hash == parse_line(line("a", "x")).body_hash
    assert parse_obj(orjson.loads(line("a", "x"))).body_hash == parse_line(line("a", "x")).body_hash


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=8), json_values, max_size=6).map(
    lambda d: {**{k: v for k, v in d.items() if k not in ("model", "stream")}, "model": "m"}
)


def _shuffled(value: Any, data: st.DataObject) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffled(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, data) for v in value]
    return value


@pytest.mark.slow
@given(b=bodies, data=st.data(), indent=st.sampled_from([None, 0, 2, "\t"]))
def test_hash_is_invariant_under_key_order_and_whitespace(
    b: dict[str, Any], data: st.DataObject, indent: Any
) -> None:
    obj = {"custom_id": "c", "method": "POST", "url": "/v1/responses", "body": b}
    reordered = _shuffled(obj, data)
    text = json.dumps(reordered, indent=indent, ensure_ascii=data.draw(st.booleans()))
    one_line = text.replace("\n", " ").encode()  # a JSON line may not hold a newline
    original, variant = parse_line(orjson.dumps(obj)), parse_line(one_line)
    assert variant.body == original.body
    assert (
        variant.body_hash == original.body_hash == body_hash("POST", "/v1/responses", original.body)
    )


@pytest.mark.slow
@given(a=bodies, b=bodies)
def test_different_bodies_hash_differently(a: dict[str, Any], b: dict[str, Any]) -> None:
    same_json = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    ra, rb = make_request("x", a), make_request("x", b)
    assert (ra.body_hash == rb.body_hash) == same_json


def _text_size_by_the_book(b: dict[str, Any]) -> tuple[int, int]:
    """text_size as first written: every string value but the top-level model, one by one."""
    chars = nbytes = 0
    stack: list[Any] = [v for k, v in b.items() if k != "model"]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            chars += len(v)
            nbytes += len(v.encode("utf-8", "surrogatepass"))
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return chars, nbytes


@pytest.mark.parametrize(
    "b",
    [
        {"model": "m"},
        {"model": {"deep": "not the model name"}, "x": ["é", {"model": "counted"}]},
        {"model": "m", "a": "\ud83d", "b": ["\ude00", "日本", 5, None, True, 1.5, []]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
    ],
)
def test_text_size_counts_what_it_always_counted(b: dict[str, Any]) -> None:
    assert text_size(b) == _text_size_by_the_book(b)


_VARIANTS: list[bytes] = [
    line("a"),
    line("né"),  # not ASCII: the fast path leaves the id to check_custom_id
    line("a\x01"),
    line("a\x7f"),
    line(""),
    line("x" * 513),
    line(5),
    line("a", method="GET"),
    line("a", url="/v1/chat"),
    line("a", url="/v1/videos"),
    line("a", url="/chat/completions"),  # Azure's own spelling
    line("a", url="/v1/embeddings", body={"model": "e", "input": ["x", "y", "z"]}),
    line("a", url="/v1/embeddings", body={"model": "e", "input": [1, 2]}),
    line("a", body={"model": "m", "stream": True}),
    line("a", body={"model": "m", "stream": False, "t": "\u00e9\U0001f600"}),
    line("a", body={"model": ""}),
    line("a", body=[]),
    orjson.dumps({"custom_id": "a", "params": {"model": "claude", "max_tokens": 5}}),
    orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}),
    b'{"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {"model": "m",'
    b' "big": 123456789012345678901234567890}}',
]


@pytest.mark.parametrize("raw", _VARIANTS)
@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic"])
def test_the_importers_fast_path_reads_a_line_as_parse_line_does(raw: bytes, provider: str) -> None:
    """`line_fields` (the enqueue of a file: the format's one-pass `fast_fields` where it
    takes the line) gives parse_line's request, or its error word for word."""
    try:
        expected: Any = parse_line(raw, provider).fields()
    except LineError as exc:
        expected = str(exc)
    try:
        got: Any = line_fields(raw, provider)
    except LineError as exc:
        got = str(exc)
    assert got == expected


@pytest.mark.slow
@given(b=bodies, url=st.sampled_from(["/v1/responses", "/v1/embeddings", "/v1/chat"]))
def test_the_fast_path_agrees_on_any_body(b: dict[str, Any], url: str) -> None:
    assert text_size(b) == _text_size_by_the_book(b)
    raw = orjson.dumps({"custom_id": "c", "method": "POST", "url": url, "body": b})
    try:
        expected: Any = parse_line(raw).fields()
    except LineError as exc:
        expected = str(exc)
    try:
        got: Any = line_fields(raw)
    except LineError as exc:
        got = str(exc)
    assert got == expected
