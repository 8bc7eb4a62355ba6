"""Structured outputs and tools: instances valid against any schema (hypothesis), the
providers' rules for schemas, and what the doors answer (over real HTTP)."""

from __future__ import annotations

import json
import random
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu_helpers import chat_line, read_jsonl, upload, wait
from llmbatch.emulator import RunningEmulator
from llmbatch.emulator.instances import hints, instance
from llmbatch.emulator.patterns import from_regex
from llmbatch.emulator.schema import SchemaError, check_anthropic, check_openai_strict

# --- instances: valid against any schema the strategies build --------------------------------

_PATTERNS = [
    r"^\d{3}-\d{2}$",
    r"^[A-Z][a-z]+$",
    r"^(red|green|blue)$",
    r"^[a-f0-9]{8}$",
    r"\w+@\w+",
]
_FORMATS = ["date-time", "date", "time", "email", "hostname", "ipv4", "ipv6", "uuid", "duration"]


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    bounds = st.tuples(st.integers(-50, 50), st.integers(0, 60))
    return st.one_of(
        st.just({"type": "string"}),
        st.sampled_from(_FORMATS).map(lambda f: {"type": "string", "format": f}),
        st.sampled_from(_PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
        st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True).map(
            lambda e: {"type": "string", "enum": e}
        ),
        bounds.map(lambda b: {"type": "integer", "minimum": b[0], "maximum": b[0] + b[1]}),
        bounds.map(
            lambda b: {"type": "number", "exclusiveMinimum": b[0], "maximum": b[0] + b[1] + 1}
        ),
        st.sampled_from([0.5, 0.1, 3, 0.25]).map(
            lambda m: {"type": "number", "multipleOf": m, "minimum": 0, "maximum": 10}
        ),
        st.just({"type": "boolean"}),
        st.just({"type": ["string", "null"]}),
        st.just({"const": "fixed"}),
    )


def _strict_object(
    children: st.SearchStrategy[dict[str, Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), children, max_size=4).map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }
    )


def _open_with_keys_of_branch(schema: dict[str, Any], branch: int) -> dict[str, Any]:
    """A strict object schema opened (no `additionalProperties`), its keys renamed for the
    allOf branch it is (`b0_name`): two branches then never give one key two schemas."""
    props = {f"b{branch}_{k}": v for k, v in schema["properties"].items()}
    return {"type": "object", "properties": props, "required": list(props)}


_strict_schemas = st.recursive(
    _leaf(),
    lambda children: st.one_of(
        _strict_object(children),
        st.tuples(children, st.integers(0, 2), st.integers(0, 3)).map(
            lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}
        ),
        st.lists(children, min_size=1, max_size=3).map(lambda bs: {"anyOf": bs}),
    ),
    max_leaves=12,
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_strict_object(_strict_schemas), seed=st.integers(0, 2**32))
def test_instances_are_valid_and_strict_schemas_pass(schema: dict[str, Any], seed: int) -> None:
    check_openai_strict(schema)
    value = instance(schema, random.Random(seed))
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    jsonschema.validate(value, schema, format_checker=checker)
    assert list(value) == list(schema["properties"])  # the schema's order, every key


_loose = st.recursive(
    _leaf() | st.just({}),
    lambda children: st.one_of(
        st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), children, max_size=4).flatmap(
            lambda props: st.lists(st.sampled_from(sorted(props) or ["x"]), unique=True).map(
                lambda req: {
                    "type": "object",
                    "properties": props,
                    "required": [r for r in req if r in props],
                }
            )
        ),
        children.map(lambda c: {"type": "object", "additionalProperties": c}),
        children.map(lambda c: {"type": "array", "items": c, "uniqueItems": True, "maxItems": 3}),
        st.lists(children, min_size=1, max_size=3).map(lambda bs: {"oneOf": bs}),
        # allOf of open objects, each branch's keys its own: closed ones, or one key of two
        # types in two branches, cannot both hold, and no instance of such a schema exists.
        st.lists(_strict_object(children), min_size=1, max_size=2).map(
            lambda bs: {"allOf": [_open_with_keys_of_branch(b, i) for i, b in enumerate(bs)]}
        ),
    ),
    max_leaves=10,
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_loose, seed=st.integers(0, 2**32))
def test_instances_of_loose_schemas_are_valid(schema: dict[str, Any], seed: int) -> None:
    value = instance(schema, random.Random(seed))
    if "oneOf" in json.dumps(schema):
        return  # oneOf branches may overlap: valid against one, maybe against two
    jsonschema.validate(value, schema)


def test_recursive_refs_terminate() -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
            "parent": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        },
        "required": ["name", "children", "parent"],
        "additionalProperties": False,
    }
    check_openai_strict(node)
    for seed in range(50):
        jsonschema.validate(instance(node, random.Random(seed)), node)


@pytest.mark.parametrize("pattern", [*_PATTERNS, r"(ab)\1c", r"^[^\d\s]{4}$", r"^x(?=y)y$"])
def test_strings_for_patterns(pattern: str) -> None:
    import re

    for seed in range(20):
        text = from_regex(pattern, random.Random(seed))
        assert text is not None and re.search(pattern, text), (pattern, text)


