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

pydantic costs a noticeable part of the CLI's start: this module is imported only where a
config table is there to be checked, never by a command run without a config file.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from llmbatch.errors import ConfigError

Unknown = Callable[[str], str]  # an unknown key -> the whole message


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a key takes: the Python type pydantic checks, and how a message says it."""

    type: Any
    says: str
    above: float | None = None  # the value must be above this


ANY = Kind(Any, "")
TABLE = Kind(dict[str, Any], "a table")
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
    model = _model(tuple(sorted(kinds.items(), key=lambda kv: kv[0])))
    try:
        model.model_validate(dict(values))
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


def kinds_of(cls: type, leave_out: tuple[str, ...] = ()) -> dict[str, Kind]:
    """Field name -> Kind for a settings dataclass."""
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
def _model(kinds: tuple[tuple[str, Kind], ...]) -> type[BaseModel]:
    """A strict pydantic model with one optional field per key, refusing any other key (each
    field named by its alias: a key may be any word, `json` or `model_x` too)."""
    fields: dict[str, Any] = {
        f"f{i}": (k.type, Field(default=None, gt=k.above, alias=name))
        for i, (name, k) in enumerate(kinds)
    }
    config = ConfigDict(strict=True, extra="forbid")
    return create_model("Table", __config__=config, **fields)


def _wrong(where: str, key: str, value: Any, kind: Kind, echo: bool) -> str:
    if kind is TABLE:
        table = f"{where.strip(' []:')}.{key}" if where.startswith("[") else key
        return f"{where}{key} must be a table ([{table}]), got a {type(value).__name__}"
    return f"{where}{key} must be {kind.says}" + (f", got {value!r}" if echo else "")
