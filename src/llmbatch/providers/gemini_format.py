"""Gemini batch mode's shape (the Developer API): input lines `{"key", "request"}` (a
GenerateContentRequest naming its model), result lines `{"key", "response" | "error"}`,
usage camelCase in `usageMetadata`. A line's `key` is the request's custom_id. The transport
lives in gemini.py and is imported only when the engine talks to the provider (it needs the
`llmbatch[gemini]` extra; enqueueing does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from llmbatch.providers.plugin import Format, Plugin
from llmbatch.request_types import an_object
from llmbatch.requests import (
    MIB,
    LineError,
    Request,
    body_hash,
    canonical_json,
    short,
    text_size,
)
from llmbatch.results import Anomaly, Finding, text_or_none
from llmbatch.usage import UsageRecord

ENDPOINT: Final = "generateContent"  # the method each request calls (batchGenerateContent)
# Google takes 20 MB in one generateContent call (and an inline batch's whole create body):
# a larger request can only send its media through the Files API (`fileData`).
MAX_REQUEST_BYTES: Final = 20 * 1000 * 1000
# Gemini's tokenizer is not offline (the SDK's local tokenizer downloads a model at run
# time): the estimate counts o200k tokens and scales them by this stated factor, leaning up
# (Gemini's vocabulary splits English prose into about as many pieces as o200k, code and
# other scripts into more).
TOKEN_FACTOR: Final = 1.15
# Model families the batch API serves (generateContent models); Live, TTS and native-audio
# models answer only over their own APIs, embedding models through asyncBatchEmbedContent.
NOT_BATCHED: Final = ("-live", "live-", "-tts", "native-audio", "embedding", "-image-generation")
RETIRED: Final = ("gemini-1.0", "gemini-1.5", "gemini-pro")
# The HTTP status of each google.rpc status (a result's `error.status` without a `code`).
STATUS: Final = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
CODE_OF_STATUS: Final = {v: k for k, v in reversed(STATUS.items())}


def short_model(name: str) -> str:
    """`models/gemini-2.5-flash` → `gemini-2.5-flash`."""
    return name.removeprefix("models/")


def batchable(model: str) -> str | None:
    """Why Gemini's batch API does not take `model` (None: it does)."""
    if not model.startswith("gemini-"):
        return (
            f"model {short(model)} is not a Gemini model the batch API serves "
            "(batchGenerateContent takes gemini-* models, e.g. gemini-2.5-flash)"
        )
    if model.startswith(RETIRED):
        return f"model {short(model)} is retired; Gemini batch mode serves gemini-2.0 and later"
    if any(part in model for part in NOT_BATCHED):
        return (
            f"model {short(model)} is not served by batchGenerateContent (Live, TTS, "
            "native-audio and embedding models are not batched here)"
        )
    return None


