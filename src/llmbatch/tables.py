"""What a settings dataclass says about its fields beyond their types, for the typed models that
check config tables (settings.py, which imports pydantic; this module does not)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T", int, float)


def positive(default: T) -> T:
    """A field whose value must be above 0 (`timeout: float = positive(5.0)`)."""
    return dataclasses.field(default=default, metadata={"above": 0})
