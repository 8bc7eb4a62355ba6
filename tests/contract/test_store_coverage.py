"""Every verb of the `Store` protocol has a contract test that runs on both backends.

A method counts as tested when a test in tests/contract/ that takes the `store` or `db`
fixture (both parametrised over SQLite and PostgreSQL, tests/conftest.py) calls it, directly
or through a helper function of its own module. A new Store method without one fails here,
naming it.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from llmbatch.store.base import Store

HERE = Path(__file__).parent
BOTH_BACKENDS = {"store", "db"}


def protocol_methods() -> set[str]:
    return {
        name
        for name, value in vars(Store).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def _calls(node: ast.AST) -> set[str]:
    return {
        n.func.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }


def covered_methods() -> set[str]:
    """Attribute calls made by both-backend tests (and the helpers of their modules)."""
    found: set[str] = set()
    for path in sorted(HERE.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        tests = [
            f
            for f in functions
            if f.name.startswith("test_") and BOTH_BACKENDS & {a.arg for a in f.args.args}
        ]
        if not tests:
            continue
        helpers = [f for f in functions if not f.name.startswith("test_")]
        for f in tests + helpers:
            found |= _calls(f)
    return found


def test_the_protocol_is_read() -> None:
    methods = protocol_methods()
    assert {"close", "create_intent", "apply_outcomes", "outbox_waiting"} <= methods
    assert len(methods) > 100


def test_every_store_method_has_a_contract_test_on_both_backends() -> None:
    missing = sorted(protocol_methods() - covered_methods())
    assert not missing, (
        f"{len(missing)} Store methods without a contract test on both backends (a test in "
        f"tests/contract/ taking `store` or `db` that calls them): {', '.join(missing)}"
    )
