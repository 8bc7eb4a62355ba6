"""What a request is, and the validation every input line passes at the door.

A line is either in the OpenAI batch input format (``custom_id``, ``method``, ``url``, ``body``)
or Anthropic's (``custom_id``, ``params``). Validation is strict and cheap: it never calls a
provider and never tokenizes. The body hash covers ``method``, ``url`` and the canonical JSON
of the body (sorted keys, no whitespace), so a reformatted file is the same request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

OPENAI_ENDPOINTS: Final = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
    }
)
# Endpoints the providers batch that llmbatch does not send yet.
LATER_ENDPOINTS: Final = frozenset({"/v1/images/generations", "/v1/images/edits", "/v1/videos"})
ANTHROPIC_ENDPOINT: Final = "/v1/messages"
PROVIDERS: Final = ("openai", "azure", "anthropic")
MAX_CUSTOM_ID: Final = 512
MIB: Final = 1024 * 1024
# Anthropic's Messages API takes 32 MB a request, and llmbatch packs Anthropic batches up to
# 32 MB (less a margin, providers/anthropic.py): a larger request could never be sent.
ANTHROPIC_MAX_REQUEST_BYTES: Final = 30 * MIB

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SORT: Final = orjson.OPT_SORT_KEYS


class LineError(ValueError):
    """One input line is invalid; the message is the reason, without file or line."""


@dataclass(slots=True, frozen=True)
class Request:
    """A validated request, ready to store. `body` is canonical JSON."""

    custom_id: str
    provider: str
    endpoint: str
    model: str
    body: bytes
    body_hash: bytes
    text_chars: int
    text_bytes: int
    inputs: int  # embedding inputs (1 for other endpoints), for the per-batch input limit


def body_hash(method: str, url: str, canonical_body: bytes) -> bytes:
    """The identity of a request: same method, url and canonical body ⇒ same hash."""
    h = hashlib.blake2b(digest_size=16)
    h.update(method.encode())
    h.update(b"\n")
    h.update(url.encode())
    h.update(b"\n")
    h.update(canonical_body)
    return h.digest()


def parse_line(raw: bytes, provider: str = "openai") -> Request:
    """Parse and validate one input line (without its newline); raise LineError with the reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(_json_reason(raw, exc)) from None
    return parse_obj(obj, provider)


def parse_obj(obj: object, provider: str = "openai") -> Request:
    """Validate one decoded input line (a dict in either line format)."""
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {_kind(obj)}")
    custom_id = obj.get("custom_id")
    check_custom_id(custom_id)
    assert isinstance(custom_id, str)
    if "params" in obj and "body" not in obj:
        return _anthropic(custom_id, obj["params"])
    return _openai(custom_id, obj, provider)


def make_request(
    custom_id: object, body: object, *, url: str | None = None, provider: str = "openai"
) -> Request:
    """Validate a request given through the Python API (the same rules as a line)."""
    check_custom_id(custom_id)
    assert isinstance(custom_id, str)
    if provider == "anthropic":
        return _anthropic(custom_id, body)
    line = {"custom_id": custom_id, "method": "POST", "url": url or "/v1/chat/completions"}
    return _openai(custom_id, {**line, "body": body}, provider)


def from_item(item: object, provider: str = "openai") -> Request:
    """Validate a request given as `Queue.add_many` takes it: a batch input line as a dict
    (`{"custom_id", "method", "url", "body"}` or Anthropic's `{"custom_id", "params"}`), or
    the short form `{"custom_id", "body"[, "url"]}` (POST; chat completions by default)."""
    if not isinstance(item, Mapping):
        raise LineError(f"expected a dict, got {_kind(item)}")
    if "params" in item or "method" in item:
        return parse_obj(dict(item), provider)
    return make_request(
        item.get("custom_id"), item.get("body"), url=item.get("url"), provider=provider
    )


def check_custom_id(custom_id: object) -> None:
    """A user's custom_id: any string of 1–512 characters without control characters.

    Anthropic's `^[a-zA-Z0-9_-]{1,64}$` does not apply: the provider only ever sees our
    attempt ids (`<store id>-<n>`), never the user's custom_id."""
    if custom_id is None:
        raise LineError("custom_id is missing")
    if not isinstance(custom_id, str):
        raise LineError(f"custom_id must be a string, got {_kind(custom_id)}")
    if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
        raise LineError(f"custom_id must be 1-{MAX_CUSTOM_ID} characters, got {len(custom_id)}")
    if _CONTROL.search(custom_id):
        raise LineError("custom_id contains a control character")


