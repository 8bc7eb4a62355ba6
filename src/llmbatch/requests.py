"""What a request is, and the validation every input line passes at the door.

A line is in its provider's batch input shape; the provider's format (providers/plugin.py)
validates it with the helpers here. Validation is strict and cheap: it never calls a
provider and never tokenizes. The body hash covers ``method``, ``url`` and the canonical JSON
of the body (sorted keys, no whitespace), so a reformatted file is the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from llmbatch.defaults import PROVIDER
from llmbatch.providers import Format, claimants, format_of, formats
from llmbatch.request_types import (
    MAX_CUSTOM_ID,
    MIB,
    Fields,
    LineError,
    Request,
    _json_reason,
    body_hash,
    canonical_json,
    check_custom_id,
    kind,
    model_of,
    short,
    text_size,
)

# what a request is lives in request_types.py (a provider's format needs it, and this module
# needs the formats); it is also found here, where plugins have always imported it
__all__ = [
    "MAX_CUSTOM_ID",
    "MIB",
    "Fields",
    "LineError",
    "Request",
    "body_hash",
    "canonical_json",
    "check_custom_id",
    "from_item",
    "kind",
    "line_fields",
    "make_request",
    "model_of",
    "parse_line",
    "parse_obj",
    "short",
    "text_size",
]


def parse_line(raw: bytes, provider: str = PROVIDER) -> Request:
    """Parse and validate one input line (without its newline); raise LineError with the reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(_json_reason(raw, exc)) from None
    return parse_obj(obj, provider)


def line_fields(raw: bytes, provider: str = PROVIDER) -> Fields:
    """`parse_line`'s answer as a plain tuple (`Fields`): the importer's path, which takes the
    format's one-pass `fast_fields` where it has one and `parse_obj` for every other line
    (and for each that it refuses, so the reason and its hint are `parse_obj`'s)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(_json_reason(raw, exc)) from None
    if type(obj) is dict:
        fmt, name = _format_for(obj, provider)
        try:
            cid = fmt.line_id(obj)
        except LineError:
            cid = None
        # check_custom_id's rule for the usual id: printable ASCII, 1 to MAX_CUSTOM_ID long
        usual = type(cid) is str and 0 < len(cid) <= MAX_CUSTOM_ID
        if usual and cid.isascii() and cid.isprintable():  # type: ignore[union-attr]
            got = fmt.fast_fields(cid, obj, name)  # type: ignore[arg-type]
            if got is not None:
                return got
    return parse_obj(obj, provider).fields()


def parse_obj(obj: object, provider: str = PROVIDER) -> Request:
    """Validate one decoded input line: a line in a shape only one provider speaks goes to
    that provider (`Format.claims`); any other line to `provider`'s format."""
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {kind(obj)}")
    fmt, name = _format_for(obj, provider)
    try:
        custom_id = fmt.line_id(obj)
        check_custom_id(custom_id, fmt.id_field)
        assert isinstance(custom_id, str)
        return fmt.parse(custom_id, obj, name)
    except LineError as exc:
        hint = _shape_hint(obj, fmt)
        if hint is None:
            raise
        raise LineError(f"{exc}; {hint}") from None


def _format_for(obj: dict[str, Any], provider: str) -> tuple[Format, str]:
    """The format that reads `obj`, and its provider's name: the one whose own shape the line
    is (`Format.claims`), else `provider`'s."""
    fmt = format_of(provider)
    for other in claimants():
        if other.claims(obj):
            return (other, other.name) if other is not fmt else (fmt, provider)
    return fmt, provider


def _shape_hint(obj: dict[str, Any], fmt: Format) -> str | None:
    """For a line refused by `fmt`: the providers whose own line shape it is, if not fmt's."""
    if fmt.full_line(obj):
        return None
    others = [f for f in formats() if type(f) is not type(fmt) and f.full_line(obj)]
    if not others:
        return None
    names = " or ".join(f"--provider {f.name}" for f in others[:3])
    base = min(others, key=lambda f: len(type(f).__mro__))  # OpenAI's, not a gateway's
    return f"it is a line in {base.label or base.name}'s shape: enqueue it with {names}"


def make_request(
    custom_id: object, body: object, *, url: str | None = None, provider: str = PROVIDER
) -> Request:
    """Validate a request given through the Python API (the same rules as a line)."""
    check_custom_id(custom_id)
    assert isinstance(custom_id, str)
    return format_of(provider).item(custom_id, body, url, provider)


def from_item(item: object, provider: str = PROVIDER) -> Request:
    """Validate a request given as `Queue.add_many` takes it: a batch input line as a dict
    in its provider's shape, or the short form `{"custom_id", "body"[, "url"]}` (POST to the
    provider's default endpoint)."""
    if not isinstance(item, Mapping):
        raise LineError(f"expected a dict, got {kind(item)}")
    fmt = format_of(provider)
    if fmt.full_line(item) or any(f.claims(item) for f in claimants()):
        return parse_obj(dict(item), provider)
    return make_request(
        item.get("custom_id"), item.get("body"), url=item.get("url"), provider=provider
    )
