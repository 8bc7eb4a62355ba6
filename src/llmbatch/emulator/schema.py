"""JSON Schema for structured outputs and tools: the providers' rules, and an instance.

**OpenAI strict mode** (`check_openai_strict`, for `response_format`/`text.format` with
`strict: true` and strict function tools), as the Structured Outputs guide documents it:
the root is an object (not `anyOf`); every object sets `additionalProperties: false` and
lists every property in `required`; every subschema has a `type` (or `anyOf`, `enum`,
`const`, `$ref`); `$ref` stands alone; at most 10 levels of nesting, 5,000 properties and
1,000 enum values; string `format` is one of the documented nine. Keywords documented as
unsupported are refused: `allOf`, `not`, `oneOf`, `if`/`then`/`else`,
`dependentRequired`/`dependentSchemas`, `patternProperties`, `unevaluatedProperties`,
`propertyNames`, `minProperties`/`maxProperties`, `unevaluatedItems`, `contains`,
`minContains`/`maxContains`, `uniqueItems`. (`minLength`/`maxLength` are not on the guide's
list either way: accepted.) Messages follow the service's: `In context=('properties',
'name'), 'allOf' is not permitted.`

**Anthropic structured outputs** (`check_anthropic`, for `output_config.format` and
`strict` tools), as the SDK's `transform_schema` keeps them: `type`, `enum`, `const`,
`anyOf`, `allOf`, `$ref`/`$defs`, `properties`/`required`, `additionalProperties: false`
(required on objects), `items`, `minItems` 0 or 1, string `format` of the ten it lists,
and annotations; anything else is refused.

Instances of a schema are `instances.py`'s.
"""

from __future__ import annotations

import re
from typing import Any, Final

Json = dict[str, Any]

OPENAI_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
ANTHROPIC_FORMATS = OPENAI_FORMATS | {"uri"}
OPENAI_FORBIDDEN = (
    "allOf",
    "not",
    "oneOf",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "unevaluatedProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "uniqueItems",
)
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly"}
    | {"writeOnly", "$schema", "$id"}
)
ANTHROPIC_KEYWORDS = (
    frozenset(
        {"type", "enum", "const", "anyOf", "allOf", "$ref", "$defs", "definitions", "properties"}
        | {"required", "additionalProperties", "items", "minItems", "format"}
    )
    | ANNOTATIONS
)
MAX_DEPTH: Final = 10
MAX_PROPERTIES: Final = 5_000
MAX_ENUM_VALUES: Final = 1_000
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


class SchemaError(ValueError):
    """A schema the provider refuses; the message is the provider's own wording (without
    the `Invalid schema for ...: ` prefix the caller adds)."""


# --- OpenAI strict mode ----------------------------------------------------------------------


def _ctx(context: tuple[str, ...]) -> str:
    return f"In context={context!r}"


def check_openai_strict(schema: Any) -> None:
    """Raise SchemaError for a schema strict mode refuses."""
    if not isinstance(schema, dict):
        raise SchemaError("schema must be a JSON Schema of 'type: \"object\"', got a non-object.")
    root_type = schema.get("type")
    if root_type != "object":
        got = f'type: "{root_type}"' if root_type is not None else "anyOf" * ("anyOf" in schema)
        raise SchemaError(f"schema must be a JSON Schema of 'type: \"object\"', got '{got}'.")
    counts = {"properties": 0, "enum": 0}
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                _strict(sub, schema, (key, name), 0, counts)
    _strict(schema, schema, (), 0, counts)


