"""Anthropic Messages: checking one request's `params`, and its deterministic synthetic reply.

**The emulator's token rule for Messages** (its own, like the OpenAI one in `synth.py`):

- The prompt is a list of *blocks* in cache-prefix order: each tool (its JSON's text
  tokens), the `system` prompt (a string is one block; a list gives one block per text
  block), then each message's content (a string is one block; a list gives one block per
  content block: `text` counts its text tokens, an image or document as Anthropic documents
  it (`usage_rules.py`: images by size, PDFs by page), any other block the text tokens of its
  JSON). Each message adds 3 tokens to its first block, and 3 more tokens prime the reply
  (counted after the last block, never cached), as does the tool-use system prompt
  Anthropic adds to a request with tools (`usage_rules.anthropic_tool_prompt`).
- *Cache*: a block carrying `cache_control` is a breakpoint; the prefix up to and including
  it is cacheable with its `ttl` (`"5m"` by default, or `"1h"`). A prefix the cache has
  already seen is *read* (`cache_read_input_tokens`); the rest up to the last breakpoint is
  *written* (`cache_creation_input_tokens`, split by the ttl of the breakpoint that closes
  each piece into `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`);
  the remainder is `input_tokens`. Who has "seen" a prefix is the caller's business
  (see `CachePlan`): in a batch, the first request in request order carrying a prefix writes
  it and every later one reads it.
- *Output*: words drawn by `replies.py` below `max_tokens`, the length depending on the
  prompt; a `length_rate` share runs into the cap (`stop_reason: "max_tokens"`), the rest
  end `"end_turn"`.

**Tools and structured outputs.** Custom `tools` are checked as the API checks them (name
pattern, an object `input_schema`, unique names; `strict: true` tools and
`output_config.format` schemas by the structured-outputs rules of `schema.py`). A reply
calls a tool when `tool_choice` is `any` or `tool` (a `tool_use` block alone, as the API
prefills the turn), or `auto` (the default with tools: a short `text` block, then the
`tool_use`) unless the last user turn carries a `tool_result`, which it answers in text;
`none` never calls. A call's `input` is an instance of the tool's `input_schema`, and the
reply stops with `stop_reason: "tool_use"`; its tokens are those of the tool's name, the
input's JSON and any text. With `output_config.format`, the reply is one `text` block of
JSON valid against the schema. Same request, same reply.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from llmbatch.emulator import usage_rules
from llmbatch.emulator.instances import instance
from llmbatch.emulator.models import Catalog, ModelCard
from llmbatch.emulator.replies import fit, text_length, text_tokens, words
from llmbatch.emulator.schema import SchemaError, check_anthropic
from llmbatch.emulator.synth import body_hash, json_tokens

Json = dict[str, Any]

_PER_MESSAGE = 3
_PRIME = 3
ROLES = ("user", "assistant")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
CHOICES = ("auto", "any", "tool", "none")


class MessagesError(Exception):
    """A request the Messages API rejects: `type` is the Anthropic error type
    (`invalid_request_error`, `not_found_error`), `status` the HTTP status."""

    def __init__(self, message: str, type: str = "invalid_request_error", status: int = 400):
        super().__init__(message)
        self.message, self.type, self.status = message, type, status


@dataclass(frozen=True)
class Breakpoint:
    """A cacheable prefix: its hash, its token length and its ttl (`5m` or `1h`)."""

    prefix: str
    tokens: int
    ttl: str


@dataclass(frozen=True)
class Prompt:
    """The counted prompt: all its tokens and its cache breakpoints (in prefix order)."""

    tokens: int
    breakpoints: tuple[Breakpoint, ...]


def check_params(params: Any, models: Catalog) -> ModelCard:
    """Raise MessagesError for params the Messages API would refuse; the model's card."""
    if not isinstance(params, dict):
        raise MessagesError("params: Input should be a valid dictionary")
    model = params.get("model")
    if model is None:
        raise MessagesError("model: Field required")
    if not isinstance(model, str):
        raise MessagesError("model: Input should be a valid string")
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        raise MessagesError("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise MessagesError("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise MessagesError("max_tokens: Input should be greater than or equal to 1")
    messages = params.get("messages")
    if messages is None:
        raise MessagesError("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise MessagesError("messages: at least one message is required")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise MessagesError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        if not isinstance(content, str | list) or (isinstance(content, list) and not content):
            raise MessagesError(f"messages.{i}.content: Input should be a string or a list")
    system = params.get("system")
    if system is not None and not isinstance(system, str | list):
        raise MessagesError("system: Input should be a valid string or a list of text blocks")
    if params.get("stream") is True:
        raise MessagesError("stream: streaming is not supported here")
    card = models.get(model)
    if card is None:
        raise MessagesError(f"model: {model}", "not_found_error", 404)
    if 0 < card.max_output_tokens < max_tokens:
        raise MessagesError(
            f"max_tokens: {max_tokens} > {card.max_output_tokens}, which is the maximum allowed "
            f"number of output tokens for {model}"
        )
    tools = custom_tools(params)
    _check_choice(params, tools)
    _check_output_format(params)
    return card


def check_window(prompt: Prompt, card: ModelCard) -> None:
    """A prompt longer than the model's context window is refused."""
    if 0 < card.context_window < prompt.tokens:
        raise MessagesError(
            f"prompt is too long: {prompt.tokens} tokens > {card.context_window} maximum"
        )


def custom_tools(params: Json) -> list[Json]:
    """The checked custom tools of `params` (server tools are never called here)."""
    tools = params.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise MessagesError("tools: Input should be a valid list")
    out, names = [], set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise MessagesError(f"tools.{i}: Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise MessagesError(
                f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )
        if name in names:
            raise MessagesError("tools: Tool names must be unique.")
        names.add(name)
        schema = tool.get("input_schema")
        if schema is None:
            raise MessagesError(f"tools.{i}.custom.input_schema: Field required")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise MessagesError(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        if tool.get("strict") is True:
            try:
                check_anthropic(schema, f"tools.{i}.custom.input_schema")
            except SchemaError as e:
                raise MessagesError(str(e)) from None
        out.append(tool)
    return out


def _check_choice(params: Json, tools: list[Json]) -> None:
    choice = params.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in CHOICES:
        raise MessagesError(
            "tool_choice: Input should be an object with 'type' 'auto', 'any', 'tool' or 'none'"
        )
    if not params.get("tools") and choice["type"] != "none":
        raise MessagesError("tool_choice: tool_choice may only be specified while providing tools")
    if choice["type"] == "tool" and choice.get("name") not in {t["name"] for t in tools}:
        raise MessagesError(f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")
    thinking = params.get("thinking")
    forced = choice["type"] in ("any", "tool")
    if forced and isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        raise MessagesError("Thinking may not be enabled when tool_choice forces tool use.")


def output_schema(params: Json) -> Json | None:
    """The schema of `output_config.format` (structured outputs), or None."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if not isinstance(fmt, dict):
        return None
    schema = fmt.get("schema")
    return schema if isinstance(schema, dict) else None


def _check_output_format(params: Json) -> None:
    config = params.get("output_config")
    if config is None:
        return
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise MessagesError("output_config.format.type: Input should be 'json_schema'")
    if not isinstance(fmt.get("schema"), dict):
        raise MessagesError("output_config.format.schema: Field required")
    try:
        check_anthropic(fmt["schema"], "output_config.format.schema")
    except SchemaError as e:
        raise MessagesError(str(e)) from None


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return text_tokens(block)
    if isinstance(block, dict):
        if isinstance(block.get("text"), str):
            return text_tokens(block["text"])
        media = usage_rules.anthropic_media_tokens(block, text_tokens)
        if media is not None:
            return media
    return json_tokens(block)


def _ttl(block: Any) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("cache_control"), dict):
        return None
    return "1h" if block["cache_control"].get("ttl") == "1h" else "5m"


def count_prompt(params: Json) -> Prompt:
    """Prompt tokens and cache breakpoints of checked `params` under the token rule."""
    blocks: list[tuple[Any, int]] = []
    for tool in params.get("tools") or []:
        blocks.append((tool, _block_tokens(tool)))
    system = params.get("system")
    if isinstance(system, str):
        blocks.append((system, text_tokens(system)))
    elif isinstance(system, list):
        blocks.extend((b, _block_tokens(b)) for b in system)
    for m in params["messages"]:
        content = m["content"]
        parts = [content] if isinstance(content, str) else list(content)
        for j, part in enumerate(parts):
            blocks.append((part, _block_tokens(part) + (_PER_MESSAGE if j == 0 else 0)))
    total, breakpoints = 0, []
    digest = hashlib.blake2b(str(params["model"]).encode(), digest_size=16)
    for block, n in blocks:
        total += n
        digest.update(orjson.dumps(block, option=orjson.OPT_SORT_KEYS))
        ttl = _ttl(block)
        if ttl is not None:
            breakpoints.append(Breakpoint(digest.copy().hexdigest(), total, ttl))
    if params.get("tools"):
        total += usage_rules.anthropic_tool_prompt(str(params["model"]), params.get("tool_choice"))
    # Structured outputs add their schema to the prompt, after every cacheable block.
    config = params.get("output_config")
    extra = text_tokens(orjson.dumps(config).decode()) if isinstance(config, dict) else 0
    return Prompt(total + _PRIME + extra, tuple(breakpoints))


@dataclass(frozen=True)
class CacheUse:
    """How one request's prompt splits between the cache and plain input."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


def cache_use(prompt: Prompt, seen: Callable[[Breakpoint], bool]) -> CacheUse:
    """Split a prompt: the longest prefix `seen` is read, the rest up to the last
    breakpoint written (each piece in the bucket of the breakpoint closing it)."""
    read_upto = 0
    for bp in prompt.breakpoints:
        if seen(bp):
            read_upto = bp.tokens
    writes = {"5m": 0, "1h": 0}
    done = read_upto
    for bp in prompt.breakpoints:
        if bp.tokens > done:
            writes[bp.ttl] += bp.tokens - done
            done = bp.tokens
    return CacheUse(read_upto, writes["5m"], writes["1h"])


def first_seen_plan(prompt: Prompt, seen: set[str]) -> list[str]:
    """The breakpoint prefixes of `prompt` already in `seen` (then adds the rest): the batch
    rule, where the first request in request order carrying a prefix writes it."""
    hits = [bp.prefix for bp in prompt.breakpoints if bp.prefix in seen]
    seen.update(bp.prefix for bp in prompt.breakpoints)
    return hits


def _after_result(params: Json) -> bool:
    """Whether the last turn hands back a tool's result (then `auto` answers in text)."""
    last = params["messages"][-1]
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _called(params: Json, h: bytes) -> tuple[Json | None, bool]:
    """(the tool the reply calls, whether the call was forced)."""
    tools = custom_tools(params)
    choice = params.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type")
    if not tools or kind == "none" or (kind == "auto" and _after_result(params)):
        return None, False
    if kind == "tool":
        return next(t for t in tools if t["name"] == choice.get("name")), True
    return tools[h[8] % len(tools)], kind == "any"


def _content(
    params: Json, h: bytes, salt: str, prompt: int, cap: int, length_rate: float, ceiling: int
) -> tuple[list[Json], int, str]:
    """(content blocks, output tokens, stop_reason) of the reply."""
    tool, forced = _called(params, h)
    if tool is not None:
        blocks: list[Json] = []
        used = 0
        if not forced:  # `auto`: a short word before the call, as Claude writes one
            used = min(cap, 4 + h[9] % 9)
            blocks.append({"type": "text", "text": words(h, used)})
        if used >= cap:
            return blocks, used, "max_tokens"
        rng = random.Random(h + b"tool_use")
        raw = orjson.dumps(instance(tool["input_schema"], rng)).decode()
        budget = cap - used - text_tokens(tool["name"])
        text, n, hit = fit(raw, h, budget, length_rate) if budget > 0 else ("", 0, True)
        ident = hashlib.blake2b(h + salt.encode() + b"toolu", digest_size=11).hexdigest()
        # A call the cap cuts is incomplete: its input is lost (retry with more max_tokens).
        block = {"type": "tool_use", "id": "toolu_01" + ident, "name": tool["name"]}
        block["input"] = {} if hit else orjson.loads(text)
        blocks.append(block)
        if hit:
            return blocks, cap, "max_tokens"
        return blocks, used + text_tokens(tool["name"]) + n, "tool_use"
    schema = output_schema(params)
    if schema is not None:
        raw = orjson.dumps(instance(schema, random.Random(h + b"output"))).decode()
        text, n, hit = fit(raw, h, cap, length_rate)
    else:
        n, hit = text_length(h, prompt, cap, length_rate, ceiling)
        text = words(h, n)
    return [{"type": "text", "text": text}], n, "max_tokens" if hit else "end_turn"


def message(
    params: Json,
    *,
    salt: str,
    cache: CacheUse,
    prompt: Prompt,
    service_tier: str,
    length_rate: float = 0.0,
    ceiling: int = 0,
) -> Json:
    """The synthetic `message` for checked `params`, with its usage; `ceiling` is the
    model's largest output."""
    h = body_hash(params)
    cap = int(params["max_tokens"])
    content, n, stop = _content(params, h, salt, prompt.tokens, cap, length_rate, ceiling)
    ident = hashlib.blake2b(h + salt.encode(), digest_size=12).hexdigest()
    written = cache.write_5m + cache.write_1h
    usage: Json = {
        "input_tokens": prompt.tokens - cache.read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "output_tokens": n,
        "service_tier": service_tier,
    }
    return {
        "id": "msg_01" + ident,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def error_envelope(type: str, message: str, request_id: str | None = None) -> Json:
    """Anthropic's error envelope; with `request_id` as nested in an `errored` result."""
    out: Json = {"type": "error", "error": {"type": type, "message": message}}
    if request_id is not None:
        out["request_id"] = request_id
    return out
