"""A deterministic value valid against a JSON Schema: what a structured reply says.

**Instances** (`instance`): a deterministic value valid against a schema (the validator
`jsonschema` agrees: see the tests), drawn from a seeded `random.Random`. Properties come
in the schema's order, as the service writes them; optional ones appear half the time;
recursion ends by choosing terminal `anyOf` branches and minimal arrays past a depth.
Like a model reading its instructions, it also keeps the constraints the `anthropic` SDK
moves out of a schema into its description (`{minimum: 0, pattern: ...}` after a blank line),
so a pydantic model's own validation passes, as it does with the real model.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from typing import Any, Final

from llmbatch.emulator.patterns import from_regex
from llmbatch.emulator.schema import resolve

Json = dict[str, Any]
_WORDS = [
    *("alpha", "beta", "gamma", "delta", "answer", "batch", "value", "result", "item"),
    *("record", "summary", "note", "river", "stone", "green", "quiet", "early", "north"),
    *("field", "light", "paper", "signal"),
]


#: Past this depth, choose terminal branches and the fewest array items.
SHALLOW: Final = 6
_HARD_LIMIT: Final = 40


_HINTED = (
    *("pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    *("multipleOf", "minLength", "maxLength", "minItems", "maxItems"),
)
_HINT = re.compile(r"(?:^|, )(" + "|".join(_HINTED) + r"): ")


def hints(description: Any) -> Json:
    """The constraints a description ends with in the SDK's `{key: value, ...}` form."""
    if not isinstance(description, str) or not description.endswith("}"):
        return {}
    start = description.rfind("\n\n{")
    body = description[start + 3 : -1] if start >= 0 else description[1:-1]
    if start < 0 and not description.startswith("{"):
        return {}
    marks = list(_HINT.finditer(body))
    out: Json = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        raw = body[mark.end() : end]
        key = mark.group(1)
        if key in ("pattern", "format"):
            out[key] = raw
            continue
        try:
            number = float(raw)
        except ValueError:
            continue
        out[key] = int(number) if number.is_integer() else number
    return out


def instance(schema: Any, rng: random.Random, *, root: Json | None = None, depth: int = 0) -> Any:
    """A value valid against `schema`, chosen by `rng`."""
    if not isinstance(schema, dict):
        return {} if schema is not False else None
    root = schema if root is None else root
    if "description" in schema and "{" in str(schema["description"]):
        found = hints(schema["description"])
        if found:
            schema = {**found, **schema}
    if depth > _HARD_LIMIT:
        return None
    if "$ref" in schema:
        target = resolve(root, schema["$ref"])
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        merged = {**(target or {}), **rest} if rest else (target or {})
        return instance(merged, rng, root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    if isinstance(schema.get("allOf"), list):
        return instance(_merge_all(schema, root), rng, root=root, depth=depth)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            base = {k: v for k, v in schema.items() if k not in (key, "type")}
            chosen = _choose(branches, rng, depth, root)
            return instance({**base, **chosen} if base else chosen, rng, root=root, depth=depth)
    kind = _kind(schema, rng, depth)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, root, depth)
    if kind == "string":
        return _string(schema, rng)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))


def _merge_all(schema: Json, root: Json) -> Json:
    merged: Json = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if isinstance(part, dict) and "$ref" in part:
            part = resolve(root, part["$ref"]) or {}
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _terminal(schema: Any, root: Json) -> bool:
    if not isinstance(schema, dict):
        return True
    if "$ref" in schema:
        return False
    types = schema.get("type")
    names = types if isinstance(types, list) else [types]
    return not ({"object", "array"} & set(names)) or "null" in names


def _choose(branches: list[Any], rng: random.Random, depth: int, root: Json) -> Json:
    if depth >= SHALLOW:
        terminal = [b for b in branches if _terminal(b, root)]
        if terminal:
            branches = terminal
    chosen = rng.choice(branches)
    return chosen if isinstance(chosen, dict) else {}


def _kind(schema: Json, rng: random.Random, depth: int) -> str | None:
    types = schema.get("type")
    if isinstance(types, str):
        return types
    if isinstance(types, list) and types:
        if "null" in types and (depth >= SHALLOW or len(types) == 1):
            return "null"
        solid = [t for t in types if t != "null"]
        # Nullable fields are filled most of the time, as a model fills them.
        if "null" in types and rng.random() < 0.2:
            return "null"
        return str(rng.choice(solid))
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _object(schema: Json, rng: random.Random, root: Json, depth: int) -> Json:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out: Json = {}
    for key, sub in properties.items():
        if key in required or (depth < SHALLOW and rng.random() < 0.5):
            out[key] = instance(sub, rng, root=root, depth=depth + 1)
    extra = schema.get("additionalProperties")
    if not properties and isinstance(extra, dict) and depth < SHALLOW:
        for i in range(rng.randint(1, 2)):
            out[f"{rng.choice(_WORDS)}_{i}"] = instance(extra, rng, root=root, depth=depth + 1)
    low = schema.get("minProperties")
    if isinstance(low, int) and len(out) < low:
        for key, sub in properties.items():
            if len(out) >= low:
                break
            out.setdefault(key, instance(sub, rng, root=root, depth=depth + 1))
        while len(out) < low and extra is not False:
            out[f"extra_{len(out)}"] = instance(extra if isinstance(extra, dict) else {}, rng)
    return out