def test_hints_the_anthropic_sdk_leaves_in_descriptions() -> None:
    assert hints("A code\n\n{pattern: ^\\d{5}$, minLength: 5}") == {
        "pattern": "^\\d{5}$",
        "minLength": 5,
    }
    assert hints("{minimum: 0.5, maximum: 3}") == {"minimum": 0.5, "maximum": 3}
    assert hints("nothing here") == {} and hints(None) == {}


# --- the providers' rules for schemas ----------------------------------------------------------

OBJ: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"type": "array", "items": {"type": "string"}}, "got 'type: \"array\"'"),
        ({"additionalProperties": True}, "In context=(), 'additionalProperties' is required"),
        ({"required": []}, "Missing 'a'."),
        ({"required": ["a", "b"]}, "Extra required key 'b' supplied."),
        (
            {"properties": {"a": {"type": "string", "format": "uri"}}},
            "format 'uri' is not supported",
        ),
        (
            {"properties": {"a": {"allOf": [{"type": "string"}]}}},
            "In context=('properties', 'a'), 'allOf' is not permitted.",
        ),
        ({"properties": {"a": {"oneOf": [{"type": "string"}]}}}, "'oneOf' is not permitted"),
        (
            {"properties": {"a": {"type": "array", "items": {}, "uniqueItems": True}}},
            "'uniqueItems' is not permitted",
        ),
        ({"properties": {"a": {"description": "no type"}}}, "schema must have a 'type' key"),
        (
            {
                "properties": {"a": {"$ref": "#/$defs/X", "description": "d"}},
                "$defs": {"X": {"type": "string"}},
            },
            "$ref cannot have keywords ['description']",
        ),
        (
            {"properties": {"a": {"type": "object", "properties": {}}}},
            "In context=('properties', 'a'), 'additionalProperties'",
        ),
    ],
)
def test_openai_strict_rules(change: dict[str, Any], says: str) -> None:
    with pytest.raises(SchemaError) as info:
        check_openai_strict({**OBJ, **change})
    assert says in str(info.value)


def test_openai_strict_depth_and_annotations() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(11):
        deep = {
            "type": "object",
            "properties": {"x": deep},
            "required": ["x"],
            "additionalProperties": False,
        }
    with pytest.raises(SchemaError, match="deeper than 10"):
        check_openai_strict(deep)
    annotated = {**OBJ, "title": "T", "description": "d", "$defs": {}}
    annotated["properties"] = {
        "a": {"type": "string", "title": "A", "default": "x", "minLength": 2}
    }
    check_openai_strict(annotated)  # annotations and minLength are accepted


def test_anthropic_rules() -> None:
    check_anthropic({**OBJ, "properties": {"a": {"type": "string", "format": "uri"}}}, "s")
    with pytest.raises(SchemaError, match="'additionalProperties' must be explicitly set to false"):
        check_anthropic({"type": "object", "properties": {}}, "output_config.format.schema")
    with pytest.raises(SchemaError, match="property 'minimum' is not supported"):
        check_anthropic({**OBJ, "properties": {"a": {"type": "integer", "minimum": 1}}}, "s")
    with pytest.raises(SchemaError, match="'minItems' values other than 0 or 1"):
        check_anthropic({**OBJ, "properties": {"a": {"type": "array", "minItems": 2}}}, "s")


# --- over HTTP -------------------------------------------------------------------------------

SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "Thing", "strict": True, "schema": OBJ},
}


def _ask(**body: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Give JSON."}], **body}


def test_response_formats_in_real_time(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(**_ask(response_format=SCHEMA_FORMAT))
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), OBJ)
    again = client.chat.completions.create(**_ask(response_format=SCHEMA_FORMAT))
    assert again.choices[0].message.content == reply.choices[0].message.content  # deterministic
    obj = client.chat.completions.create(**_ask(response_format={"type": "json_object"}))
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello"}],
            response_format={"type": "json_object"},
        )
    bad = {
        **SCHEMA_FORMAT,
        "json_schema": {"name": "Thing", "strict": True, "schema": {**OBJ, "required": []}},
    }
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**_ask(response_format=bad))
    body = info.value.body
    assert body["code"] == "invalid_json_schema" and body["param"] == "response_format"  # type: ignore[index]
    assert body["message"].startswith("Invalid schema for response_format 'Thing': In context=()")  # type: ignore[index]
    loose = {**bad, "json_schema": {**bad["json_schema"], "strict": False}}  # type: ignore[dict-item]
    jsonschema.validate(
        json.loads(
            client.chat.completions.create(**_ask(response_format=loose)).choices[0].message.content
            or ""
        ),
        {**OBJ, "required": []},
    )