def _strict(
    node: Any, root: Json, context: tuple[str, ...], depth: int, counts: dict[str, int]
) -> None:
    if not isinstance(node, dict):
        raise SchemaError(f"{_ctx(context)}, schema must be a JSON object.")
    if "$ref" in node:
        others = set(node) - {"$ref"}
        if others:
            raise SchemaError(f"{_ctx(context)}, $ref cannot have keywords {sorted(others)}.")
        if resolve(root, node["$ref"]) is None:
            raise SchemaError(f"{_ctx(context)}, reference '{node['$ref']}' could not be resolved.")
        return
    for keyword in OPENAI_FORBIDDEN:
        if keyword in node:
            raise SchemaError(f"{_ctx(context)}, '{keyword}' is not permitted.")
    enum = node.get("enum")
    if enum is not None:
        counts["enum"] += len(enum) if isinstance(enum, list) else 0
        if counts["enum"] > MAX_ENUM_VALUES:
            raise SchemaError(
                f"{_ctx(context)}, the schema has more than {MAX_ENUM_VALUES} enum values in total."
            )
    any_of = node.get("anyOf")
    if any_of is not None:
        if not isinstance(any_of, list) or not any_of:
            raise SchemaError(f"{_ctx(context)}, 'anyOf' must be a non-empty array.")
        for i, sub in enumerate(any_of):
            _strict(sub, root, (*context, "anyOf", str(i)), depth, counts)
        return
    types = node.get("type")
    if types is None:
        if "enum" in node or "const" in node:
            return
        raise SchemaError(f"{_ctx(context)}, schema must have a 'type' key.")
    names = types if isinstance(types, list) else [types]
    for name in names:
        if name not in _TYPES:
            raise SchemaError(f"{_ctx(context)}, '{name}' is not a valid type.")
    fmt = node.get("format")
    if fmt is not None and fmt not in OPENAI_FORMATS:
        raise SchemaError(f"{_ctx(context)}, format '{fmt}' is not supported.")
    pattern = node.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except (re.error, TypeError):
            raise SchemaError(
                f"{_ctx(context)}, 'pattern' is not a valid regular expression."
            ) from None
    if "object" in names:
        if depth + 1 > MAX_DEPTH:
            raise SchemaError(
                f"{_ctx(context)}, the schema is nested deeper than {MAX_DEPTH} levels."
            )
        if node.get("additionalProperties") is not False:
            raise SchemaError(
                f"{_ctx(context)}, 'additionalProperties' is required to be supplied and to be "
                "false."
            )
        properties = node.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaError(f"{_ctx(context)}, 'properties' must be an object.")
        required = node.get("required", [])
        if not isinstance(required, list):
            required = []
        for key in properties:
            if key not in required:
                raise SchemaError(
                    f"{_ctx(context)}, 'required' is required to be supplied and to be an array "
                    f"including every key in properties. Missing '{key}'."
                )
        for key in required:
            if key not in properties:
                raise SchemaError(
                    f"{_ctx(context)}, 'required' is required to be supplied and to be an array "
                    f"including every key in properties. Extra required key '{key}' supplied."
                )
        counts["properties"] += len(properties)
        if counts["properties"] > MAX_PROPERTIES:
            raise SchemaError(
                f"{_ctx(context)}, the schema has more than {MAX_PROPERTIES} properties in total."
            )
        for key, sub in properties.items():
            _strict(sub, root, (*context, "properties", key), depth + 1, counts)
    if "array" in names and "items" in node:
        _strict(node["items"], root, (*context, "items"), depth, counts)


# --- Anthropic structured outputs ------------------------------------------------------------


def check_anthropic(schema: Any, where: str) -> None:
    """Raise SchemaError for a schema Anthropic's structured outputs refuse; `where`
    prefixes the message (`output_config.format.schema`, `tools.0.input_schema`)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: Input should be a valid dictionary")
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                _anthropic(sub, schema, f"{where}.{key}.{name}")
    _anthropic(schema, schema, where)


def _anthropic(node: Any, root: Json, where: str) -> None:
    if not isinstance(node, dict):
        raise SchemaError(f"{where}: Input should be a valid dictionary")
    kind = node.get("type")
    for keyword in node:
        if keyword not in ANTHROPIC_KEYWORDS:
            raise SchemaError(
                f"{where}: For '{kind or 'any'}' type, property '{keyword}' is not supported"
            )
    if "$ref" in node:
        if resolve(root, node["$ref"]) is None:
            raise SchemaError(f"{where}: reference '{node['$ref']}' could not be resolved")
        return
    for key in ("anyOf", "allOf"):
        for i, sub in enumerate(node.get(key) or []):
            _anthropic(sub, root, f"{where}.{key}.{i}")
    if kind == "object":
        if node.get("additionalProperties") is not False:
            raise SchemaError(
                f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false"
            )
        for key, sub in (node.get("properties") or {}).items():
            _anthropic(sub, root, f"{where}.properties.{key}")
    if kind == "string" and node.get("format") not in (None, *ANTHROPIC_FORMATS):
        raise SchemaError(f"{where}: For 'string' type, format '{node['format']}' is not supported")
    if kind == "array":
        if node.get("minItems") not in (None, 0, 1):
            raise SchemaError(
                f"{where}: For 'array' type, 'minItems' values other than 0 or 1 are not supported"
            )
        if "items" in node:
            _anthropic(node["items"], root, f"{where}.items")


def resolve(root: Json, ref: Any) -> Json | None:
    """The subschema a local `$ref` (`#`, `#/$defs/X`, any JSON pointer) names, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None
