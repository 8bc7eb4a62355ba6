"""What a request is: the validated form every input line becomes, its identity (the body
hash) and the checks a provider's format runs on a line (custom_id, canonical JSON, sizes).
Which format reads a line is requests.py's choice; this module knows no provider.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_CUSTOM_ID: Final = 512
MIB: Final = 1024 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SORT: Final = orjson.OPT_SORT_KEYS
_blake2b = hashlib.blake2b


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

    def fields(self) -> Fields:
        return (
            self.custom_id,
            self.provider,
            self.endpoint,
            self.model,
            self.body,
            self.body_hash,
            self.text_chars,
            self.text_bytes,
            self.inputs,
        )


#: A Request's fields as a plain tuple, in its order: what the importer's hot path makes per
#: line (a frozen dataclass costs about a microsecond to build; a tuple a tenth of that).
Fields = tuple[str, str, str, str, bytes, bytes, int, int, int]


def body_hash(method: str, url: str, canonical_body: bytes) -> bytes:
    """The identity of a request: same method, url and canonical body ⇒ same hash."""
    # a copy of the hasher that has read "method\nurl\n" costs less than hashing it again
    # (or copying the body behind it); the endpoints are few, the cache is bounded anyway
    key = f"{method}\n{url}\n"
    start = _PREFIXES.get(key)
    if start is None:
        start = _blake2b(key.encode(), digest_size=16)
        if len(_PREFIXES) < 256:
            _PREFIXES[key] = start
    h = start.copy()
    h.update(canonical_body)
    return h.digest()


_PREFIXES: dict[str, Any] = {}


def check_custom_id(custom_id: object, field: str = "custom_id") -> None:
    """A user's custom_id: any string of 1–512 characters without control characters.

    Anthropic's `^[a-zA-Z0-9_-]{1,64}$` does not apply: the provider only ever sees our
    attempt ids (`<store id>-<n>`), never the user's custom_id."""
    if custom_id is None:
        raise LineError(f"{field} is missing")
    if not isinstance(custom_id, str):
        raise LineError(f"{field} must be a string, got {kind(custom_id)}")
    if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
        raise LineError(f"{field} must be 1-{MAX_CUSTOM_ID} characters, got {len(custom_id)}")
    if _CONTROL.search(custom_id):
        raise LineError(f"{field} contains a control character")


def canonical_json(body: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace: the form a body is stored and hashed in."""
    try:
        return _exact(orjson.dumps(body, option=_SORT))
    except orjson.JSONEncodeError as exc:
        # orjson writes at most 254 levels though it reads 1024; the API may pass any object.
        if "recursion" in str(exc).lower():
            raise LineError("JSON nested too deeply (over 254 levels)") from None
        raise LineError(f"body is not JSON: {exc}") from None


def model_of(body: dict[str, Any]) -> str:
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
    texts: list[str] = []
    add = texts.append
    stack: list[Any] = []
    for k, v in body.items():
        if k == "model":
            continue
        if type(v) is str:
            add(v)
        elif isinstance(v, (dict, list)):
            stack.append(v)
        elif isinstance(v, str):
            add(v)
    # only containers go on the stack and every string into one join: a line's text is
    # measured once, not string by string (this runs for every line enqueued)
    while stack:
        top = stack.pop()
        for v in top.values() if isinstance(top, dict) else top:
            if type(v) is str:
                add(v)
            elif isinstance(v, (dict, list)):
                stack.append(v)
            elif isinstance(v, str):
                add(v)
    text = "".join(texts)
    n = len(text)
    return n, n if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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


def kind(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number"
    )


def an_object(name: str, value: object) -> dict[str, Any]:
    """A line's request field (body, params, request) as the object it must be."""
    if not isinstance(value, dict):
        raise LineError(
            f"{name} is missing"
            if value is None
            else f"{name} must be an object, got {kind(value)}"
        )
    return value


def short(v: object) -> str:
    s = orjson.dumps(v).decode() if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _exact(data: bytes) -> bytes:
    """A right-sized copy: orjson's output keeps a ~4 KiB buffer, ten times a typical body."""
    return memoryview(data).tobytes()
