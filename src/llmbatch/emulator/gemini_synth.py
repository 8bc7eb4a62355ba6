"""Gemini requests: checking one `GenerateContentRequest` / `EmbedContentRequest`, and its
deterministic synthetic response with `usageMetadata`; Google's error objects.

Field names are read in either spelling, `generationConfig` or `generation_config`, as the
service's JSON parser accepts both (the SDK itself sends some of each).

**The emulator's token rule for Gemini** (its own; llmbatch's estimator must never import it):

- *Prompt*: the text tokens (one per match of ``\\w+|[^\\w\\s]``, as in `synth.py`) of every
  `text` part of `contents` and `systemInstruction`, 258 per `inlineData`/`fileData` part
  (an image, as Gemini counts one), the text tokens of the JSON of any other part and of
  `tools`. No per-message overhead. With `cachedContent` set, half of the prompt (rounded
  down) is reported as `cachedContentTokenCount` (still inside `promptTokenCount`). A prompt
  over the model's context window (its card in the catalog, `models.py`) is refused as the
  service refuses it.
- *Output*: ``8 + h mod 248`` words of answer where `h` hashes the canonical request.
  Thinking models (`gemini-2.5-*`, `gemini-3*`) also think half as many tokens as they
  answer (`thoughtsTokenCount`), at most `thinkingBudget`, none with a budget of 0.
  `maxOutputTokens` caps thoughts plus answer (`finishReason: "MAX_TOKENS"`); a
  `length_rate` share is forced to the cap.
- Zero counts are left out, as the service's JSON leaves out zero fields.
- *Embeddings*: the text tokens of `content`'s parts (`tokenCount`); vectors of
  `outputDimensionality` (else the `embedding_dimensions` setting) unit-length values.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from llmbatch.emulator.envelope import google_status
from llmbatch.emulator.synth import body_hash, reply_text, share, text_tokens

Json = dict[str, Any]

MEDIA_TOKENS = 258
ROLES = ("user", "model", "function")
FAILURE_MESSAGES = {
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    429: "Resource has been exhausted (e.g. check quota).",
}


def error_object(code: int, message: str) -> Json:
    """Google's error object (`{"code", "message", "status"}`), as in an error envelope or a
    failed request's result."""
    return {"code": code, "message": message, "status": google_status(code)}


class RequestInvalid(Exception):
    """A request the service rejects; `error` is its error object."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.error = error_object(code, message)


@functools.cache
def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def pick(obj: Any, name: str) -> Any:
    """`obj[name]` in camelCase or snake_case (None when absent or `obj` is no object)."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    return obj.get(_snake(name)) if value is None else value


def short_model(name: str) -> str:
    return name.removeprefix("models/")


def thinks(model: str) -> bool:
    name = short_model(model)
    return name.startswith(("gemini-2.5", "gemini-3"))


# --- generateContent -------------------------------------------------------------------------


def _check_contents(contents: Any, where: str) -> None:
    if contents is None:
        raise RequestInvalid(f"* {where}: contents is not specified")
    if not isinstance(contents, list) or not contents:
        raise RequestInvalid(f"* {where}: contents must be a non-empty list of Content")
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise RequestInvalid(f"* {where}[{i}]: a Content must be an object")
        role = content.get("role")
        if role is not None and role not in ROLES:
            raise RequestInvalid(f"* {where}[{i}].role: Please use a valid role: user, model.")
        _check_parts(content.get("parts"), f"{where}[{i}].parts")


