"""A config file table checked against the dataclass it fills: a wrong type is one line naming
the table and key, not a TypeError deep in a tick. Shared by `[engine]` and `[providers.NAME]`."""

from __future__ import annotations

import dataclasses
from typing import Any

from llmbatch.errors import ConfigError

_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "float": ((int, float), "a number"),
    "float | None": ((int, float), "a number"),
    "int": ((int,), "an integer"),
    "int | None": ((int,), "an integer"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
    "str | None": ((str,), "a string"),
}


def check_types(table: str, values: dict[str, Any], cls: Any) -> None:
    """A wrong type in the config file is one clear line, not a TypeError deep in a tick."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in values.items():
        wanted, kind = _TYPES.get(types.get(key, ""), ((object,), ""))
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            raise ConfigError(f"{table} {key} must be {kind}, got {value!r}")
