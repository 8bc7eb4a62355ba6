"""Anthropic's Message Batches shape: input lines `{"custom_id", "params"}` (a Messages API
body, one endpoint), result lines `{"custom_id", "result": {"type", ...}}` without HTTP
statuses, usage whose `input_tokens` leaves out cache traffic. The transport lives in
anthropic.py and is imported only when the engine talks to the provider."""

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
    model_of,
    short,
    text_size,
)
from llmbatch.results import Anomaly, Finding, text_or_none
from llmbatch.usage import UsageRecord, read_cache_usage

ENDPOINT: Final = "/v1/messages"
# Anthropic's Messages API takes 32 MB a request, and llmbatch packs Anthropic batches up to
# 32 MB (less a margin, anthropic.py): a larger request could never be sent.
MAX_REQUEST_BYTES: Final = 30 * MIB
# How a request that never ran ended, as our error code.
ENDED: Final = {"canceled": "batch_cancelled", "expired": "batch_expired"}
# The HTTP status of each Anthropic error type (docs.anthropic.com, "Errors").
STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Hosted (server) tools bill per call; Anthropic names their types with these prefixes.
SERVER_TOOL_PREFIXES: Final = ("web_search", "web_fetch", "code_execution", "tool_search", "mcp")
# 784 x 1,568 px / 750: the largest image Claude takes unscaled
IMAGE_TOKENS: Final = 1_640


class AnthropicFormat(Format):
    """Anthropic Message Batches."""

    name = "anthropic"
    label = "Anthropic"
    price_key = "anthropic"
    endpoints = frozenset({ENDPOINT})
    default_endpoint = ENDPOINT
    model_prefixes = ("claude",)
    gives_batch_total = False
    estimate_note = (
        "Anthropic input tokens are calibrated, not counted (no offline tokenizer): "
        "see benchmarks/bench_estimate.py for the error."
    )
    sdk = "anthropic:Anthropic"
    request_id_header = "request-id"
    line_errors_have_status = False
    image_tokens = IMAGE_TOKENS
    tool_prompt_tokens = 600  # Anthropic documents at most 530
    server_tool_prefixes = SERVER_TOOL_PREFIXES

    def claims(self, line: Mapping[str, Any]) -> bool:
        return "params" in line and "body" not in line

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        if not self.claims(line):
            raise LineError(f'provider {provider} takes {{"custom_id", "params"}} lines')
        return self.item(custom_id, line.get("params"), None, provider)

    def item(self, custom_id: str, body: object, url: str | None, provider: str) -> Request:
        params = an_object("params", body)
        model = model_of(params)
        max_tokens = params.get("max_tokens")
        if max_tokens is None:
            raise LineError("params.max_tokens is missing (Anthropic requires it)")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise LineError(
                f"params.max_tokens must be a whole number of 1 or more, got {short(max_tokens)}"
            )
        if not isinstance(params.get("messages"), list):
            raise LineError("params.messages must be a list")
        if params.get("stream") is True:
            raise LineError("stream: true is not allowed in a batch")
        canonical = canonical_json(params)
        if len(canonical) > MAX_REQUEST_BYTES:
            raise LineError(
                f"params are {len(canonical) / MIB:,.1f} MiB; one Anthropic request may be at "
                f"most {MAX_REQUEST_BYTES // MIB} MiB (Anthropic takes 32 MB a request, and every "
                "request must fit in one batch): split it, or send images and documents by URL"
            )
        chars, nbytes = text_size(params)
        digest = body_hash("POST", ENDPOINT, canonical)
        return Request(custom_id, self.name, ENDPOINT, model, canonical, digest, chars, nbytes, 1)

    def result(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Finding:
        """`{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}`."""
        result = line.get("result")
        rtype = result.get("type") if isinstance(result, dict) else None
        if isinstance(result, dict) and rtype == "succeeded":
            message = result.get("message")
            if isinstance(message, dict):
                u = read_cache_usage(message.get("usage"))
                return Finding.succeeded(
                    attempt,
                    status=200,
                    request_id=text_or_none(message.get("id")),
                    body=orjson.dumps(message),
                    usage=u,
                    model=text_or_none(message.get("model")),
                )
        if isinstance(result, dict) and rtype == "errored":
            envelope = result.get("error")
            envelope = envelope if isinstance(envelope, dict) else {}
            err = envelope.get("error")
            err = err if isinstance(err, dict) else {}
            code = text_or_none(err.get("type")) or "error"
            return Finding.failed(
                attempt,
                code=code,
                error_type=code,
                message=text_or_none(err.get("message")) or code,
                request_id=text_or_none(envelope.get("request_id")),
                body=orjson.dumps(envelope),
            )
        if isinstance(rtype, str) and rtype in ENDED:
            code = ENDED[rtype]
            return Finding.failed(attempt, code=code, error_type=code, message=f"request {rtype}")
        raise Anomaly(f"result line for {line.get('custom_id')!r} has no known result type")

    def usage(self, usage: Any, endpoint: str | None) -> UsageRecord:
        return read_cache_usage(usage)

    def status_code(self, error_code: str | None) -> int | None:
        # batch results carry no HTTP status: an errored one gets its error type's status
        return 200 if error_code is None else STATUS.get(error_code)

    def output_text(self, body: dict[str, Any]) -> str:
        """The `text` blocks of `content`, joined."""
        return "".join(
            str(b.get("text") or "")
            for b in body.get("content") or []
            if isinstance(b, dict) and b.get("type") == "text"
        )

    def batch_note(self, state: str) -> str | None:
        if state in ("ingested", "completed", "cancelled"):
            return None
        return "counted at its end"  # Anthropic counts requests when the batch ends

    def input_tokens(self, endpoint: str, model: str, body: dict[str, Any]) -> int:
        from llmbatch.counting import calibrated_input_tokens

        return calibrated_input_tokens(body)


anthropic_plugin = Plugin(
    AnthropicFormat(),
    transport="llmbatch.providers.anthropic:AnthropicProvider",
    settings="llmbatch.providers.anthropic:AnthropicSettings",
)
