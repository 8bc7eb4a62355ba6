"""Deterministic synthetic responses, in the real shape of each endpoint.

**The emulator's token rule** (its own; llmbatch's estimator must never import it):

- *Text tokens*: the number of matches of the regex ``\\w+|[^\\w\\s]`` — each run of word
  characters is one token and each punctuation character is one token.
- *Chat / Responses prompt tokens*: the text tokens of every message's text content
  (string content, or the `text` of content parts), plus 3 per message, plus 1 per message
  `name`, plus 3 for priming the reply; plus the text tokens of `instructions` and of the
  JSON of `tools`, `functions` and `response_format` / `text` when present. Image and
  file parts count as the provider documents (`usage_rules.py`: by model, detail and size).
- *Completions / embeddings / moderations*: the text tokens of `prompt` / `input`
  (strings, or lists of strings; a list of token ids counts one token per id).
- *Output tokens*: ``8 + h mod 248`` where ``h`` is a hash of the canonical request body,
  capped at the request's `max_completion_tokens` / `max_tokens` / `max_output_tokens`
  (legacy completions default to 16, as the service does). A configurable share of
  requests (chosen by the same hash) is forced to hit the cap and ends with
  `finish_reason: "length"` (Responses: `status: "incomplete"`). Reasoning models (`o*`,
  `gpt-5*`) spend half of their output tokens on reasoning.
- Moderations are free: they add nothing to a batch's `usage`.

The response text is made of words from a fixed list, one token per word under the rule
above, so `completion_tokens` matches the text.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from llmbatch.emulator import usage_rules

Json = dict[str, Any]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORDS = [
    "the",
    "batch",
    "emulator",
    "answers",
    "every",
    "request",
    "with",
    "words",
    "chosen",
    "by",
    "a",
    "hash",
    "so",
    "that",
    "the",
    "same",
    "request",
    "always",
    "gets",
    "the",
    "same",
    "reply",
    "and",
    "the",
    "counts",
    "add",
    "up",
    "exactly",
    "while",
    "nobody",
    "pays",
    "anything",
    "for",
    "tokens",
    "that",
    "were",
    "never",
    "really",
    "generated",
    "by",
    "any",
    "model",
    "at",
    "all",
    "today",
]
_TEXT = [_WORDS[(i * 7 + i // len(_WORDS)) % len(_WORDS)] for i in range(8192)]
_PRIME = 3
_PER_MESSAGE = 3
_TINY_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)

#: Endpoint kinds, keyed by the path after an optional `/v1` prefix.
KINDS = {
    "/chat/completions": "chat",
    "/responses": "responses",
    "/embeddings": "embeddings",
    "/completions": "completions",
    "/moderations": "moderations",
    "/images/generations": "images",
    "/images/edits": "images",
    "/videos": "videos",
}


class RequestError(Exception):
    """The request body is invalid for its endpoint (HTTP 400 in real time, an error-file
    line in a batch)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


@dataclass(frozen=True)
class Usage:
    """Tokens one request used, in the batch object's terms."""

    input: int
    output: int
    reasoning: int = 0


def kind_of(endpoint: str) -> str | None:
    """The endpoint kind of a URL path such as `/v1/chat/completions`, or None."""
    path = endpoint[3:] if endpoint.startswith("/v1/") else endpoint
    return KINDS.get(path)


def text_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _content_tokens(content: Any, model: str = "") -> int:
    if isinstance(content, str):
        return text_tokens(content)
    n = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    n += text_tokens(part["text"])
                elif (media := usage_rules.openai_media_tokens(part, model)) is not None:
                    n += media
            elif isinstance(part, str):
                n += text_tokens(part)
    return n


def _json_tokens(value: Any) -> int:
    return text_tokens(orjson.dumps(value).decode()) if value else 0


def _messages_tokens(messages: list[Any], model: str = "") -> int:
    n = _PRIME
    for m in messages:
        if isinstance(m, dict):
            n += _PER_MESSAGE + _content_tokens(m.get("content"), model)
            n += 1 if m.get("name") else 0
        elif isinstance(m, str):
            n += _PER_MESSAGE + text_tokens(m)
    return n


def _inputs(value: Any, param: str) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]
        return list(value)
    raise RequestError(f"'{param}' must be a string or a non-empty array.", param)


def _input_tokens(item: Any) -> int:
    if isinstance(item, str):
        return text_tokens(item)
    if isinstance(item, list):
        return len(item) if all(isinstance(t, int) for t in item) else _content_tokens(item)
    if isinstance(item, dict):
        return _content_tokens(item.get("text") or item.get("content"))
    return 0