def test_refused_schema_in_a_batch_goes_to_the_error_file(client: openai.OpenAI) -> None:
    bad = {
        **SCHEMA_FORMAT,
        "json_schema": {"name": "T", "strict": True, "schema": {"type": "array"}},
    }
    lines = [chat_line(0, response_format=SCHEMA_FORMAT), chat_line(1, response_format=bad)]
    f = upload(client, lines)
    done = wait(
        client,
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert done.status == "completed" and (
        done.request_counts.completed,
        done.request_counts.failed,
    ) == (1, 1)
    (err,) = read_jsonl(client, done.error_file_id)
    assert err["custom_id"] == "req-1" and err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["code"] == "invalid_json_schema"


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}


def test_chat_tool_choices(client: openai.OpenAI) -> None:
    params = TOOL["function"]["parameters"]  # type: ignore[index]
    required = client.chat.completions.create(**_ask(tools=[TOOL], tool_choice="required"))
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    jsonschema.validate(json.loads(call.function.arguments), params)  # type: ignore[union-attr]
    named = client.chat.completions.create(
        **_ask(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    )
    assert (
        named.choices[0].finish_reason == "stop" and named.choices[0].message.tool_calls
    )  # as the service
    after = client.chat.completions.create(
        model="gpt-4o-mini",
        tools=[TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
        ],
    )
    assert after.choices[0].finish_reason == "stop" and after.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="no function named 'nope'"):
        client.chat.completions.create(
            **_ask(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})
        )
    with pytest.raises(openai.BadRequestError) as info:
        strict_bad = {"type": "function", "function": {**TOOL["function"], "strict": True}}  # type: ignore[dict-item]
        client.chat.completions.create(**_ask(tools=[strict_bad], tool_choice="required"))
    assert info.value.body["code"] == "invalid_function_parameters"  # type: ignore[index]
    assert info.value.body["message"].startswith("Invalid schema for function 'get_weather'")  # type: ignore[index]


def test_responses_text_format_and_function_call(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "name": "Thing", "strict": True, "schema": OBJ}
    reply = client.responses.create(model="gpt-4.1", input="Give JSON.", text={"format": fmt})  # type: ignore[typeddict-item]
    jsonschema.validate(json.loads(reply.output_text), OBJ)
    assert reply.text.format.type == "json_schema"  # type: ignore[union-attr]
    flat = {"type": "function", "name": "get_weather", "parameters": TOOL["function"]["parameters"]}  # type: ignore[index]
    call = client.responses.create(
        model="gpt-4.1", input="Oslo?", tools=[flat], tool_choice="required"
    )  # type: ignore[list-item]
    (item,) = call.output
    assert item.type == "function_call" and item.name == "get_weather"
    jsonschema.validate(json.loads(item.arguments), flat["parameters"])  # type: ignore[arg-type]
    # Not strict-compatible and no `strict`: loose, not an error; `strict: true`: the error.
    assert call.tools[0].strict is False  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-4.1", input="x", tools=[{**flat, "strict": True}])  # type: ignore[list-item]
    assert info.value.body["param"] == "tools[0].parameters"  # type: ignore[index]


def test_anthropic_tools_and_output_format(emu: RunningEmulator) -> None:
    claude = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    tool = {"name": "get_weather", "input_schema": TOOL["function"]["parameters"]}  # type: ignore[index]
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    auto = claude.messages.create(
        model="claude-haiku-4-5", max_tokens=300, messages=ask, tools=[tool]
    )  # type: ignore[arg-type,list-item]
    assert auto.stop_reason == "tool_use" and [b.type for b in auto.content] == ["text", "tool_use"]
    jsonschema.validate(auto.content[1].input, tool["input_schema"])  # type: ignore[union-attr]
    forced = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=300,
        messages=ask,
        tools=[tool],
        tool_choice={"type": "any"},  # type: ignore[arg-type,list-item]
    )
    assert [b.type for b in forced.content] == ["tool_use"] and forced.stop_reason == "tool_use"
    use = auto.content[1]
    answered = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=300,
        tools=[tool],  # type: ignore[list-item]
        messages=[
            *ask,
            {"role": "assistant", "content": [use.model_dump()]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C"}],
            },  # type: ignore[union-attr]
        ],
    )
    assert answered.stop_reason == "end_turn" and [b.type for b in answered.content] == ["text"]
    with pytest.raises(anthropic.BadRequestError, match=r"input_schema\.type"):
        claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=9,
            messages=ask,
            tools=[{"name": "t", "input_schema": {"type": "array"}}],
        )  # type: ignore[arg-type,list-item]
    with pytest.raises(anthropic.BadRequestError, match="not found in tools"):
        claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=9,
            messages=ask,
            tools=[tool],
            tool_choice={"type": "tool", "name": "x"},
        )  # type: ignore[arg-type,list-item]
    structured = claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=500,
        messages=ask,  # type: ignore[arg-type]
        output_config={"format": {"type": "json_schema", "schema": OBJ}},
    )
    jsonschema.validate(json.loads(structured.content[0].text), OBJ)  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError, match="additionalProperties"):
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=9,
            messages=ask,  # type: ignore[arg-type]
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        )