def _openai(custom_id: str, obj: dict[str, Any], provider: str) -> Request:
    if provider == "anthropic":
        raise LineError('provider anthropic takes {"custom_id", "params"} lines')
    method = obj.get("method")
    if method != "POST":
        raise LineError(f'method must be "POST", got {_short(method)}')
    url = obj.get("url")
    if not isinstance(url, str):
        raise LineError("url is missing" if url is None else "url must be a string")
    if url not in OPENAI_ENDPOINTS:
        if url in LATER_ENDPOINTS:
            raise LineError(f"url {url} is not supported yet")
        raise LineError(f"url {_short(url)} is not a batch endpoint; use one of {_endpoints()}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError(
            "body is missing" if body is None else f"body must be an object, got {_kind(body)}"
        )
    model = _model(body)
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


def _anthropic(custom_id: str, params: object) -> Request:
    if not isinstance(params, dict):
        raise LineError(
            "params is missing"
            if params is None
            else f"params must be an object, got {_kind(params)}"
        )
    model = _model(params)
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        raise LineError("params.max_tokens is missing (Anthropic requires it)")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise LineError(
            f"params.max_tokens must be a whole number of 1 or more, got {_short(max_tokens)}"
        )
    if not isinstance(params.get("messages"), list):
        raise LineError("params.messages must be a list")
    if params.get("stream") is True:
        raise LineError("stream: true is not allowed in a batch")
    canonical = canonical_json(params)
    if len(canonical) > ANTHROPIC_MAX_REQUEST_BYTES:
        raise LineError(
            f"params are {len(canonical) / MIB:,.1f} MiB; one Anthropic request may be at most "
            f"{ANTHROPIC_MAX_REQUEST_BYTES // MIB} MiB (Anthropic takes 32 MB a request, and every "
            "request must fit in one batch): split it, or send images and documents by URL"
        )
    chars, nbytes = text_size(params)
    digest = body_hash("POST", ANTHROPIC_ENDPOINT, canonical)
    return Request(
        custom_id, "anthropic", ANTHROPIC_ENDPOINT, model, canonical, digest, chars, nbytes, 1
    )


def canonical_json(body: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace: the form a body is stored and hashed in."""
    try:
        return _exact(orjson.dumps(body, option=_SORT))
    except orjson.JSONEncodeError as exc:
        # orjson writes at most 254 levels though it reads 1024; the API may pass any object.
        if "recursion" in str(exc).lower():
            raise LineError("JSON nested too deeply (over 254 levels)") from None
        raise LineError(f"body is not JSON: {exc}") from None


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise LineError("body has no model")
    if not isinstance(model, str) or not model:
        raise LineError("model must be a non-empty string")
    return model


def text_size(body: dict[str, Any]) -> tuple[int, int]:
    """Characters and UTF-8 bytes of the text a request sends (cheap; no tokenizer).

    Counts every string value except the model name; structure (keys, punctuation) is left to
    the token estimator's per-message overhead.
    """
    chars = nbytes = 0
    stack: list[Any] = [v for k, v in body.items() if k != "model"]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            chars += len(v)
            nbytes += len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return chars, nbytes


def _embedding_inputs(body: dict[str, Any]) -> int:
    inp = body.get("input")
    if isinstance(inp, list) and inp and not isinstance(inp[0], int):
        return len(inp)
    return 1


def _json_reason(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    msg = str(exc)
    if raw.startswith(b"\xef\xbb\xbf"):
        return "a UTF-8 byte order mark (BOM) starts this line (files joined together?); remove it"
    if "UTF-8" in msg or "utf-8" in msg:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as u:
            return f"not valid UTF-8 (byte {u.start + 1})"
        return f"not valid UTF-8 ({msg})"
    if "depth limit" in msg or "recursion" in msg.lower():
        return "JSON nested too deeply (over 1024 levels)"
    # orjson counts lines inside the text it parsed, always "line 1" here: the FILE:LINE in
    # front of this reason is the line; keep only the column
    return "not valid JSON: " + _WHERE.sub(r" at column \1", msg)


_WHERE = re.compile(r": line 1 column (\d+) \(char \d+\)$")


def _kind(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number"
    )


def _short(v: object) -> str:
    s = orjson.dumps(v).decode() if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _endpoints() -> str:
    return ", ".join(sorted(OPENAI_ENDPOINTS))


def _exact(data: bytes) -> bytes:
    """A right-sized copy: orjson's output keeps a ~4 KiB buffer, ten times a typical body."""
    return memoryview(data).tobytes()