def prompt_tokens(kind: str, body: Json) -> int:
    """Prompt tokens of one request body under the emulator's token rule."""
    model = str(body.get("model") or "")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty array.", "messages")
        extra = sum(_json_tokens(body.get(k)) for k in ("tools", "functions", "response_format"))
        return _messages_tokens(messages, model) + extra
    if kind == "responses":
        value = body.get("input")
        if isinstance(value, str):
            n = _PRIME + _PER_MESSAGE + text_tokens(value)
        elif isinstance(value, list) and value:
            n = _messages_tokens(value, model)
        else:
            raise RequestError("'input' must be a string or a non-empty array.", "input")
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            n += _PER_MESSAGE + text_tokens(instructions)
        return n + sum(_json_tokens(body.get(k)) for k in ("tools", "text"))
    if kind in ("embeddings", "moderations"):
        return sum(_input_tokens(i) for i in _inputs(body.get("input"), "input"))
    if kind == "completions":
        return sum(_input_tokens(i) for i in _inputs(body.get("prompt"), "prompt"))
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("'prompt' must be a non-empty string.", "prompt")
    return text_tokens(prompt)


def embedding_inputs(body: Json) -> int:
    """How many inputs one embeddings request carries (the batch limit counts these)."""
    try:
        return len(_inputs(body.get("input"), "input"))
    except RequestError:
        return 1


def body_hash(body: Json) -> bytes:
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def share(h: bytes, offset: int) -> float:
    """A number in [0, 1) taken from bytes `offset..offset+4` of a hash."""
    return int.from_bytes(h[offset : offset + 4], "big") / 2**32


def _cap(kind: str, body: Json) -> int | None:
    keys = {
        "chat": ("max_completion_tokens", "max_tokens"),
        "responses": ("max_output_tokens",),
        "completions": ("max_tokens",),
    }.get(kind, ())
    for key in keys:
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RequestError(f"Invalid '{key}': must be an integer >= 1.", key)
            return value
    return 16 if kind == "completions" else None


def _words(h: bytes, n: int) -> str:
    start = int.from_bytes(h[12:16], "big") % 4096
    if n <= 4096:
        return " ".join(_TEXT[start : start + n])
    return " ".join(_TEXT[(start + i) % 8192] for i in range(n))


def reply_text(h: bytes, n: int) -> str:
    """`n` words (so `n` tokens under the rule) chosen by the hash `h`."""
    return _words(h, n)


