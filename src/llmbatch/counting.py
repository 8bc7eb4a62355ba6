"""Counting a request body's input tokens: OpenAI's vocabularies (bpe-openai), Claude's
calibration on top of them, and the longest output a model may write. Pure functions; which
count a provider uses is its format's choice (`Format.input_tokens`), not this module's."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Protocol

import orjson

# Claude tokens per o200k token: 1.0 for Latin text and code, 1.48 for pure CJK, linear in
# between (fitted on benchmarks/data/estimate_set.jsonl; see the module docstring).
ANTHROPIC_RATIO, ANTHROPIC_CJK_EXTRA = 1.0, 0.48
ANTHROPIC_PER_MESSAGE = 4  # role markers around each message
ANTHROPIC_BASE = 6
PER_MESSAGE, PER_NAME, PRIME = 3, 1, 3  # OpenAI's published chat framing
IMAGE_TOKENS = 85  # a low-detail image; larger ones cost more and are not sized here
# The longest output a model may write, by name prefix (longest prefix wins): the worst case
# of a request without its own cap. Providers' published limits.
MAX_OUTPUT: dict[str, int] = {
    "gpt-3.5": 4_096,
    "gpt-4": 8_192,
    "gpt-4-turbo": 4_096,
    "gpt-4o": 16_384,
    "gpt-4o-mini": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.5": 16_384,
    "gpt-5": 128_000,
    "o1": 100_000,
    "o1-mini": 65_536,
    "o3": 100_000,
    "o3-mini": 100_000,
    "o4-mini": 100_000,
    "claude-3-haiku": 4_096,
    "claude-3-5-haiku": 8_192,
    "claude-3-5-sonnet": 8_192,
    "claude-3-7-sonnet": 64_000,
    "claude-sonnet-4": 64_000,
    "claude-haiku-4": 64_000,
    "claude-opus-4": 32_000,
    "claude-opus-4-5": 64_000,
}
NO_OUTPUT_ENDPOINTS = ("/v1/embeddings", "/v1/moderations")
CAP_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@lru_cache(maxsize=2)
def _encoding(name: str) -> _Encoding:
    import bpe_openai

    enc: _Encoding = bpe_openai.get_encoding(name)
    return enc


def encoding_name(model: str) -> str:
    """The OpenAI vocabulary a model uses: cl100k for GPT-4/3.5 and embeddings, else o200k."""
    old = ("gpt-4-", "gpt-3.5", "text-embedding", "davinci", "babbage")
    return "cl100k_base" if model == "gpt-4" or model.startswith(old) else "o200k_base"


LONG_TEXT = 500_000  # bpe-openai refuses a text of 1M characters: count it in pieces


def text_tokens(text: str, encoding: str = "o200k_base") -> int:
    enc = _encoding(encoding)
    n = 0
    while len(text) > LONG_TEXT:
        # cut before a space, where the pre-tokenizer starts a new token anyway
        cut = text.rfind(" ", 0, LONG_TEXT)
        cut = cut if cut > 0 else LONG_TEXT
        n += len(enc.encode_ordinary(text[:cut]))
        text = text[cut:]
    return n + len(enc.encode_ordinary(text)) if text else n


def model_max_output(model: str) -> int | None:
    """The model's maximum output tokens, or None when we do not know the model."""
    best = max((p for p in MAX_OUTPUT if model.startswith(p)), key=len, default=None)
    return MAX_OUTPUT[best] if best else None


def output_cap(body: dict[str, Any]) -> int | None:
    """The request's own output cap, if it sets one."""
    for k in CAP_KEYS:
        v = body.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def claude_tokens(text: str) -> float:
    """Calibrated Claude tokens of a text: its o200k count scaled by how much of it is CJK."""
    if not text:
        return 0.0
    share = len(_CJK.findall(text)) / len(text) if not text.isascii() else 0.0
    return text_tokens(text) * (ANTHROPIC_RATIO + ANTHROPIC_CJK_EXTRA * share)


class _Counter:
    """Counts one request body's input tokens with one vocabulary (or Claude's calibration)."""

    def __init__(self, encoding: str, *, claude: bool = False) -> None:
        self.enc, self.claude = encoding, claude

    def text(self, s: str) -> int:
        return round(claude_tokens(s)) if self.claude else text_tokens(s, self.enc)

    def json(self, v: Any) -> int:
        return self.text(orjson.dumps(v).decode()) if v else 0

    def content(self, c: Any) -> int:
        if isinstance(c, str):
            return self.text(c)
        if isinstance(c, list):
            return sum(self.part(p) for p in c)
        if isinstance(c, dict):
            return self.part(c)
        return 0

    def part(self, p: Any) -> int:
        if isinstance(p, str):
            return self.text(p)
        if not isinstance(p, dict):
            return 0
        kind = str(p.get("type", ""))
        if "image" in kind:
            return IMAGE_TOKENS
        if isinstance(p.get("text"), str):
            return self.text(p["text"])
        if kind in ("tool_use", "function_call"):
            return self.text(str(p.get("name", ""))) + self.json(p.get("input", p.get("arguments")))
        if kind == "tool_result":
            return self.content(p.get("content"))
        return self.json({k: v for k, v in p.items() if k != "type"})

    def messages(self, messages: Any) -> int:
        n = 0
        for m in messages if isinstance(messages, list) else ():
            if not isinstance(m, dict):
                continue
            n += PER_MESSAGE + self.text(str(m.get("role", "")))
            n += self.content(m.get("content"))
            if m.get("name"):
                n += PER_NAME + self.text(str(m["name"]))
            if m.get("tool_calls"):
                n += self.json(m["tool_calls"])
        return n


def calibrated_input_tokens(body: dict[str, Any]) -> int:
    """A Messages API body's input tokens: o200k counts calibrated to Claude's tokenizer."""
    c = _Counter("o200k_base", claude=True)
    system = body.get("system")
    n = c.content(system) if system is not None else 0
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            n += c.content(m.get("content"))
    n += c.json(body.get("tools")) + c.json(body.get("tool_choice"))
    turns = len(body.get("messages") or ()) + (system is not None)
    return n + ANTHROPIC_PER_MESSAGE * turns + ANTHROPIC_BASE


def openai_input_tokens(endpoint: str, model: str, body: dict[str, Any]) -> int:
    """A body's input tokens counted with its model's vocabulary, per OpenAI endpoint shape."""
    c = _Counter(encoding_name(model))
    if endpoint in ("/v1/embeddings", "/v1/moderations", "/v1/completions"):
        value = body.get("prompt" if endpoint == "/v1/completions" else "input")
        items = value if isinstance(value, list) else [value]
        if items and all(isinstance(t, int) for t in items):
            return len(items)  # already token ids
        return sum(len(i) if isinstance(i, list) else c.content(i) for i in items)
    if endpoint == "/v1/responses":
        value = body.get("input")
        if isinstance(value, str):
            n = PRIME + PER_MESSAGE + c.text(value)
        else:
            n = PRIME + c.messages(value)
        if isinstance(body.get("instructions"), str):
            n += PER_MESSAGE + c.text(body["instructions"])
        return n + c.json(body.get("tools")) + c.json(body.get("text"))
    n = PRIME + c.messages(body.get("messages"))
    return n + sum(c.json(body.get(k)) for k in ("tools", "functions", "response_format"))
