"""Strings that match a regular expression: the `pattern` of a JSON Schema string.

The pattern is parsed once (Python's own regex parser) into a small plan — literals,
character sets as the characters they allow, repeats, groups, alternatives,
back-references — and each string is drawn from the plan with a seeded `random.Random`
(repeats take their minimum to two more). Anchors and lookarounds are skipped; the result
is checked with `re.search`, as JSON Schema validators check `pattern`, and a few draws are
tried before giving up (None).
"""

from __future__ import annotations

import random
import re
import string
from functools import lru_cache
from typing import Any

try:  # Python >= 3.11 keeps the regex parser here; sre_parse is its deprecated alias
    from re import _parser as _sre  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse as _sre

_CLASSES = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_DIGIT": string.ascii_letters + "-_.@",
    "CATEGORY_NOT_WORD": "-.@",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits + "-_.@",
}
_PRINTABLE = string.ascii_letters + string.digits + "-_ .@"
_WIDEST_RANGE = 512

# A plan is a list of steps: ("text", s) | ("pick", chars) | ("repeat", low, high, plan)
# | ("group", index, plan) | ("either", [plan, ...]) | ("same", index).
Plan = list[tuple[Any, ...]]


def _chars(items: list[tuple[Any, Any]]) -> str:
    """The characters a `[...]` set allows (a sample of wide ranges)."""
    negate = any(str(op) == "NEGATE" for op, _ in items)
    allowed: set[str] = set()
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            allowed.add(chr(av))
        elif name == "RANGE":
            allowed.update(chr(c) for c in range(av[0], min(av[1], av[0] + _WIDEST_RANGE) + 1))
        elif name == "CATEGORY":
            allowed.update(_CLASSES.get(str(av), ""))
    if negate:
        return "".join(c for c in _PRINTABLE if c not in allowed) or "~"
    return "".join(sorted(allowed)) or "a"


def _plan(items: Any) -> Plan:
    out: Plan = []
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            out.append(("text", chr(av)))
        elif name == "NOT_LITERAL":
            out.append(("text", "a" if chr(av) != "a" else "b"))
        elif name == "ANY":
            out.append(("text", "a"))
        elif name == "IN":
            out.append(("pick", _chars(av)))
        elif name == "CATEGORY":
            out.append(("pick", _CLASSES.get(str(av), "a")))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = av
            top = low + 2 if high == _sre.MAXREPEAT else min(high, low + 2)
            out.append(("repeat", low, max(top, low), _plan(sub)))
        elif name == "SUBPATTERN":
            out.append(("group", av[0], _plan(av[-1])))
        elif name == "ATOMIC_GROUP":
            out.append(("group", None, _plan(av)))
        elif name == "BRANCH":
            out.append(("either", [_plan(alt) for alt in av[1]]))
        elif name == "GROUPREF":
            out.append(("same", av))
        elif name not in ("AT", "ASSERT", "ASSERT_NOT"):
            raise ValueError(name)
    return out


def _draw(plan: Plan, rng: random.Random, groups: dict[int, str]) -> str:
    out = []
    for step in plan:
        kind = step[0]
        if kind == "text":
            out.append(step[1])
        elif kind == "pick":
            out.append(rng.choice(step[1]))
        elif kind == "repeat":
            low, high, sub = step[1], step[2], step[3]
            count = rng.randint(max(low, 1) if high >= 1 else 0, high)
            out.extend(_draw(sub, rng, groups) for _ in range(count))
        elif kind == "group":
            text = _draw(step[2], rng, groups)
            if step[1] is not None:
                groups[step[1]] = text
            out.append(text)
        elif kind == "either":
            out.append(_draw(rng.choice(step[1]), rng, groups))
        else:
            out.append(groups[step[1]])
    return "".join(out)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> tuple[re.Pattern[str], Plan] | None:
    try:
        return re.compile(pattern), _plan(_sre.parse(pattern))
    except (re.error, TypeError, ValueError, RecursionError):
        return None


def from_regex(pattern: str, rng: random.Random, tries: int = 4) -> str | None:
    """A string that `re.search(pattern, s)` matches, or None when none was found."""
    found = _compiled(pattern)
    if found is None:
        return None
    compiled, plan = found
    for _ in range(tries):
        try:
            text = _draw(plan, rng, {})
        except (KeyError, IndexError, RecursionError):
            return None
        if compiled.search(text):
            return text
    return None
