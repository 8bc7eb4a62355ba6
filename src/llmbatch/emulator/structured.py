"""What an OpenAI request asks its reply to be: text, a JSON object, JSON for a schema, or
a call of one of its function tools — checked as the service checks it.

Chat Completions read `response_format` and `tools` / `tool_choice`; the Responses API
reads `text.format` and its flat function `tools`. A request the service refuses raises
`RequestError` with the service's wording, `param` and `code` (a strict schema breaking a
rule: `invalid_json_schema` / `invalid_function_parameters`, see `schema.py`).

Which tool a reply calls: a named `tool_choice` calls that function; `required` (and
`allowed_tools` in `required` mode) calls one, chosen by the request's hash; `auto` (the
default when tools are given) calls one unless the conversation's last item is a tool's
result, which it answers in text — so an agent loop runs call, result, answer; `none`
never calls. Choices where the service documents nothing: a Responses function tool
without `strict` is strict when its schema passes strict mode's rules and loose otherwise
(never an error); `tool_choice` naming a function not in `tools` is a 400 on `tool_choice`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from llmbatch.emulator.envelope import RequestError
from llmbatch.emulator.schema import SchemaError, check_openai_strict

Json = dict[str, Any]
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_EMPTY_PARAMETERS: Json = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Format:
    """What the reply's text must be: `text`, `json_object` or `json_schema`."""

    kind: str = "text"
    schema: Json | None = None
    strict: bool = False
    name: str | None = None


@dataclass(frozen=True)
class Tool:
    """A function the reply may call."""

    name: str
    parameters: Json
    strict: bool


@dataclass(frozen=True)
class Plan:
    """The reply a request asks for: its format, and the tool it calls (if any); `named`
    when `tool_choice` named that function (Chat then finishes with `stop`)."""

    format: Format
    call: Tool | None = None
    named: bool = False


TEXT = Format()


def _missing(param: str) -> RequestError:
    return RequestError(
        f"Missing required parameter: '{param}'.", param, code="missing_required_parameter"
    )


def _bad_name(param: str) -> RequestError:
    return RequestError(
        f"Invalid '{param}': string does not match pattern. Expected a string that matches the "
        "pattern '^[a-zA-Z0-9_-]+$'.",
        param,
        code="invalid_value",
    )


@lru_cache(maxsize=256)
def _strict_problem(schema_json: bytes) -> str | None:
    """Strict mode's verdict on a schema (cached: a batch repeats one schema)."""
    try:
        check_openai_strict(orjson.loads(schema_json))
    except SchemaError as e:
        return str(e)
    return None


