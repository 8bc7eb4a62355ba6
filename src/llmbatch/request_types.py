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
    # This runs for every line enqueued. The usual body (scalars and strings at the top, lists
    # of flat objects of strings: chat messages) is read with one join, whose type check is
    # C's; anything else is walked. Every string goes into one join: measured once.
    texts: list[str] = []
    add = texts.append
    try:
        for k, v in body.items():
            t = type(v)
            if t is str:
                if k != "model":
                    add(v)
            elif t is list:
                if k != "model":
                    for m in v:
                        if type(m) is not dict:
                            raise _Walk
                        texts.extend(m.values())
            elif t not in _SCALARS:
                raise _Walk
        text = "".join(texts)  # TypeError: a message held more than strings
    except (_Walk, TypeError):
        text = _walk(body)
    n = len(text)
    return n, n if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Walk(Exception):
    """A body text_size's one-join reading does not cover."""


_SCALARS: Final = frozenset({int, float, bool, type(None)})


def _walk(body: dict[str, Any]) -> str:
    """Every string value of a body but its top-level model, joined (depth first)."""
    texts: list[str] = []
    stack: list[Any] = [v for k, v in body.items() if k != "model"]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return "".join(texts)


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