def _check_parts(parts: Any, where: str) -> None:
    if not isinstance(parts, list) or not parts:
        raise RequestInvalid(f"* {where}: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not part:
            raise RequestInvalid(f"* {where}[{j}]: a Part must be a non-empty object")
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise RequestInvalid(f"* {where}[{j}].text: must be a string")


def check_generate(request: Any, model: str) -> None:
    """Raise RequestInvalid for a `GenerateContentRequest` the service would refuse
    (`model` is the batch's, `models/NAME`)."""
    if not isinstance(request, dict):
        raise RequestInvalid("* GenerateContentRequest: the request must be an object")
    own = request.get("model")
    if own is not None and (not isinstance(own, str) or short_model(own) != short_model(model)):
        raise RequestInvalid(
            f"* GenerateContentRequest.model: {own!r} differs from the batch's model {model}"
        )
    _check_contents(pick(request, "contents"), "GenerateContentRequest.contents")
    system = pick(request, "systemInstruction")
    if system is not None:
        if not isinstance(system, dict):
            raise RequestInvalid("* GenerateContentRequest.system_instruction: must be a Content")
        _check_parts(system.get("parts"), "GenerateContentRequest.system_instruction.parts")
    config = pick(request, "generationConfig")
    if config is not None and not isinstance(config, dict):
        raise RequestInvalid("* GenerateContentRequest.generation_config: must be an object")
    cap = pick(config, "maxOutputTokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise RequestInvalid(
            "* GenerateContentRequest.generation_config.max_output_tokens: must be a positive "
            "integer"
        )
    if request.get("stream") is True:
        raise RequestInvalid("* GenerateContentRequest: streaming is not available in a batch")


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    if isinstance(part.get("text"), str):
        return text_tokens(part["text"])
    if pick(part, "inlineData") is not None or pick(part, "fileData") is not None:
        return MEDIA_TOKENS
    return text_tokens(orjson.dumps(part).decode())


def _content_tokens(content: Any) -> int:
    parts = content.get("parts") if isinstance(content, dict) else None
    return sum(_part_tokens(p) for p in parts) if isinstance(parts, list) else 0


def prompt_tokens(request: Any) -> int:
    """Prompt tokens of a request under the rule (0 for what it cannot read: a malformed
    request is refused when it runs, and counts nothing towards the queue)."""
    if not isinstance(request, dict):
        return 0
    contents = pick(request, "contents")
    n = sum(_content_tokens(c) for c in contents) if isinstance(contents, list) else 0
    n += _content_tokens(pick(request, "systemInstruction"))
    tools = request.get("tools")
    if tools:
        n += text_tokens(orjson.dumps(tools).decode())
    return n


def check_window(prompt: int, context_window: int) -> None:
    """A prompt longer than the model's input token limit is refused (the service's words)."""
    if 0 < context_window < prompt:
        raise RequestInvalid(
            f"The input token count ({prompt}) exceeds the maximum number of tokens allowed "
            f"({context_window})."
        )


@dataclass(frozen=True)
class Output:
    """How one answer splits: visible tokens, thinking tokens, whether the cap cut it."""

    answer: int
    thoughts: int
    capped: bool


def output_tokens(request: Json, model: str, h: bytes, length_rate: float) -> Output:
    config = pick(request, "generationConfig") or {}
    cap = pick(config, "maxOutputTokens")
    answer = 8 + int.from_bytes(h[0:4], "big") % 248
    thoughts = 0
    if thinks(model):
        thoughts = answer // 2
        budget = pick(pick(config, "thinkingConfig"), "thinkingBudget")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 0:
            thoughts = min(thoughts, budget)
    if cap is None:
        return Output(answer, thoughts, False)
    if share(h, 4) < length_rate or answer + thoughts > cap:
        thoughts = min(thoughts, cap - 1)
        return Output(cap - thoughts, thoughts, True)
    return Output(answer, thoughts, False)


def generate(
    request: Json, *, model: str, salt: str, length_rate: float = 0.0, prompt: int | None = None
) -> Json:
    """The synthetic `GenerateContentResponse` for a checked request (`prompt`: its prompt
    tokens, when the caller has counted them already)."""
    h = body_hash(request)
    prompt = prompt_tokens(request) if prompt is None else prompt
    out = output_tokens(request, model, h, length_rate)
    usage: Json = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out.answer,
        "totalTokenCount": prompt + out.answer + out.thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if pick(request, "cachedContent"):
        usage["cachedContentTokenCount"] = prompt // 2
    if out.thoughts:
        usage["thoughtsTokenCount"] = out.thoughts
    usage = {k: v for k, v in usage.items() if v != 0}
    ident = hashlib.blake2b(h + salt.encode(), digest_size=16).digest()
    candidate = {
        "content": {"parts": [{"text": reply_text(h, out.answer)}], "role": "model"},
        "finishReason": "MAX_TOKENS" if out.capped else "STOP",
        "index": 0,
    }
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": short_model(model),
        "responseId": _b64id(ident),
    }


def _b64id(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- embedContent ----------------------------------------------------------------------------


def check_embed(request: Any, model: str) -> None:
    """Raise RequestInvalid for an `EmbedContentRequest` the service would refuse."""
    if not isinstance(request, dict):
        raise RequestInvalid("* EmbedContentRequest: the request must be an object")
    own = request.get("model")
    if own is not None and (not isinstance(own, str) or short_model(own) != short_model(model)):
        raise RequestInvalid(
            f"* EmbedContentRequest.model: {own!r} differs from the batch's model {model}"
        )
    content = request.get("content")
    if not isinstance(content, dict):
        raise RequestInvalid("* EmbedContentRequest.content: content is not specified")
    _check_parts(content.get("parts"), "EmbedContentRequest.content.parts")
    dims = pick(request, "outputDimensionality")
    if dims is not None and (
        isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 3072
    ):
        raise RequestInvalid(
            "* EmbedContentRequest.output_dimensionality: must be between 1 and 3072"
        )


def embed_tokens(request: Any) -> int:
    """An embedding request's tokens under the rule (0 for what it cannot read)."""
    return _content_tokens(request.get("content")) if isinstance(request, dict) else 0


def embed(request: Json, *, default_dimensions: int) -> Json:
    """The synthetic `EmbedContentResponse` of a checked request (as a batch carries it)."""
    h = body_hash(request)
    dims = pick(request, "outputDimensionality") or default_dimensions
    seed = hashlib.blake2b(h, digest_size=64).digest()
    raw = [((seed[j % 64] + j * 31) % 251) / 125.0 - 1.0 for j in range(dims)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    values = [round(x / norm, 6) for x in raw]
    return {"embedding": {"values": values}, "tokenCount": str(embed_tokens(request))}


def failure(status: int) -> Json:
    """The error object of a request failed by the `request_failure_rate` dice."""
    return error_object(status, FAILURE_MESSAGES.get(status, "The request failed."))
