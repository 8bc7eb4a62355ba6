"""The OpenAI batch shape, spoken by OpenAI and Azure OpenAI: input lines
`{"custom_id", "method", "url", "body"}`, output lines `{"custom_id", "response", "error"}`,
usage with the Chat, Responses and Embeddings field names. A provider that speaks the same
shape (a compatible gateway) may subclass `OpenAIFormat` and change only its name and prices.
The transports live in openai.py and are imported only when the engine talks to the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from llmbatch import defaults
from llmbatch.errors import ConfigError
from llmbatch.providers import for_endpoint
from llmbatch.providers.plugin import Format, Plugin
from llmbatch.request_types import Fields, an_object
from llmbatch.requests import (
    LineError,
    Request,
    body_hash,
    canonical_json,
    model_of,
    short,
    text_size,
)
from llmbatch.results import Anomaly, Finding, Success, text_or_none
from llmbatch.usage import plain_counts, read_usage_any

ENDPOINTS: Final = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
    }
)
# Endpoints the service no longer batches, and why (the SDK's own words).
GONE_ENDPOINTS: Final = {
    "/v1/videos": "the Videos API was shut down on 2026-09-24 and OpenAI no longer batches it",
}
CHAT: Final = "/v1/chat/completions"
DAY: Final = 86_400


class OpenAIFormat(Format):
    """OpenAI's Files + Batch API shape."""

    name = "openai"
    label = "OpenAI"
    price_key = "openai"
    endpoints = ENDPOINTS
    default_endpoint = CHAT
    model_prefixes: tuple[str, ...] = (
        "gpt-",
        "o1",
        "o3",
        "o4",
        "text-embedding-",
        "omni-moderation",
        "chatgpt-",
    )
    sdk = "openai:OpenAI"
    # output_expires_after (seconds) the service takes: 1 hour to 30 days
    expires_range: tuple[int, int] = (3600, 30 * DAY)

    def full_line(self, item: Mapping[str, Any]) -> bool:
        return "method" in item

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        method = line.get("method")
        if method != "POST":
            raise LineError(f'method must be "POST", got {short(method)}')
        url = line.get("url")
        if not isinstance(url, str):
            raise LineError("url is missing" if url is None else "url must be a string")
        if url not in self.endpoints:
            if url in GONE_ENDPOINTS:
                raise LineError(f"url {url} cannot be batched: {GONE_ENDPOINTS[url]}")
            others = [n for n in for_endpoint(url) if n != provider]
            if others:
                raise LineError(
                    f"url {url} is batched by {' or '.join(others)}, not {provider}: enqueue "
                    f"these lines with --provider {others[0]}, in its line shape"
                )
            raise LineError(
                f"url {short(url)} is not a batch endpoint; use one of "
                + ", ".join(sorted(self.endpoints))
            )
        body = an_object("body", line.get("body"))
        model = model_of(body)
        if body.get("stream") is True:
            raise LineError("stream: true is not allowed in a batch")
        canonical = canonical_json(body)
        chars, nbytes = text_size(body)
        inputs = _embedding_inputs(body) if url == "/v1/embeddings" else 1
        return Request(
            custom_id,
            provider,
            url,
            model,
            canonical,
            body_hash("POST", url, canonical),
            chars,
            nbytes,
            inputs,
        )

    def fast_fields(self, custom_id: str, line: dict[str, Any], provider: str) -> Fields | None:
        """`parse` for a line it takes as it is, with the checks in one pass; None for any
        other line (or a subclass that reads lines its own way), which `parse` then reads."""
        if not self._plain_lines or line.get("method") != "POST":
            return None
        url, body = line.get("url"), line.get("body")
        if type(url) is not str or url not in self.endpoints or type(body) is not dict:
            return None
        model = body.get("model")
        if type(model) is not str or not model or body.get("stream") is True:
            return None
        try:
            canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # too deep for orjson's writer: `parse` says so
            return None
        canonical = memoryview(canonical).tobytes()  # right-sized, as canonical_json's
        chars, nbytes = text_size(body)
        inputs = _embedding_inputs(body) if url == "/v1/embeddings" else 1
        digest = body_hash("POST", url, canonical)
        return (custom_id, provider, url, model, canonical, digest, chars, nbytes, inputs)

    def item(self, custom_id: str, body: object, url: str | None, provider: str) -> Request:
        line = {"custom_id": custom_id, "method": "POST", "url": url or self.default_endpoint}
        return self.parse(custom_id, {**line, "body": body}, provider)

    def result(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Finding:
        response = line.get("response")
        error = line.get("error")
        if isinstance(response, dict):
            status = response.get("status_code")
            status = status if type(status) is int and 100 <= status <= 599 else None
            body = response.get("body")
            rid = response.get("request_id")
            rid = str(rid) if rid is not None else None
            if status is not None and 200 <= status < 300 and isinstance(body, dict):
                u = self.usage(body.get("usage"), endpoint)
                return Finding.succeeded(
                    attempt, status=status, request_id=rid, body=orjson.dumps(body), usage=u
                )
            err = body.get("error") if isinstance(body, dict) else None
            err = err if isinstance(err, dict) else {}
            return Finding.failed(
                attempt,
                code=text_or_none(err.get("code")) or (f"http_{status}" if status else "error"),
                error_type=text_or_none(err.get("type")),
                message=text_or_none(err.get("message")) or f"HTTP {status}",
                status=status,
                request_id=rid,
                body=orjson.dumps(body) if body is not None else None,
            )
        if isinstance(error, dict):
            code = text_or_none(error.get("code")) or "error"
            message = text_or_none(error.get("message")) or code
            return Finding.failed(attempt, code=code, error_type=code, message=message)
        raise Anomaly(
            f"result line for {line.get('custom_id')!r} has neither a response nor an error"
        )

    def success(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Success | None:
        """`result` of a 2xx line whose usage is in the API's own plain shape, in fewer steps
        (once per line: up to 50,000 a batch); any other line is left to `result`."""
        if not self._plain:
            return None
        response = line.get("response")
        if type(response) is not dict:
            return None
        status = response.get("status_code")
        if type(status) is not int or not 200 <= status < 300:
            return None
        body = response.get("body")
        if type(body) is not dict:
            return None
        counts = plain_counts(body.get("usage"), endpoint)
        if counts is None:
            return None
        rid = response.get("request_id")
        if rid is not None and type(rid) is not str:
            rid = str(rid)
        inp, out, cached, reasoning = counts
        return (
            attempt,
            status,
            rid,
            orjson.dumps(body),
            inp,
            out,
            cached,
            0,
            0,
            reasoning,
            None,
            None,
        )

    # The fast paths read lines as `parse` (`fast_fields`), `result` and `usage` (`success`) do
    # here: a subclass that reads them its own way has none
    _plain_lines = _plain = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plain_lines = cls.parse is OpenAIFormat.parse
        cls._plain = cls.result is OpenAIFormat.result and cls.usage is OpenAIFormat.usage

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        seconds = options.get("output_expires_after")
        low, high = self.expires_range
        if seconds is not None and seconds != 0 and not low <= seconds <= high:
            raise ConfigError(
                f"[providers.{name}] output_expires_after = {seconds} is outside what "
                f"{self.label} takes ({low}-{high} seconds; 0 sends none)"
            )

    def usage(self, usage: Any, endpoint: str | None) -> Any:
        # a gateway may answer in the cache-field shape: read whichever shape came
        return read_usage_any(usage, endpoint)


class AzureFormat(OpenAIFormat):
    """Azure OpenAI: the OpenAI shape; deployments bill as OpenAI's models; no batch total."""

    name = "azure"
    label = "Azure OpenAI"
    model_prefixes = ()  # deployment names are the user's own
    gives_batch_total = False
    expires_range = (14 * DAY, 30 * DAY)  # Azure's documented output_expires_after range

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        """Azure's own lines name `/chat/completions` (its docs, and the files we send it):
        taken as the `/v1/` endpoint they are."""
        url = line.get("url")
        if isinstance(url, str) and url.startswith("/") and "/v1" + url in self.endpoints:
            line = {**line, "url": "/v1" + url}
        return super().parse(custom_id, line, provider)


def _embedding_inputs(body: dict[str, Any]) -> int:
    inp = body.get("input")
    if isinstance(inp, list) and inp and not isinstance(inp[0], int):
        return len(inp)
    return 1


# The settings live here, not beside the transport: a config's [providers.openai] table is
# checked by every command, and the transport imports the openai SDK (~1 s of CPU to start).
OUTPUT_EXPIRES_AFTER = 14 * 86_400


@dataclass(frozen=True, slots=True)
class OpenAISettings:
    """Where to reach the service. The key is read from `api_key_env` when a client is made."""

    api_key_env: str = "OPENAI_API_KEY"
    base_url: str | None = None  # default: OPENAI_BASE_URL, else the SDK's default
    timeout: float = defaults.PROVIDER_TIMEOUT_S
    api_version: str | None = None  # Azure only
    endpoint: str | None = None  # Azure only (AZURE_OPENAI_ENDPOINT)
    # How long the service keeps a batch's output and error files (seconds; 0: its default,
    # which is 30 days). llmbatch deletes them once read; this bounds what a lost store leaves.
    # 14 days is within OpenAI's range (1 h to 30 d) and Azure's (14 to 30 d).
    output_expires_after: int = OUTPUT_EXPIRES_AFTER


@dataclass(frozen=True, slots=True)
class AzureSettings(OpenAISettings):
    """Azure's defaults: its own key variable."""

    api_key_env: str = "AZURE_OPENAI_API_KEY"


openai_plugin = Plugin(
    OpenAIFormat(),
    transport="llmbatch.providers.openai:OpenAIProvider",
    settings=OpenAISettings,
)
azure_plugin = Plugin(
    AzureFormat(),
    transport="llmbatch.providers.openai:AzureProvider",
    settings=AzureSettings,
)
