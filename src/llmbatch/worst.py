"""The most one request can cost in batch: a bound on what the provider may bill for it, with
every multiplier counted. A budget reserves this with the batch's intent and settles it to
the actual cost when the results arrive, so a bound that is too high only delays requests
(until earlier batches settle), while one too low lets a budget be passed.

Input tokens, from the request body (never from a tokenizer: this runs as batches are cut):

- *Text*: its UTF-8 bytes. No tokenizer yields more than one token a byte; a real count is
  3 to 4 times smaller for English, closer for code, CJK and JSON.
- *Framing*: `PER_PART` tokens for each message and content part, and `BASE` a request
  (OpenAI documents 3 a message, 1 a name, 3 to prime the reply; Anthropic a few).
- *Definitions* (`tools`, `functions`, `response_format`, the Responses `text` format,
  `tool_choice`, Anthropic's `output_format` / `output_config`): their JSON's bytes, and when
  tools are present the tool-use system prompt the provider adds (Anthropic documents at
  most 530 tokens; OpenAI documents none, `Format.tool_prompt_tokens` is our margin).
- *Images*: the most the provider's rule gives any image on that model (`image_bound`), by
  URL, file id or inline (an inline image's base64 is not counted as text).
- *Documents and files* (a PDF by URL, file id or inline): their size is not known here, so
  the input is bounded by the model's context window (a longer prompt is refused, unbilled).
- *Unknown context*: `previous_response_id`, `conversation` or a stored `prompt` bring a
  context nobody sent with the request. Under a budget such a request waits, unless it caps
  its own output and its queue's `[budgets] assume_context_tokens` says how large that
  context may be; then that many tokens are added.
- *Hosted tools* (web search, file search, code interpreter, MCP, …) bill per call and bring
  content of their own: no bound; under a budget they wait like an unpriced model.

Output tokens: the request's cap (`max_completion_tokens` / `max_tokens` /
`max_output_tokens`; legacy completions default to 16) times the completions it is billed for
(chat `n`; completions `max(n, best_of)`), plus a `prediction`'s text (rejected predicted
tokens are billed as output). Without a cap: the model's largest output, or its context
window, or `UNKNOWN_MAX` tokens.

Cache writes (Anthropic): a request that marks any block with `cache_control` may write its
whole input to the cache, billed at 1.25 times the input price (5-minute) or twice it
(1-hour): it is priced as writes of its longest TTL.

The input bound never passes the context window (a longer prompt is refused, unbilled). The
sum is priced at the batch price of the tier its input bound falls in, rounded up to 1e-6 USD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import orjson

from llmbatch.pricing import ModelPrices, Tokens, free
from llmbatch.providers import format_or_base

UNKNOWN_MAX = 1_000_000  # no known window or largest output: the largest there is
BASE = 16  # tokens a request adds whatever it holds (priming, role markers, separators)
PER_PART = 4  # tokens each message or content part adds (OpenAI: 3 a message, 1 a name)
OUTPUT_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
DEFINITIONS = (
    "tools",
    "functions",
    "response_format",
    "text",
    "tool_choice",
    "output_format",
    "output_config",
)
UNKNOWN_CONTEXT = ("previous_response_id", "conversation", "prompt")
NOT_SENT = (
    "model",
    "metadata",
    "user",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "stream_options",
)
CLIENT_TOOLS = ("function", "custom", None)
# Anthropic tools that run on the client (the text editor, bash, computer use) are defined by
# a `type` too; only these run on Anthropic's side and bring content and fees of their own.
_ONE_M = 1_000_000

# The most one image can cost on a model (OpenAI's vision guide): tile models 8 tiles
# (2048 x 768 after scaling) plus the base, `low` detail the base; patch models 1,536 patches
# times their multiplier whatever the detail. Longest prefix wins.
IMAGE_TILES: dict[str, tuple[int, int]] = {
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "gpt-4-turbo": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
    "computer-use": (65, 129),
}
IMAGE_PATCHES: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
    "o4-mini": 1.72,
}
MAX_TILES, MAX_PATCHES = 8, 1536
UNKNOWN_IMAGE = 4_000  # a model none of the rules name: above every patch model's maximum


@dataclass(frozen=True, slots=True)
class WorstCase:
    """One request's bound: tokens, micro-USD (None: unpriced or unbounded), how output was
    bounded, and why no budget can bound it (None: it can be)."""

    input_tokens: int
    output_tokens: int
    micro: int | None
    bound: str  # "request" | "model maximum" | "context window" | "unknown maximum"
    hold: str | None = None  # the reason it waits under a budget, if it must
    allowable: bool = False  # the hold is lifted by allow_unpriced (an unbounded fee)


@dataclass(frozen=True, slots=True)
class Rates:
    """Batch USD per token of one model and tier: input, output, and cache writes."""

    input: Decimal
    output: Decimal
    write_5m: Decimal
    write_1h: Decimal


def rates(prices: ModelPrices, tier: int) -> Rates | None:
    """Per-token batch rates in a tier, from the price of a million of each; None if unpriced."""
    m = _ONE_M
    got = [
        prices.cost(t, tier, batch=True)
        for t in (
            Tokens(input=m),
            Tokens(output=m),
            Tokens(input=m, write_5m=m),
            Tokens(input=m, write_1h=m),
        )
    ]
    if any(v is None for v in got):
        return None
    i, o, w5, w1 = (v / m for v in got if v is not None)
    return Rates(i, o, max(w5, i), max(w1, w5, i))


def image_bound(provider: str, model: str, detail: object) -> int:
    """The most one image can cost on this model (see IMAGE_TILES)."""
    fixed = format_or_base(provider).image_tokens
    if fixed is not None:
        return fixed
    patch = _longest(IMAGE_PATCHES, model)
    if patch is not None:
        return -(-int(MAX_PATCHES * IMAGE_PATCHES[patch] * 100) // 100)
    tile = _longest(IMAGE_TILES, model)
    if tile is None:
        return UNKNOWN_IMAGE
    base, per = IMAGE_TILES[tile]
    return base if detail == "low" else base + MAX_TILES * per


def _longest(table: Mapping[str, Any], model: str) -> str | None:
    return max((p for p in table if model.startswith(p)), key=len, default=None)


def output_cap(body: Mapping[str, Any], endpoint: str = "") -> int | None:
    """The request's own bound on output tokens, if it sets one."""
    for key in OUTPUT_CAPS:
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    if endpoint == "/v1/completions":
        return 16  # the service's default for legacy completions
    return None