def _is_reasoning(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5"))


def _output(kind: str, body: Json, h: bytes, length_rate: float) -> tuple[int, bool]:
    cap = _cap(kind, body)
    natural = 8 + int.from_bytes(h[0:4], "big") % 248
    if cap is not None and share(h, 4) < length_rate:
        return cap, True
    if cap is not None and natural >= cap:
        return cap, natural > cap
    return natural, False


def _ident(prefix: str, h: bytes, salt: str) -> str:
    return prefix + hashlib.blake2b(h + salt.encode(), digest_size=12).hexdigest()


def respond(
    kind: str,
    body: Json,
    *,
    model: str,
    created: int,
    salt: str,
    length_rate: float = 0.0,
    embedding_dimensions: int = 16,
) -> tuple[Json, Usage]:
    """The response body for one valid request and the usage it counts; raises RequestError
    for a body its endpoint would reject. `salt` varies ids between batches."""
    if body.get("stream") is True:
        raise RequestError("Streaming is not supported here.", "stream")
    prompt = prompt_tokens(kind, body)
    h = body_hash(body)
    if kind == "chat":
        return _chat(body, h, model, created, salt, prompt, length_rate)
    if kind == "responses":
        return _responses(body, h, model, created, salt, prompt, length_rate)
    if kind == "completions":
        n, hit = _output(kind, body, h, length_rate)
        choice = {"text": _words(h, n), "index": 0, "logprobs": None}
        choice["finish_reason"] = "length" if hit else "stop"
        billed = n * usage_rules.completions_billed(body)  # n and best_of: every one is paid
        counts = {"prompt_tokens": prompt, "completion_tokens": billed}
        counts["total_tokens"] = prompt + billed
        out = {"id": _ident("cmpl-", h, salt), "object": "text_completion", "created": created}
        out |= {"model": model, "choices": [choice], "usage": counts}
        return out, Usage(prompt, billed)
    if kind == "embeddings":
        return _embeddings(body, h, model, prompt, embedding_dimensions)
    if kind == "moderations":
        inputs = _inputs(body.get("input"), "input")
        result: Json = {"flagged": False, "categories": dict.fromkeys(_CATEGORIES, False)}
        result["category_scores"] = dict.fromkeys(_CATEGORIES, 0.0001)
        result["category_applied_input_types"] = {c: ["text"] for c in _CATEGORIES}
        out = {"id": _ident("modr-", h, salt), "model": model, "results": [result] * len(inputs)}
        return out, Usage(0, 0)
    if kind == "images":
        n = 272
        usage: Json = {"input_tokens": prompt, "output_tokens": n, "total_tokens": prompt + n}
        usage["input_tokens_details"] = {"text_tokens": prompt, "image_tokens": 0}
        return {"created": created, "data": [{"b64_json": _TINY_PNG}], "usage": usage}, Usage(
            prompt, n
        )
    out = {"id": _ident("video_", h, salt), "object": "video", "created_at": created}
    out |= {"status": "completed", "model": model, "progress": 100, "seconds": "4"}
    out |= {"size": "720x1280", "completed_at": created, "error": None}
    return out, Usage(prompt, 0)


_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _chat(
    body: Json, h: bytes, model: str, created: int, salt: str, prompt: int, length_rate: float
) -> tuple[Json, Usage]:
    n_choices = body.get("n") or 1
    if isinstance(n_choices, bool) or not isinstance(n_choices, int) or not 1 <= n_choices <= 8:
        raise RequestError("Invalid 'n': must be an integer between 1 and 8.", "n")
    n, hit = _output("chat", body, h, length_rate)
    reasoning = n // 2 if _is_reasoning(model) else 0
    choices = []
    for i in range(n_choices):
        message: Json = {"role": "assistant", "content": _words(h[i:] + h[:i], n - reasoning)}
        message |= {"refusal": None, "annotations": []}
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": None,
                "finish_reason": "length" if hit else "stop",
            }
        )
    out_tokens = n * n_choices
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": out_tokens,
        "total_tokens": prompt + out_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning * n_choices,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    out = {"id": _ident("chatcmpl-", h, salt), "object": "chat.completion", "created": created}
    out |= {"model": model, "choices": choices, "usage": usage, "service_tier": "default"}
    out["system_fingerprint"] = "fp_emulator"
    return out, Usage(prompt, out_tokens, reasoning * n_choices)


def _responses(
    body: Json, h: bytes, model: str, created: int, salt: str, prompt: int, length_rate: float
) -> tuple[Json, Usage]:
    n, hit = _output("responses", body, h, length_rate)
    reasoning = n // 2 if _is_reasoning(model) else 0
    text: Json = {"type": "output_text", "text": _words(h, n - reasoning), "annotations": []}
    text["logprobs"] = []
    message: Json = {"type": "message", "id": _ident("msg_", h, salt), "status": "completed"}
    message |= {"role": "assistant", "content": [text]}
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + n,
    }
    out: Json = {"id": _ident("resp_", h, salt), "object": "response", "created_at": created}
    out |= {"status": "incomplete" if hit else "completed", "error": None}
    out["incomplete_details"] = {"reason": "max_output_tokens"} if hit else None
    out |= {"instructions": body.get("instructions"), "max_output_tokens": _cap("responses", body)}
    out |= {"model": model, "output": [message], "parallel_tool_calls": True}
    out |= {"previous_response_id": None, "reasoning": {"effort": None, "summary": None}}
    out |= {
        "store": False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
    }
    out |= {"tool_choice": "auto", "tools": [], "top_p": body.get("top_p", 1.0)}
    out |= {"truncation": "disabled", "usage": usage, "user": None, "metadata": {}}
    return out, Usage(prompt, n, reasoning)


def _embeddings(
    body: Json, h: bytes, model: str, prompt: int, default_dims: int
) -> tuple[Json, Usage]:
    inputs = _inputs(body.get("input"), "input")
    dims = body.get("dimensions") or default_dims
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise RequestError(
            "Invalid 'dimensions': must be an integer between 1 and 4096.", "dimensions"
        )
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i in range(len(inputs)):
        seed = hashlib.blake2b(h + i.to_bytes(4, "big"), digest_size=64).digest()
        raw = [((seed[j % 64] + j * 31) % 251) / 125.0 - 1.0 for j in range(dims)]
        norm = sum(x * x for x in raw) ** 0.5 or 1.0
        vec = [round(x / norm, 6) for x in raw]
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    return {"object": "list", "data": data, "model": model, "usage": usage}, Usage(prompt, 0)


def error_body(status: int, message: str, param: str | None = None) -> Json:
    """The error envelope the service answers a failed request with."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    code = "invalid_value" if status == 400 and param else None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
