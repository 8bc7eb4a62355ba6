"""Usage of one result, read with each endpoint's and provider's own field names (each
provider's format picks the reader: `read_token_usage`, `read_cache_usage`).

- Chat: `prompt_tokens` / `completion_tokens`, `prompt_tokens_details.cached_tokens`,
  `completion_tokens_details.reasoning_tokens` (reasoning is already inside the output).
- Responses: `input_tokens` / `output_tokens`, `input_tokens_details.cached_tokens`,
  `output_tokens_details.reasoning_tokens`.
- Embeddings: `prompt_tokens` only. Moderations: free, no usage at all.
- Anthropic: `input_tokens` excludes cache traffic, so the input we store is
  `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`, with the writes
  split into 5-minute and 1-hour ones (`cache_creation.ephemeral_{5m,1h}_input_tokens`;
  without the split, all writes are 5-minute ones, the API's default).

A missing or negative field is flagged (`flag`), and its tokens are None: never summed as 0.
So is a count above `MAX_TOKENS` (no request uses a trillion tokens): a provider's number
too large for a database integer is an anomaly to flag, not an OverflowError at insert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from genai_prices import Usage

FREE_ENDPOINTS = ("/v1/moderations",)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Usage totals in genai-prices' terms: `input` counts every input token, cached reads and
    cache writes included; `output` counts every output token, reasoning included."""

    input: int = 0
    cached: int = 0  # cache reads (OpenAI cached_tokens, Anthropic cache_read_input_tokens)
    write_5m: int = 0  # Anthropic cache writes, 5-minute TTL
    write_1h: int = 0  # Anthropic cache writes, 1-hour TTL
    output: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )

    def usage(self) -> Usage:
        from genai_prices import Usage  # the price table loads only when something is priced

        u = Usage(input_tokens=self.input, output_tokens=self.output)
        if self.cached:
            u.cache_read_tokens = self.cached
        if self.write_5m or self.write_1h:
            u.cache_write_tokens = self.write_5m + self.write_1h
            u.cache_write_1h_tokens = self.write_1h
        return u


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Token usage of one result, as stored with it."""

    input: int | None  # every input token, cached reads and cache writes included
    output: int | None  # every output token, reasoning included
    cached: int = 0
    write_5m: int = 0
    write_1h: int = 0
    reasoning: int = 0
    flag: str | None = None  # None | "missing: <field>" | "negative: <field>"

    def tokens(self) -> Tokens | None:
        """The priceable totals, or None when the usage is flagged."""
        if self.flag is not None or self.input is None or self.output is None:
            return None
        return Tokens(self.input, self.cached, self.write_5m, self.write_1h, self.output)


FREE = UsageRecord(0, 0)
MAX_TOKENS = 10**12  # far above any context window; sums of many stay within 64 bits


class _Bad(Exception):
    pass


def _field(d: Any, *path: str, required: bool = False) -> int:
    v: Any = d
    for p in path:
        v = v.get(p) if isinstance(v, dict) else None
    if v is None:
        if required:
            raise _Bad(f"missing: {'.'.join(path)}")
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
        raise _Bad(f"not a count: {'.'.join(path)}={v!r}")
    if v < 0:
        raise _Bad(f"negative: {'.'.join(path)}={v}")
    return int(v)


def read_usage_any(usage: Any, endpoint: str | None = None) -> UsageRecord:
    """Usage in whichever shape it came: the cache fields' shape, or the token fields'."""
    if (
        endpoint == "/v1/chat/completions"
        and type(usage) is dict
        and "prompt_tokens" in usage
        and "cache_read_input_tokens" not in usage
        and "cache_creation_input_tokens" not in usage
    ):  # the common line, as read_token_usage reads it in fewer steps (once per result line)
        fast = _chat(usage, endpoint)
        if fast is not None:
            return _in_range(fast)
    if isinstance(usage, dict) and (
        "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage
    ):
        return read_cache_usage(usage, endpoint)
    return read_token_usage(usage, endpoint)


def read_token_usage(usage: Any, endpoint: str | None = None) -> UsageRecord:
    """Usage with the Chat, Completions, Embeddings or Responses field names."""
    return _in_range(_read(usage, endpoint, _tokens))


def read_cache_usage(usage: Any, endpoint: str | None = None) -> UsageRecord:
    """Usage whose `input_tokens` leaves out cache reads and writes (Anthropic's shape)."""
    return _in_range(_read(usage, endpoint, _cache))


def _in_range(record: UsageRecord) -> UsageRecord:
    # a plain loop, not any() over a generator: this runs once per result line
    r = record
    for n in (r.input, r.output, r.cached, r.write_5m, r.write_1h, r.reasoning):
        if n is not None and n > MAX_TOKENS:
            return UsageRecord(None, None, flag=f"out of range: a count above {MAX_TOKENS:,}")
    return record


def _read(
    usage: Any, endpoint: str | None, shape: Callable[[dict[str, Any], str | None], UsageRecord]
) -> UsageRecord:
    if endpoint in FREE_ENDPOINTS:
        return FREE
    if not isinstance(usage, dict):
        return UsageRecord(None, None, flag="missing: usage")
    try:
        return shape(usage, endpoint)
    except _Bad as exc:
        return UsageRecord(None, None, flag=str(exc))


def _tokens(usage: dict[str, Any], endpoint: str | None) -> UsageRecord:
    if "prompt_tokens" in usage:  # chat, completions, embeddings
        fast = _chat(usage, endpoint)
        if fast is not None:
            return fast
        inp = _field(usage, "prompt_tokens", required=True)
        embeddings = endpoint == "/v1/embeddings" or (
            endpoint is None and "completion_tokens" not in usage
        )
        out = 0 if embeddings else _field(usage, "completion_tokens", required=True)
        cached = _field(usage, "prompt_tokens_details", "cached_tokens")
        reasoning = _field(usage, "completion_tokens_details", "reasoning_tokens")
    else:  # responses, images
        inp = _field(usage, "input_tokens", required=True)
        out = _field(usage, "output_tokens", required=True)
        cached = _field(usage, "input_tokens_details", "cached_tokens")
        reasoning = _field(usage, "output_tokens_details", "reasoning_tokens")
    if cached > inp or reasoning > out:
        return UsageRecord(None, None, flag="inconsistent: cached or reasoning above the total")
    return UsageRecord(inp, out, cached=cached, reasoning=reasoning)


def _chat(usage: dict[str, Any], endpoint: str | None) -> UsageRecord | None:
    """Chat completions usage as the API sends it, read fast; None: take the careful path."""
    if endpoint != "/v1/chat/completions":
        return None
    inp, out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    pd, cd = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
    cached = _zero(pd.get("cached_tokens")) if type(pd) is dict else 0 if pd is None else -1
    reasoning = _zero(cd.get("reasoning_tokens")) if type(cd) is dict else 0 if cd is None else -1
    if not (_count(inp) and _count(out) and _count(cached) and _count(reasoning)):
        return None
    if cached > inp or reasoning > out:
        return None
    return UsageRecord(inp, out, cached=cached, reasoning=reasoning)


def plain_counts(usage: Any, endpoint: str | None) -> tuple[int, int, int, int] | None:
    """(input, output, cached, reasoning) of a Chat or Responses usage in the shape the API
    sends (plain counts, no cache-write fields), exactly as `read_usage_any` reads it; None
    for anything else, which `read_usage_any` reads (a format's fast path: once a line)."""
    if type(usage) is not dict:
        return None
    if endpoint == "/v1/chat/completions":
        if "prompt_tokens" not in usage:
            return None
        inp, out = usage.get("prompt_tokens"), usage.get("completion_tokens")
        pd, cd = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
    elif endpoint == "/v1/responses":
        if "prompt_tokens" in usage:
            return None
        inp, out = usage.get("input_tokens"), usage.get("output_tokens")
        pd, cd = usage.get("input_tokens_details"), usage.get("output_tokens_details")
    else:
        return None
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        return None
    cached = pd.get("cached_tokens") if type(pd) is dict else 0 if pd is None else -1
    reasoning = cd.get("reasoning_tokens") if type(cd) is dict else 0 if cd is None else -1
    if cached is None:
        cached = 0
    if reasoning is None:
        reasoning = 0
    # plain non-negative ints (not bools, floats or strings), within the totals and the range
    if type(inp) is not int or type(out) is not int or type(cached) is not int:
        return None
    if type(reasoning) is not int or not 0 <= cached <= inp <= MAX_TOKENS:
        return None
    if not 0 <= reasoning <= out <= MAX_TOKENS:
        return None
    return inp, out, cached, reasoning


def _zero(v: Any) -> Any:
    return 0 if v is None else v


def _count(v: object) -> TypeGuard[int]:
    """A plain non-negative int (not a bool, a float or a string): the fast paths' test."""
    return type(v) is int and v >= 0


def _cache(usage: dict[str, Any], endpoint: str | None = None) -> UsageRecord:
    # The fast path: every field present or absent as the API sends them, all plain counts
    # (this runs once per result: 100,000 times a batch). Anything else takes the careful
    # path below, which says what is wrong.
    fresh, out = usage.get("input_tokens"), usage.get("output_tokens")
    read = _zero(usage.get("cache_read_input_tokens"))
    writes = _zero(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")
    if type(split) is dict:
        w5m = _zero(split.get("ephemeral_5m_input_tokens"))
        w1h = _zero(split.get("ephemeral_1h_input_tokens"))
    elif split is None:
        w5m, w1h = writes, 0
    else:
        w5m = w1h = None
    if (
        _count(fresh)
        and _count(out)
        and _count(read)
        and _count(writes)
        and _count(w5m)
        and _count(w1h)
        and w5m + w1h == writes
    ):
        return UsageRecord(fresh + read + writes, out, cached=read, write_5m=w5m, write_1h=w1h)
    return _cache_checked(usage)


def _cache_checked(usage: dict[str, Any]) -> UsageRecord:
    fresh = _field(usage, "input_tokens", required=True)
    out = _field(usage, "output_tokens", required=True)
    read = _field(usage, "cache_read_input_tokens")
    writes = _field(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        w1h = _field(split, "ephemeral_1h_input_tokens")
        w5m = _field(split, "ephemeral_5m_input_tokens")
        if w1h + w5m != writes:  # trust the split; the total is its sum
            writes = w1h + w5m
    else:
        w1h, w5m = 0, writes
    return UsageRecord(fresh + read + writes, out, cached=read, write_5m=w5m, write_1h=w1h)