def billed_completions(body: Mapping[str, Any], endpoint: str) -> int:
    """How many completions a request is billed for: chat `n`, completions max(n, best_of)."""
    keys = ("n", "best_of") if endpoint == "/v1/completions" else ("n",)
    found = [v for k in keys if isinstance(v := body.get(k), int) and not isinstance(v, bool)]
    return max([1, *found])


@dataclass(slots=True)
class _Walk:
    """What walking a body found: text bytes, parts, images, documents, cache TTLs, holds."""

    provider: str
    model: str
    text: int = 0
    parts: int = 0
    images: int = 0
    documents: bool = False
    ttl: str | None = None  # the longest cache TTL asked for: "5m" or "1h"
    context: str | None = None  # the unknown-context field found
    hosted: str | None = None  # a hosted tool found

    def value(self, v: Any) -> None:
        stack = [v]
        while stack:
            x = stack.pop()
            if isinstance(x, str):
                self.text += len(x) if x.isascii() else len(x.encode("utf-8", "surrogatepass"))
            elif isinstance(x, dict):
                self.parts += 1
                if "cache_control" in x:
                    self._cache(x["cache_control"])
                if not self._media(x):
                    stack.extend(x.values())
            elif isinstance(x, list):
                for y in x:
                    if type(y) is int:
                        self.text += 1  # a token id (embeddings, completions)
                    else:
                        stack.append(y)

    def _cache(self, spec: object) -> None:
        ttl = spec.get("ttl") if isinstance(spec, dict) else None
        self.ttl = "1h" if ttl == "1h" or self.ttl == "1h" else "5m"

    def _media(self, part: dict[str, Any]) -> bool:
        """Count an image or document part by its rule; False if it is neither."""
        kind = part.get("type")
        if kind in ("image_url", "input_image", "image") or (kind is None and "image_url" in part):
            spec = part.get("image_url")
            detail = spec.get("detail") if isinstance(spec, dict) else part.get("detail")
            self.images += image_bound(self.provider, self.model, detail)
            return True
        if kind in ("file", "input_file") or format_or_base(self.provider).document_part(part):
            self.documents = True
            return True
        if kind == "document":
            source = part.get("source")
            if isinstance(source, dict) and source.get("type") in ("text", "content"):
                return False  # a plain-text document: its text is counted as text
            self.documents = True
            return True
        return False

    def tools(self, tools: object) -> None:
        for t in tools if isinstance(tools, list) else ():
            if isinstance(t, dict) and "cache_control" in t:
                self._cache(t["cache_control"])
            kind = t.get("type") if isinstance(t, dict) else None
            if kind in CLIENT_TOOLS:
                continue
            name = str(kind)
            prefixes = format_or_base(self.provider).server_tool_prefixes
            if prefixes is None or name.startswith(prefixes):
                self.hosted = self.hosted or name


