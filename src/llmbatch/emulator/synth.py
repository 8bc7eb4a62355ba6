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
- *Output tokens*: drawn by `replies.py` from a distribution that depends on the prompt,
  below the request's `max_completion_tokens` / `max_tokens` / `max_output_tokens` (legacy
  completions default to 16, as the service does), except a `length_rate` share of capped
  requests that run into the cap (`finish_reason: "length"`; Responses: `status:
  "incomplete"`). JSON replies and tool calls count the tokens of their text (a call: its
  name and arguments). Reasoning models (`o*`, `gpt-5*`) spend half of a text reply's
  output tokens on reasoning, and as many as the visible tokens on a structured one.
- Moderations are free: they add nothing to a batch's `usage`.

The response text is made of words from a fixed list, one token per word under the rule
above, so `completion_tokens` matches the text. Which model a request may use, and its
limits (context window, largest output, endpoints), come from its `ModelCard`
(`models.py`): a reply names the dated snapshot an alias runs as.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator import usage_rules
from llmbatch.emulator.envelope import RequestError
from llmbatch.emulator.replies import (
    Usage,
    cap_of,
    ident,
    share,
    text_length,
    text_tokens,
    words,
)

if TYPE_CHECKING:
    from llmbatch.emulator.models import ModelCard

__all__ = ["RequestError", "Usage", "kind_of", "respond", "share", "text_tokens"]
Json = dict[str, Any]

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


def kind_of(endpoint: str) -> str | None:
    """The endpoint kind of a URL path such as `/v1/chat/completions`, or None."""
    path = endpoint[3:] if endpoint.startswith("/v1/") else endpoint
    return KINDS.get(path)


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


def json_tokens(value: Any) -> int:
    """Tokens of a value's JSON text (cached per distinct JSON)."""
    return _tokens_of_json(orjson.dumps(value)) if value else 0


@lru_cache(maxsize=1024)
def _tokens_of_json(raw: bytes) -> int:
    """Cached: a batch repeats its tools and schema on every line."""
    return text_tokens(raw.decode())


def _messages_tokens(messages: list[Any], model: str = "") -> int:
    # String contents are counted together, joined by spaces: no token spans a space, so
    # the sum is the same, for one count instead of one per message.
    n = _PRIME + _PER_MESSAGE * len(messages)
    texts = []
    for m in messages:
        if type(m) is dict:
            content = m.get("content")
            if type(content) is str:
                texts.append(content)
            else:
                n += _content_tokens(content, model)
            if m.get("name"):
                n += 1
        elif isinstance(m, dict):
            n += _content_tokens(m.get("content"), model) + (1 if m.get("name") else 0)
        elif isinstance(m, str):
            texts.append(m)
        else:
            n -= _PER_MESSAGE
    return n + text_tokens(" ".join(texts))


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


_CHAT_EXTRAS = ("tools", "functions", "response_format")


def prompt_tokens(kind: str, body: Json) -> int:
    """Prompt tokens of one request body under the emulator's token rule."""
    model = str(body.get("model") or "")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty array.", "messages")
        n = _messages_tokens(messages, model)
        for key in _CHAT_EXTRAS:
            value = body.get(key)
            if value:
                n += json_tokens(value)
        return n
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
        return n + sum(json_tokens(body.get(k)) for k in ("tools", "text"))
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


def reply_text(h: bytes, n: int) -> str:
    """`n` words (so `n` tokens under the rule) chosen by the hash `h`."""
    return words(h, n)


_NOT_SERVED = {
    ("chat", "responses"): "This model is only supported in v1/responses and not in "
    "v1/chat/completions.",
    ("chat", "completions"): "This is not a chat model and thus not supported in the "
    "v1/chat/completions endpoint. Did you mean to use v1/completions?",
    ("completions", "chat"): "This is a chat model and not supported in the v1/completions "
    "endpoint. Did you mean to use v1/chat/completions?",
}


def check_limits(kind: str, body: Json, card: ModelCard, prompt: int) -> None:
    """Refuse what the model cannot do, as the service does: an endpoint it does not serve
    (404), a cap over its largest output, a prompt over its context window (400)."""
    _check_served(kind, card)
    cap, key = cap_of(kind, body)
    check_counts(kind, card, prompt, cap, key)


def _check_served(kind: str, card: ModelCard) -> None:
    if not card.serves(kind):
        served = card.endpoints or frozenset()
        other = "responses" if "responses" in served else "chat" if "chat" in served else ""
        message = _NOT_SERVED.get((kind, other)) or _NOT_SERVED.get((kind, "completions"))
        if kind not in ("chat", "completions") or message is None:
            message = f"The model '{card.id}' does not support the v1/{kind} endpoint."
        raise RequestError(message, "model", status=404)


def check_counts(kind: str, card: ModelCard, prompt: int, cap: int | None, key: str | None) -> None:
    """`check_limits` for a request whose cap (`cap_of`) is already read: what the batch
    worker runs on a line whose body validation has read."""
    _check_served(kind, card)
    if key is not None and cap is not None and 0 < card.max_output_tokens < cap:
        what = "output" if kind == "responses" else "completion"
        raise RequestError(
            f"{key} is too large: {cap}. This model supports at most {card.max_output_tokens} "
            f"{what} tokens, whereas you provided {cap}.",
            key,
            code="invalid_value",
        )
    window = card.context_window
    if kind not in ("chat", "responses", "completions") or window <= 0:
        return
    asked = prompt + (cap if key is not None and cap is not None else 0)
    if asked <= window:
        return
    if kind == "responses":
        raise RequestError(
            "Your input exceeds the context window of this model. Please adjust your input "
            "and try again.",
            "input",
            code="context_length_exceeded",
        )
    where = "messages" if kind == "chat" else "prompt"
    if asked == prompt:
        message = (
            f"This model's maximum context length is {window} tokens. However, your {where} "
            f"resulted in {prompt} tokens. Please reduce the length of the {where}."
        )
    else:
        message = (
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{asked} tokens ({prompt} in the {where}, {cap} in the completion). Please reduce "
            f"the length of the {where} or completion."
        )
    raise RequestError(message, where, code="context_length_exceeded")