class GeminiFormat(Format):
    """Gemini batch mode (Developer API)."""

    name = "gemini"
    label = "Gemini"
    price_key = "google"
    endpoints = frozenset({ENDPOINT})
    default_endpoint = ENDPOINT
    id_field = "key"
    model_prefixes = ("gemini-",)
    estimate_note = (
        f"Gemini input tokens are approximated, not counted: o200k tokens x {TOKEN_FACTOR} "
        "(Gemini's tokenizer is not available offline)."
    )
    line_errors_have_status = True
    image_tokens = 1_290  # Gemini bills up to 1,290 tokens a high-resolution image (2.x models)
    tool_prompt_tokens = 256

    def full_line(self, item: Mapping[str, Any]) -> bool:
        return "request" in item and "body" not in item

    def line_id(self, line: Mapping[str, Any]) -> object:
        if "request" not in line and ("custom_id" in line or "params" in line):
            raise LineError(f'provider {self.name} takes {{"key", "request"}} lines')
        return line.get("key")

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        if "request" not in line:
            raise LineError(f'provider {provider} takes {{"key", "request"}} lines')
        return self.item(custom_id, line.get("request"), None, provider)

    def item(self, custom_id: str, body: object, url: str | None, provider: str) -> Request:
        request = an_object("request", body)
        model = request.get("model")
        if model is None:
            raise LineError(
                'request.model is missing: name the model in each request (e.g. "gemini-2.5-flash"); '
                "a Gemini batch runs one model"
            )
        if not isinstance(model, str) or not short_model(model):
            raise LineError(f"request.model must be a non-empty string, got {short(model)}")
        model = short_model(model)
        why = batchable(model)
        if why is not None:
            raise LineError(why)
        contents = request.get("contents")
        if not isinstance(contents, list) or not contents:
            raise LineError("request.contents must be a non-empty list")
        canonical = canonical_json(request)
        if len(canonical) > MAX_REQUEST_BYTES:
            raise LineError(
                f"request is {len(canonical) / MIB:,.1f} MiB; Gemini takes at most 20 MB in one "
                "request (and in an inline batch): send images, audio and documents through "
                "the Files API (fileData) instead"
            )
        chars, nbytes = text_size(request)
        digest = body_hash("POST", ENDPOINT, canonical)
        return Request(custom_id, self.name, ENDPOINT, model, canonical, digest, chars, nbytes, 1)

    def result(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Finding:
        """`{"key", "response": GenerateContentResponse}` or `{"key", "error": Status}`."""
        response = line.get("response")
        if isinstance(response, dict):
            u = self.usage(response.get("usageMetadata"), endpoint)
            return Finding.succeeded(
                attempt,
                status=200,
                request_id=text_or_none(response.get("responseId")),
                body=orjson.dumps(response),
                usage=u,
                model=text_or_none(response.get("modelVersion")),
            )
        error = line.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            status = code if type(code) is int and 100 <= code <= 599 else None
            word = text_or_none(error.get("status"))
            if status is None and word is not None:
                status = STATUS.get(word)
            name = word or (CODE_OF_STATUS.get(status) if status else None) or "error"
            message = text_or_none(error.get("message")) or name
            return Finding.failed(
                attempt,
                code=name,
                error_type=name,
                message=message,
                status=status,
                body=orjson.dumps(error),
            )
        raise Anomaly(f"result line for {line.get('key')!r} has neither a response nor an error")

    def usage(self, usage: Any, endpoint: str | None) -> UsageRecord:
        return read_gemini_usage(usage)

    def status_code(self, error_code: str | None) -> int | None:
        return 200 if error_code is None else STATUS.get(error_code)

    def output_text(self, body: dict[str, Any]) -> str:
        """The text parts of the first candidate (thought summaries left out)."""
        candidates = body.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates else {}
        content = first.get("content") if isinstance(first, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        return "".join(
            str(p.get("text") or "")
            for p in parts or []
            if isinstance(p, dict) and not p.get("thought")
        )

    def output_bound(self, body: Mapping[str, Any]) -> tuple[int | None, int]:
        """`generationConfig.maxOutputTokens` and `candidateCount`. Thinking is billed as
        output and its budget may be overrun, so the cap bounds only a model that does not
        think (gemini-2.0) or a request that turns thinking off (`thinkingBudget: 0`)."""
        config = body.get("generationConfig", body.get("generation_config"))
        if not isinstance(config, dict):
            return None, 1
        cap = _positive(config, "maxOutputTokens", "max_output_tokens")
        n = _positive(config, "candidateCount", "candidate_count") or 1
        thinking = config.get("thinkingConfig", config.get("thinking_config"))
        off = isinstance(thinking, dict) and 0 in (
            thinking.get("thinkingBudget"),
            thinking.get("thinking_budget"),
        )
        model = body.get("model")
        plain = isinstance(model, str) and short_model(model).startswith("gemini-2.0")
        return (cap if off or plain else None), n

    def document_part(self, part: Mapping[str, Any]) -> bool:
        return "fileData" in part or "file_data" in part

    def input_tokens(self, endpoint: str, model: str, body: dict[str, Any]) -> int:
        from llmbatch.estimate import text_tokens

        n = 0
        for part in _text_parts(body.get("contents")) + _text_parts(
            body.get("systemInstruction", body.get("system_instruction"))
        ):
            n += text_tokens(part)
        for key in ("tools", "toolConfig", "tool_config"):
            if body.get(key):
                n += text_tokens(orjson.dumps(body[key]).decode())
        images = _media_parts(body.get("contents"))
        return round(n * TOKEN_FACTOR) + images * (self.image_tokens or 0)


def _positive(d: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        v = d.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _text_parts(contents: Any) -> list[str]:
    """Every `text` of a Content, a list of them, or a string."""
    if isinstance(contents, str):
        return [contents]
    if isinstance(contents, dict):
        contents = [contents]
    out = []
    for c in contents if isinstance(contents, list) else ():
        parts = c.get("parts") if isinstance(c, dict) else None
        for p in parts if isinstance(parts, list) else ():
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                out.append(p["text"])
    return out


def _media_parts(contents: Any) -> int:
    n = 0
    for c in contents if isinstance(contents, list) else ():
        parts = c.get("parts") if isinstance(c, dict) else None
        for p in parts if isinstance(parts, list) else ():
            if isinstance(p, dict) and any(
                k in p for k in ("inlineData", "inline_data", "fileData", "file_data")
            ):
                n += 1
    return n


def _count(usage: dict[str, Any], name: str) -> int:
    """A camelCase count; Gemini leaves zero counts out (absent is 0, never missing)."""
    v = usage.get(name)
    if v is None:
        return 0
    if isinstance(v, str) and v.isdigit():  # int64 fields may travel as strings
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"not a count: usageMetadata.{name}={v!r}")
    if v < 0:
        raise ValueError(f"negative: usageMetadata.{name}={v}")
    return v


def read_gemini_usage(usage: Any) -> UsageRecord:
    """`usageMetadata`: `promptTokenCount` counts every input token (cached ones included,
    `cachedContentTokenCount`); output is `candidatesTokenCount` plus `thoughtsTokenCount`
    (thinking is billed as output). A response without usage is flagged, never counted 0."""
    from llmbatch.usage import MAX_TOKENS

    if not isinstance(usage, dict):
        return UsageRecord(None, None, flag="missing: usageMetadata")
    try:
        prompt = _count(usage, "promptTokenCount")
        tool_prompt = _count(usage, "toolUsePromptTokenCount")
        candidates = _count(usage, "candidatesTokenCount")
        thoughts = _count(usage, "thoughtsTokenCount")
        cached = _count(usage, "cachedContentTokenCount")
    except ValueError as exc:
        return UsageRecord(None, None, flag=str(exc))
    inp, out = prompt + tool_prompt, candidates + thoughts
    if max(inp, out) > MAX_TOKENS:
        return UsageRecord(None, None, flag=f"out of range: a count above {MAX_TOKENS:,}")
    if cached > inp:
        return UsageRecord(None, None, flag="inconsistent: cached above the prompt")
    return UsageRecord(inp, out, cached=cached, reasoning=thoughts)


gemini_plugin = Plugin(
    GeminiFormat(),
    transport="llmbatch.providers.gemini:GeminiProvider",
    settings="llmbatch.providers.gemini:GeminiSettings",
)
