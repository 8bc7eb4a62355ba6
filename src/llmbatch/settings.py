"""Typed configuration models: each table of the config file is validated by pydantic against
the model of what it fills, and the first thing wrong is said in one line naming the table and
the key (`[engine] poll_interval must be a number, got 'fast'`), never a pydantic report.

A model is made from what already says the types: the settings dataclass a table fills
(`EngineSettings` for `[engine]`, `RetryPolicy` for `[engine.retry]`, `ArchiveSettings`,
`WebhookSettings`, a provider's settings class), or a command's click options for its table in
`llmbatch.toml`. Only the keys a table holds are checked (every field is optional here: the
dataclass has the defaults, all of them in defaults.py). Values are checked strictly, as TOML
gives them: `true` is not a number and `"5"` is not an integer. A field whose values must be
above 0 says so in its metadata (`tables.positive`).

The models are pydantic's own validators (pydantic-core's `SchemaValidator`, what a pydantic
model compiles to), built here straight from the dataclasses' fields: importing pydantic's
model layer and making a model class costs the CLI's start about three times as much (see
benchmarks/bench_config.py), for the same checks and the same errors. Even so this module is
imported only where a config table is there to be checked, never by a command run without a
config file.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic_core import SchemaValidator, ValidationError, core_schema

from llmbatch.errors import ConfigError

Unknown = Callable[[str], str]  # an unknown key -> the whole message


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a key takes: the Python type pydantic checks, and how a message says it."""

    type: Any  # str, int, float, bool; dict (a table); None: any value
    says: str
    above: float | None = None  # the value must be above this


ANY = Kind(None, "")
TABLE = Kind(dict, "a table")
SCALARS = {
    str: Kind(str, "a string"),
    int: Kind(int, "an integer"),
    float: Kind(float, "a number"),
    bool: Kind(bool, "true or false"),
}
# An annotation read as text (a settings class whose hints cannot be resolved here)
_NAMED = {"str": str, "int": int, "float": float, "bool": bool}


def check(
    values: Mapping[str, Any],
    kinds: Mapping[str, Kind],
    where: str,
    unknown: Unknown,
    *,
    echo: bool = True,
) -> None:
    """Validate a table's `values` against `kinds` (key -> Kind); ConfigError, in one line, for
    the first key in the table's order that is unknown or of the wrong type. `where` starts
    the message (`"[engine] "`, `"FILE: "`); `echo` False leaves the value out of it (a value
    that may be a secret pasted in the wrong place)."""
    if not values:
        return
    model = _model(tuple(kinds.items()))
    try:
        model.validate_python(dict(values))
    except ValidationError as exc:
        order = {key: i for i, key in enumerate(values)}
        first = min(exc.errors(), key=lambda e: order.get(str(e["loc"][0]), len(order)))
        key = str(first["loc"][0])
        if first["type"] == "extra_forbidden":
            raise ConfigError(unknown(key)) from None
        raise ConfigError(_wrong(where, key, values[key], kinds[key], echo)) from None


def check_dataclass(
    values: Mapping[str, Any],
    cls: type,
    where: str,
    unknown: Unknown,
    *,
    leave_out: tuple[str, ...] = (),
    echo: bool = True,
) -> None:
    """`check` against the fields of the settings dataclass `cls` (less `leave_out`: keys this
    table may not set); a field that is itself a settings dataclass takes a table."""
    check(values, kinds_of(cls, leave_out), where, unknown, echo=echo)


@functools.cache
def kinds_of(cls: type, leave_out: tuple[str, ...] = ()) -> dict[str, Kind]:
    """Field name -> Kind for a settings dataclass (read once: do not change the result)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # a plugin's class naming what it imports to type-check
        hints = {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in leave_out:
            continue
        kind = _kind(hints.get(f.name, f.type))
        above = f.metadata.get("above")
        if above is not None and kind.type in (int, float):
            noun = "an integer" if kind.type is int else "a number"
            kind = Kind(kind.type, f"{noun} above {above:g}", above)
        out[f.name] = kind
    return out


def _kind(hint: Any) -> Kind:
    """The Kind of an annotation: a scalar (optional or not), a dataclass (a table), else any
    value (checked, if at all, by what reads it)."""
    if isinstance(hint, str):
        hint = _NAMED.get(hint.removesuffix(" | None"), Any)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else Any
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return TABLE
    return SCALARS.get(hint, ANY) if isinstance(hint, type) else ANY


@functools.cache
def _model(kinds: tuple[tuple[str, Kind], ...]) -> SchemaValidator:
    """A strict model of a table: one optional field per key, any other key refused."""
    fields = {
        name: core_schema.typed_dict_field(_schema(kind), required=False) for name, kind in kinds
    }
    return SchemaValidator(core_schema.typed_dict_schema(fields, extra_behavior="forbid"))


def _schema(kind: Kind) -> core_schema.CoreSchema:
    if kind.type is str:
        return core_schema.str_schema(strict=True)
    if kind.type is bool:
        return core_schema.bool_schema(strict=True)
    if kind.type is int:
        return core_schema.int_schema(
            strict=True, gt=None if kind.above is None else int(kind.above)
        )
    if kind.type is float:
        return core_schema.float_schema(strict=True, gt=kind.above)
    if kind.type is dict:
        return core_schema.dict_schema(strict=True)
    return core_schema.any_schema()


def _wrong(where: str, key: str, value: Any, kind: Kind, echo: bool) -> str:
    if kind is TABLE:
        table = f"{where.strip(' []:')}.{key}" if where.startswith("[") else key
        return f"{where}{key} must be a table ([{table}]), got a {type(value).__name__}"
    return f"{where}{key} must be {kind.says}" + (f", got {value!r}" if echo else "")