def strict_problem(schema: Any) -> str | None:
    """Why strict mode refuses `schema`, or None."""
    return _strict_problem(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


def _mentions_json(value: Any) -> bool:
    return b"json" in orjson.dumps(value).lower()


def _schema_format(spec: Any, where: str, schema_param: str) -> Format:
    if not isinstance(spec, dict):
        raise _missing(where)
    name = spec.get("name")
    if name is None:
        raise _missing(f"{where}.name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _bad_name(f"{where}.name")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise RequestError(
            f"Invalid type for '{schema_param}': expected an object.", schema_param, "invalid_type"
        )
    strict = spec.get("strict") is True
    if strict:
        problem = strict_problem(schema or {})
        if problem is not None:
            raise RequestError(
                f"Invalid schema for response_format '{name}': {problem}",
                schema_param,
                code="invalid_json_schema",
            )
    return Format("json_schema", schema or {"type": "object"}, strict, name)


def chat_format(body: Json) -> Format:
    """The `response_format` of a chat request."""
    rf = body.get("response_format")
    if rf is None:
        return TEXT
    if not isinstance(rf, dict):
        raise RequestError(
            "Invalid type for 'response_format': expected an object.",
            "response_format",
            "invalid_type",
        )
    kind = rf.get("type")
    if kind == "json_object":
        if not _mentions_json(body.get("messages")):
            raise RequestError(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                "messages",
            )
        return Format("json_object")
    if kind == "json_schema":
        return _schema_format(
            rf.get("json_schema"), "response_format.json_schema", "response_format"
        )
    if kind in ("text", "grammar", "python"):
        return TEXT
    raise RequestError(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
        "response_format.type",
        "invalid_value",
    )


def responses_format(body: Json) -> Format:
    """The `text.format` of a Responses request."""
    text = body.get("text")
    spec = text.get("format") if isinstance(text, dict) else None
    if spec is None:
        return TEXT
    if not isinstance(spec, dict):
        raise RequestError(
            "Invalid type for 'text.format': expected an object.", "text.format", "invalid_type"
        )
    kind = spec.get("type")
    if kind == "json_object":
        if not _mentions_json([body.get("input"), body.get("instructions")]):
            raise RequestError(
                "Response input messages must contain the word 'json' in some form to use "
                "'text.format' of type 'json_object'.",
                "input",
            )
        return Format("json_object")
    if kind == "json_schema":
        if "schema" not in spec:
            raise _missing("text.format.schema")
        return _schema_format(spec, "text.format", "text.format.schema")
    if kind in ("text", "grammar", "python"):
        return TEXT
    raise RequestError(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
        "text.format.type",
        "invalid_value",
    )


def _tool(name: Any, parameters: Any, strict: Any, where: str, *, default_strict: bool) -> Tool:
    if name is None:
        raise _missing(f"{where}.name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _bad_name(f"{where}.name")
    if parameters is None:
        parameters = _EMPTY_PARAMETERS
    if not isinstance(parameters, dict):
        raise RequestError(
            f"Invalid type for '{where}.parameters': expected an object.",
            f"{where}.parameters",
            "invalid_type",
        )
    problem = strict_problem(parameters) if strict is True or default_strict else None
    if problem is not None and strict is True:
        raise RequestError(
            f"Invalid schema for function '{name}': {problem}",
            f"{where}.parameters",
            code="invalid_function_parameters",
        )
    return Tool(name, parameters, strict is True or (default_strict and problem is None))


def chat_tools(body: Json) -> list[Tool]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RequestError(
                f"Invalid type for 'tools[{i}]': expected an object.", f"tools[{i}]", "invalid_type"
            )
        if tool.get("type", "function") != "function":
            continue  # custom tools: never called by the emulator
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise _missing(f"tools[{i}].function")
        where = f"tools[{i}].function"
        out.append(
            _tool(
                fn.get("name"), fn.get("parameters"), fn.get("strict"), where, default_strict=False
            )
        )
    return out


def responses_tools(body: Json) -> list[Tool]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RequestError(
                f"Invalid type for 'tools[{i}]': expected an object.", f"tools[{i}]", "invalid_type"
            )
        if tool.get("type") != "function":
            continue  # hosted tools (web search, file search, ...) are never called here
        out.append(
            _tool(
                tool.get("name"),
                tool.get("parameters"),
                tool.get("strict"),
                f"tools[{i}]",
                default_strict=tool.get("strict") is None,
            )
        )
    return out


def _pick(tools: list[Tool], h: bytes) -> Tool:
    return tools[h[8] % len(tools)]


def _choice(
    choice: Any, tools: list[Tool], h: bytes, after_result: bool, *, flat: bool
) -> tuple[Tool | None, bool]:
    """(the tool called, whether `tool_choice` named it)."""
    if choice is None:
        choice = "auto" if tools else "none"
    elif not tools and choice != "none":
        raise RequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    if choice == "none":
        return None, False
    if choice == "auto":
        return (None if after_result else _pick(tools, h)), False
    if choice == "required":
        return _pick(tools, h), False
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            name = choice.get("name") if flat else (choice.get("function") or {}).get("name")
            for tool in tools:
                if tool.name == name:
                    return tool, True
            raise RequestError(
                f"Invalid value for 'tool_choice': no function named '{name}' is given in 'tools'.",
                "tool_choice",
                "invalid_value",
            )
        if kind == "allowed_tools":
            spec = choice if flat else (choice.get("allowed_tools") or {})
            names = {
                (t.get("name") if flat else (t.get("function") or {}).get("name"))
                for t in spec.get("tools") or []
                if isinstance(t, dict)
            }
            allowed = [t for t in tools if t.name in names] or tools
            if spec.get("mode") == "required" or not after_result:
                return _pick(allowed, h), False
            return None, False
        return None, False  # a hosted tool: not called by the emulator
    raise RequestError(
        f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
        "tool_choice",
        "invalid_value",
    )


_PLAIN = Plan(TEXT)


def chat_plan(body: Json, h: bytes) -> Plan:
    """The reply a chat request asks for; raises RequestError."""
    if "response_format" not in body and "tools" not in body and "tool_choice" not in body:
        return _PLAIN  # most requests: plain text, decided without a look at the rest
    fmt = chat_format(body)
    tools = chat_tools(body)
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    after_result = isinstance(last, dict) and last.get("role") in ("tool", "function")
    call, named = _choice(body.get("tool_choice"), tools, h, after_result, flat=False)
    return Plan(fmt, call, named)


def responses_plan(body: Json, h: bytes) -> Plan:
    """The reply a Responses request asks for; raises RequestError."""
    fmt = responses_format(body)
    tools = responses_tools(body)
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    after_result = isinstance(last, dict) and last.get("type") == "function_call_output"
    call, named = _choice(body.get("tool_choice"), tools, h, after_result, flat=True)
    return Plan(fmt, call, named)


def echo_tools(body: Json) -> list[Json]:
    """The Responses `tools` as the response repeats them (function tools with `strict`
    resolved)."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    strict = {t.name: t.strict for t in responses_tools(body)}
    out = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            tool = {"description": None, **tool, "strict": strict.get(str(tool.get("name")), False)}
            tool.setdefault("parameters", _EMPTY_PARAMETERS)
        out.append(tool)
    return out
