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
- *Output*: ``8 + h mod 248`` words where `h` hashes the canonical `params`, capped at
  `max_tokens` (`stop_reason: "max_tokens"` when the cap cuts it), else `"end_turn"`; a
  `length_rate` share is forced to the cap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmbatch.emulator import usage_rules
from llmbatch.emulator.synth import body_hash, reply_text, share, text_tokens

Json = dict[str, Any]

_PER_MESSAGE = 3
_PRIME = 3
ROLES = ("user", "assistant")


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


def check_params(params: Any, models: Sequence[str]) -> None:
    """Raise MessagesError for params the Messages API would refuse."""
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
    if model not in models:
        raise MessagesError(f"model: {model}", "not_found_error", 404)


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return text_tokens(block)
    if isinstance(block, dict):
        if isinstance(block.get("text"), str):
            return text_tokens(block["text"])
        media = usage_rules.anthropic_media_tokens(block, text_tokens)
        if media is not None:
            return media
    return text_tokens(orjson.dumps(block).decode())


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
    return Prompt(total + _PRIME, tuple(breakpoints))


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


def message(
    params: Json,
    *,
    salt: str,
    cache: CacheUse,
    prompt: Prompt,
    service_tier: str,
    length_rate: float = 0.0,
) -> Json:
    """The synthetic `message` for checked `params`, with its usage."""
    h = body_hash(params)
    cap = int(params["max_tokens"])
    natural = 8 + int.from_bytes(h[0:4], "big") % 248
    if share(h, 4) < length_rate or natural > cap:
        n, stop = cap, "max_tokens"
    else:
        n, stop = natural, "end_turn"
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
        "content": [{"type": "text", "text": reply_text(h, n)}],
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