def respond(
    kind: str,
    body: Json,
    *,
    model: str,
    created: int,
    salt: str,
    length_rate: float = 0.0,
    embedding_dimensions: int = 16,
    card: ModelCard | None = None,
) -> tuple[Json, Usage]:
    """The response body for one valid request and the usage it counts; raises RequestError
    for a body its endpoint (or its model's `card`) would reject. `salt` varies ids
    between batches; a reply names `card.runs_as` (the dated snapshot) as its model."""
    if body.get("stream") is True:
        raise RequestError("Streaming is not supported here.", "stream")
    prompt = prompt_tokens(kind, body)
    ceiling = 0
    if card is not None:
        check_limits(kind, body, card, prompt)
        model, ceiling = card.runs_as, card.max_output_tokens
    h = body_hash(body)
    if kind in ("chat", "responses"):
        from llmbatch.emulator import chat_synth  # it builds on this module

        reply = chat_synth.chat if kind == "chat" else chat_synth.responses
        return reply(body, h, model, created, salt, prompt, length_rate, ceiling)
    if kind == "completions":
        cap, _ = cap_of(kind, body)
        n, hit = text_length(h, prompt, cap, length_rate, ceiling)
        choice = {"text": words(h, n), "index": 0, "logprobs": None}
        choice["finish_reason"] = "length" if hit else "stop"
        billed = n * usage_rules.completions_billed(body)  # n and best_of: every one is paid
        counts = {"prompt_tokens": prompt, "completion_tokens": billed}
        counts["total_tokens"] = prompt + billed
        out = {"id": ident("cmpl-", h, salt), "object": "text_completion", "created": created}
        out |= {"model": model, "choices": [choice], "usage": counts}
        return out, Usage(prompt, billed)
    if kind == "embeddings":
        window = card.context_window if card is not None else 0
        return _embeddings(body, h, model, prompt, embedding_dimensions, window)
    if kind == "moderations":
        inputs = _inputs(body.get("input"), "input")
        result: Json = {"flagged": False, "categories": dict.fromkeys(_CATEGORIES, False)}
        result["category_scores"] = dict.fromkeys(_CATEGORIES, 0.0001)
        result["category_applied_input_types"] = {c: ["text"] for c in _CATEGORIES}
        out = {"id": ident("modr-", h, salt), "model": model, "results": [result] * len(inputs)}
        return out, Usage(0, 0)
    if kind == "images":
        n = 272
        usage: Json = {"input_tokens": prompt, "output_tokens": n, "total_tokens": prompt + n}
        usage["input_tokens_details"] = {"text_tokens": prompt, "image_tokens": 0}
        return {"created": created, "data": [{"b64_json": _TINY_PNG}], "usage": usage}, Usage(
            prompt, n
        )
    out = {"id": ident("video_", h, salt), "object": "video", "created_at": created}
    out |= {"status": "completed", "model": model, "progress": 100, "seconds": "4"}
    out |= {"size": "720x1280", "completed_at": created, "error": None}
    return out, Usage(prompt, 0)


def respond_json(
    kind: str,
    body: Json,
    *,
    model: str,
    created: int,
    salt: str,
    length_rate: float = 0.0,
    embedding_dimensions: int = 16,
    card: ModelCard | None = None,
    prompt: int | None = None,
) -> tuple[bytes, Usage]:
    """`respond`'s body encoded as JSON (the same bytes as `orjson.dumps`), for the batch
    workers: a plain chat reply is written from a template, without its dicts. `prompt`:
    the body's prompt tokens when already counted (validation counts them)."""
    if kind == "chat" and card is not None and body.get("stream") is not True:
        if prompt is None:
            prompt = prompt_tokens(kind, body)
        check_limits(kind, body, card, prompt)
        from llmbatch.emulator import chat_synth  # it builds on this module

        plain = chat_synth.plain_chat_json(
            body,
            body_hash(body),
            card.runs_as,
            created,
            salt,
            prompt,
            length_rate,
            card.max_output_tokens,
        )
        if plain is not None:
            return plain
    out, usage = respond(
        kind,
        body,
        model=model,
        created=created,
        salt=salt,
        length_rate=length_rate,
        embedding_dimensions=embedding_dimensions,
        card=card,
    )
    return orjson.dumps(out), usage


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


def _embeddings(
    body: Json, h: bytes, model: str, prompt: int, default_dims: int, window: int
) -> tuple[Json, Usage]:
    inputs = _inputs(body.get("input"), "input")
    for item in inputs:
        n = _input_tokens(item)
        if window and n > window:
            raise RequestError(
                f"This model's maximum context length is {window + 1} tokens, however you "
                f"requested {n} tokens ({n} in your prompt; 0 for the completion). Please "
                "reduce your prompt; or completion length.",
                "input",
                code="context_length_exceeded",
            )
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


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> Json:
    """The error envelope the service answers a failed request with."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    if code is None and status == 400 and param:
        code = "invalid_value"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