def _array(schema: Json, rng: random.Random, root: Json, depth: int) -> list[Any]:
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    low = low if isinstance(low, int) and low >= 0 else 0
    count = low if depth >= SHALLOW else low + rng.randint(0 if low else 1, 3)
    if isinstance(high, int):
        count = min(count, max(high, low))
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = schema.get("items", {})
    out: list[Any] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < max(count, len(prefix) if count else 0) and attempts < count * 8 + 8:
        attempts += 1
        sub = prefix[len(out)] if len(out) < len(prefix) else items
        value = instance(sub if sub is not True else {}, rng, root=root, depth=depth + 1)
        if schema.get("uniqueItems"):
            key = repr(value)
            if key in seen:
                continue
            seen.add(key)
        out.append(value)
    return out


def _string(schema: Json, rng: random.Random) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt](rng)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        found = from_regex(pattern, rng)
        if found is not None:
            return found
    text = " ".join(rng.choices(_WORDS, k=rng.randint(1, 5)))
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text += "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _bounds(
    schema: Json, default_low: float, default_high: float
) -> tuple[float, float, bool, bool]:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lo_open = hi_open = False
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low, lo_open = ex_low, True
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high, hi_open = ex_high, True
    lo = float(low) if isinstance(low, int | float) else None
    hi = float(high) if isinstance(high, int | float) else None
    if lo is None and hi is None:
        lo, hi = default_low, default_high
    elif lo is None:
        lo = (hi if hi is not None else 0.0) - (default_high - default_low)
    elif hi is None:
        hi = lo + (default_high - default_low)
    assert lo is not None and hi is not None
    return lo, hi, lo_open, hi_open


def _multiple(
    lo: float, hi: float, lo_open: bool, hi_open: bool, step: float, rng: random.Random
) -> float:
    """A multiple of `step` in the bounds that survives a float division check
    (`(v / step).is_integer()`, as validators test it): 0.3 / 0.1 does not."""
    first = int(-(-lo // step)) + (1 if lo_open and (lo / step).is_integer() else 0)
    last = int(hi // step) - (1 if hi_open and (hi / step).is_integer() else 0)
    candidates = list(range(first, last + 1)) if last - first < 64 else None
    for _ in range(24):
        n = rng.choice(candidates) if candidates else rng.randint(first, max(first, last))
        value = float(round(n * step, 12))
        if (value / step).is_integer():
            return value
    return 0.0 if first <= 0 <= last else round(first * step, 12)


def _integer(schema: Json, rng: random.Random) -> int:
    lo, hi, lo_open, hi_open = _bounds(schema, 0, 100)
    low = int(lo) + 1 if lo_open and lo == int(lo) else -int(-lo // 1)
    high = int(hi) - 1 if hi_open and hi == int(hi) else int(hi // 1)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        return int(_multiple(low, high, False, False, step, rng))
    return rng.randint(low, high) if low <= high else low


def _number(schema: Json, rng: random.Random) -> float | int:
    lo, hi, lo_open, hi_open = _bounds(schema, 0, 100)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = _multiple(lo, hi, lo_open, hi_open, step, rng)
        return int(value) if float(value).is_integer() else value
    value = round(rng.uniform(lo, hi), 2)
    if (lo_open and value <= lo) or value < lo or (hi_open and value >= hi) or value > hi:
        value = (lo + hi) / 2
    return value


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda r: (
        f"20{r.randint(20, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        f"T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
    ),
    "date": lambda r: f"20{r.randint(20, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
    "duration": lambda r: f"P{r.randint(1, 30)}D",
    "email": lambda r: f"{r.choice(_WORDS)}{r.randint(1, 99)}@example.com",
    "hostname": lambda r: f"{r.choice(_WORDS)}{r.randint(1, 99)}.example.com",
    "ipv4": lambda r: ".".join(str(r.randint(1, 254)) for _ in range(4)),
    "ipv6": lambda r: f"2001:db8::{r.randint(1, 65535):x}",
    "uuid": _uuid,
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}/{r.randint(1, 999)}",
}
