"""Rows by name: a statement's columns read into a domain type (types.py) by the names the
SQL gives them (`... AS field`), each value converted as the field declares it (`int`,
`str`, `float`, `bytes`, optional or not). Both drivers name columns alike; PostgreSQL's
sums come back as Decimal and SQLite's blobs as bytes-like, which the conversion evens out.
No column is read by its position: `scalar` and `column` read a one-column statement, and
refuse one of more columns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "str": str,
    "float": float,
    "bytes": bytes,
    "bool": bool,
}


_PLANS: dict[type, dict[str, Callable[[Any], Any] | None]] = {}


def _plan(cls: type) -> dict[str, Callable[[Any], Any] | None]:
    """Field name -> how to convert a non-NULL value (None: as the driver gives it)."""
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = {
            f.name: _CONVERT.get(str(f.type).removesuffix(" | None"))
            for f in dataclasses.fields(cls)
        }
    return plan


def named(cls: type[T], cur: Any) -> list[T]:
    """The cursor's rows as `cls` instances, matched to its fields by column name."""
    names = [d[0] for d in cur.description]
    plan = _plan(cls)
    converts = [plan[n] for n in names]  # KeyError: a column the type does not have
    out = []
    for row in cur.fetchall():
        values = {
            n: v if c is None or v is None else c(v)
            for n, c, v in zip(names, converts, row, strict=True)
        }
        out.append(cls(**values))
    return out


def one(cls: type[T], cur: Any) -> T | None:
    """The cursor's first row as a `cls`, or None when it has none."""
    found = named(cls, cur)
    return found[0] if found else None


def scalar(cur: Any) -> Any:
    """The value of a one-column statement's first row (a count, a sum, an id), or None when it
    has no row."""
    if len(cur.description) != 1:
        raise ValueError(f"scalar() of a statement of {len(cur.description)} columns")
    row = cur.fetchone()
    return None if row is None else row[0]


def column(cur: Any) -> list[Any]:
    """The values of a one-column statement's rows."""
    if len(cur.description) != 1:
        raise ValueError(f"column() of a statement of {len(cur.description)} columns")
    return [row[0] for row in cur.fetchall()]


def by_name(cur: Any) -> list[dict[str, Any]]:
    """The cursor's rows as dicts keyed by column name (both drivers name them alike)."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