def worst_case(
    prices: ModelPrices,
    endpoint: str,
    body: Mapping[str, Any],
    context_window: int | None,
    *,
    max_output: int | None = None,
    assume_context: int | None = None,
    cache: dict[int, Rates | None] | None = None,
) -> WorstCase:
    """The most one request can cost in batch (see the module docstring)."""
    walk = _Walk(prices.provider, prices.model)
    definitions = 0
    for key, v in body.items():
        if key in NOT_SENT:
            continue
        if key in DEFINITIONS:
            if v is not None and v is not False:
                definitions += len(orjson.dumps(v))
                if key == "tools":
                    walk.tools(v)
                    if isinstance(v, dict) or (isinstance(v, list) and v):
                        definitions += format_or_base(prices.provider).tool_prompt_tokens
            continue
        if key in UNKNOWN_CONTEXT and v and (endpoint == "/v1/responses" or key != "prompt"):
            walk.context = walk.context or key
            continue
        if key == "web_search_options" and v is not None:
            walk.hosted = walk.hosted or "web_search"
            continue
        if key == "mcp_servers" and v:
            walk.hosted = walk.hosted or "mcp"
            continue
        if key == "cache_control":
            walk._cache(v)
            continue
        if key == "prediction":
            continue  # counted as output below
        walk.value(v)
    tokens_in = BASE + walk.text + PER_PART * walk.parts + walk.images + definitions
    window = context_window or None
    own_cap, candidates = format_or_base(prices.provider).output_bound(body)
    cap = output_cap(body, endpoint) or own_cap
    hold, allowable = None, False
    if walk.context is not None:
        if cap is None or assume_context is None:
            hold = (
                f"{walk.context} brings a context of unknown size: a budget can send such a "
                "request only when it sets max_output_tokens and its queue has [budgets] "
                "assume_context_tokens (llmbatch budget set --assume-context-tokens N)"
            )
        else:
            tokens_in += assume_context
    if walk.hosted is not None:
        hold, allowable = (
            f"hosted tool {walk.hosted} bills per call and brings content of its own, so no "
            "budget can bound it; set [budgets] allow_unpriced = true (or --allow-unpriced) "
            "to let it spend uncounted beyond its tokens",
            hold is None,
        )
    if walk.documents:
        tokens_in = max(tokens_in, window or UNKNOWN_MAX)
    if window:
        tokens_in = min(tokens_in, window)
    if endpoint in ("/v1/embeddings", "/v1/moderations"):
        out, bound = 0, "request"
    elif cap is not None:
        out, bound = cap, "request"
    elif max_output:
        out, bound = max_output, "model maximum"
    elif window:
        out, bound = window, "context window"
    else:
        out, bound = UNKNOWN_MAX, "unknown maximum"
    out = out * max(billed_completions(body, endpoint), candidates) + _prediction(body)
    if free(endpoint, prices.model):
        return WorstCase(tokens_in, out, 0, bound, hold, allowable)
    tier = prices.tier(tokens_in)
    if cache is None:
        cache = {}
    if tier not in cache:
        cache[tier] = rates(prices, tier) if prices.priced else None
    r = cache[tier]
    if r is None:
        return WorstCase(tokens_in, out, None, bound, hold, allowable)
    per_in = {None: r.input, "5m": r.write_5m, "1h": r.write_1h}[walk.ttl]
    return WorstCase(
        tokens_in, out, micro(per_in * tokens_in + r.output * out), bound, hold, allowable
    )


def micro(usd: Decimal) -> int:
    """USD as whole 1e-6 USD, rounded up (a reservation never falls short)."""
    return int((usd * _ONE_M).to_integral_value(rounding=ROUND_CEILING))


def _prediction(body: Mapping[str, Any]) -> int:
    p = body.get("prediction")
    if not isinstance(p, dict):
        return 0
    w = _Walk("", "")
    w.value(p.get("content"))
    return w.text
