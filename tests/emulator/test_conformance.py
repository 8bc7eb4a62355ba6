"""The official SDKs' typed helpers against every door, on real-time answers and on the
bodies that come back through the batch APIs (parsed with the SDKs' own parse helpers).

Floors (issue 22): 1,000 strict `json_schema` requests through the SDK's parse helpers,
100 % parsed; 1,000 forced tool calls, 100 % valid arguments (jsonschema)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pytest
from anthropic.lib._parse._response import parse_response as anthropic_parse
from anthropic.lib._parse._transform import to_json_output_format
from openai.lib._parsing._completions import parse_chat_completion, type_to_response_format_param
from openai.lib._parsing._responses import parse_response, type_to_text_format_param
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel, Field

from emu_helpers import read_jsonl, upload, wait
from llmbatch.emulator import RunningEmulator

FLOOR = 1000


class Item(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")
    quantity: int = Field(ge=1, le=99)
    price: float


class Order(BaseModel):
    id: str
    status: Literal["new", "paid", "shipped"]
    items: list[Item]
    placed: date
    note: str | None
    customer: dict[str, str] | None = None


class Strict(BaseModel):
    """Order without the open `dict` field strict mode refuses."""

    id: str
    status: Literal["new", "paid", "shipped"]
    items: list[Item]
    placed: date
    note: str | None


class GetWeather(BaseModel):
    city: str
    unit: Literal["c", "f"]
    days: int = Field(ge=1, le=7)


def _line(i: int, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}


def _batch(
    client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str
) -> list[dict[str, Any]]:
    f = upload(client, lines)
    done = wait(
        client,
        client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h").id,
        timeout=120,
    )
    assert done.status == "completed" and done.request_counts.completed == len(lines), done
    return [x["response"]["body"] for x in read_jsonl(client, done.output_file_id)]


@pytest.mark.slow
def test_chat_parse_floor_through_the_batch_api(client: openai.OpenAI) -> None:
    fmt = type_to_response_format_param(Strict)
    assert fmt["json_schema"]["strict"] is True  # type: ignore[index]
    lines = [
        _line(
            i,
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "response_format": fmt,
                "messages": [{"role": "user", "content": f"Order {i} as JSON."}],
            },
        )
        for i in range(FLOOR)
    ]
    parsed = [
        parse_chat_completion(
            response_format=Strict,
            input_tools=openai.omit,
            chat_completion=ChatCompletion.model_validate(body),
        )
        for body in _batch(client, lines, "/v1/chat/completions")
    ]
    assert len(parsed) == FLOOR and all(
        isinstance(p.choices[0].message.parsed, Strict) for p in parsed
    )
    assert len({p.choices[0].message.content for p in parsed}) > FLOOR * 0.9  # varied


@pytest.mark.slow
def test_forced_tool_call_floor_through_the_batch_api(client: openai.OpenAI) -> None:
    tool = openai.pydantic_function_tool(GetWeather)
    schema = tool["function"]["parameters"]  # type: ignore[typeddict-item]
    lines = [
        _line(
            i,
            "/v1/chat/completions",
            {
                "model": "gpt-4.1-mini",
                "tools": [tool],
                "tool_choice": "required",
                "messages": [{"role": "user", "content": f"Weather {i}?"}],
            },
        )
        for i in range(FLOOR)
    ]
    validator = jsonschema.Draft202012Validator(schema)
    valid = 0
    for body in _batch(client, lines, "/v1/chat/completions"):
        completion = parse_chat_completion(
            response_format=openai.omit,
            input_tools=[tool],
            chat_completion=ChatCompletion.model_validate(body),
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        validator.validate(json.loads(call.function.arguments))  # type: ignore[union-attr]
        assert isinstance(call.function.parsed_arguments, GetWeather)  # type: ignore[union-attr]
        valid += 1
    assert valid == FLOOR


def test_responses_parse_through_the_batch_api_and_in_real_time(client: openai.OpenAI) -> None:
    text = {"format": type_to_text_format_param(Strict)}
    tool = openai.pydantic_function_tool(GetWeather)["function"]
    flat = {
        "type": "function",
        "name": tool["name"],
        "parameters": tool["parameters"],
        "strict": True,
    }  # type: ignore[typeddict-item]
    lines = [
        _line(i, "/v1/responses", {"model": "gpt-5-mini", "input": f"Order {i}", "text": text})
        for i in range(20)
    ]
    lines += [
        _line(
            20 + i,
            "/v1/responses",
            {"model": "gpt-5-mini", "input": "Oslo?", "tools": [flat], "tool_choice": "required"},
        )
        for i in range(20)
    ]
    for body in _batch(client, lines, "/v1/responses"):
        parsed = parse_response(
            text_format=Strict, input_tools=[flat], response=Response.model_validate(body)
        )  # type: ignore[list-item]
        item = parsed.output[0]
        if item.type == "function_call":
            GetWeather.model_validate(item.parsed_arguments)  # a strict dict tool: parsed JSON
        else:
            assert isinstance(parsed.output_parsed, Strict)
    live = client.responses.parse(model="gpt-5-mini", input="Order?", text_format=Strict)
    assert isinstance(live.output_parsed, Strict)
    assert live.usage and live.usage.output_tokens_details.reasoning_tokens > 0  # a reasoning model


def test_chat_parse_in_real_time_openai_and_azure(
    emu: RunningEmulator, client: openai.OpenAI
) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key="k", api_version="2024-10-21", max_retries=0
    )
    for sdk in (client, azure):
        reply = sdk.chat.completions.parse(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Order?"}],
            response_format=Strict,
        )
        assert isinstance(reply.choices[0].message.parsed, Strict)
        called = sdk.chat.completions.parse(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[openai.pydantic_function_tool(GetWeather)],
            tool_choice={"type": "function", "function": {"name": "GetWeather"}},
        )
        (call,) = called.choices[0].message.tool_calls or []
        assert isinstance(call.function.parsed_arguments, GetWeather)  # type: ignore[union-attr]
    # A model strict mode refuses: the service's 400, which the SDK raises before parsing.
    with pytest.raises(openai.BadRequestError, match="Invalid schema for response_format 'Order'"):
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], response_format=Order
        )


def test_azure_batch_bodies_parse(emu: RunningEmulator) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key="k", api_version="2024-10-21", max_retries=0
    )
    fmt = type_to_response_format_param(Strict)
    lines = [
        _line(
            i,
            "/chat/completions",
            {
                "model": "gpt-4o-mini",
                "response_format": fmt,
                "messages": [{"role": "user", "content": f"Order {i}"}],
            },
        )
        for i in range(50)
    ]
    for body in _batch(azure, lines, "/chat/completions"):
        parsed = parse_chat_completion(
            response_format=Strict,
            input_tools=openai.omit,
            chat_completion=ChatCompletion.model_validate(body),
        )
        assert isinstance(parsed.choices[0].message.parsed, Strict)


def test_anthropic_tool_use_and_parse_batch_and_real_time(emu: RunningEmulator) -> None:
    claude = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": GetWeather.model_json_schema(),
    }
    output_config = {"format": to_json_output_format(Order)}
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    requests = [
        {
            "custom_id": f"t{i}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 1024,
                "messages": ask,
                "tools": [tool],
                "tool_choice": {"type": "tool", "name": "get_weather"},
            },
        }
        for i in range(100)
    ] + [
        {
            "custom_id": f"o{i}",
            "params": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 2048,
                "messages": [{"role": "user", "content": f"Order {i}"}],
                "output_config": output_config,
            },
        }
        for i in range(100)
    ]
    batch = claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    emu.control.advance(60)
    emu.control.wait(batch.id)
    seen = cut = 0
    for result in claude.messages.batches.results(batch.id):
        assert result.result.type == "succeeded"
        message = result.result.message
        seen += 1
        if message.stop_reason == "max_tokens":  # the `length_rate` share (1 %): cut short
            cut += 1
            continue
        if result.custom_id.startswith("t"):
            assert message.stop_reason == "tool_use"
            (use,) = message.content
            assert use.type == "tool_use" and use.name == "get_weather"
            GetWeather.model_validate(use.input)
        else:
            assert isinstance(
                anthropic_parse(output_format=Order, response=message).parsed_output, Order
            )
    assert seen == 200 and cut < 10
    live = claude.messages.parse(
        model="claude-sonnet-4-5", max_tokens=2048, messages=ask, output_format=Order
    )  # type: ignore[arg-type]
    assert isinstance(live.parsed_output, Order)
    used = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=512,
        messages=ask,
        tools=[tool],
        tool_choice={"type": "any"},
    )  # type: ignore[arg-type,list-item]
    GetWeather.model_validate(used.content[0].input)  # type: ignore[union-attr]
