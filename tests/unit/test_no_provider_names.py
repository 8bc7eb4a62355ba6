"""Generic code names no provider: every difference lives in the provider's plugin.

Outside `providers/`, `emulator/`, `defaults.py` and `demo.py`, no string literal equals a
registered provider's name and nothing imports `llmbatch.providers.<name>` (or one of its
`<name>_*` modules), by an import statement or by naming the module in a string (importlib,
an entry point's target). Docstrings may name providers; comments are not literals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmbatch
from llmbatch.providers import names

SRC = Path(llmbatch.__file__).parent
ALLOWED_DIRS = ("providers", "emulator")
ALLOWED_FILES = ("defaults.py", "demo.py")


def generic_modules() -> list[Path]:
    return [
        p
        for p in sorted(SRC.rglob("*.py"))
        if p.relative_to(SRC).parts[0] not in ALLOWED_DIRS
        and p.relative_to(SRC).as_posix() not in ALLOWED_FILES
    ]


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _names_a_provider_module(module: str, providers: set[str]) -> bool:
    parts = module.split(".")
    if parts[:2] != ["llmbatch", "providers"] or len(parts) < 3:
        return False
    return any(parts[2] == n or parts[2].startswith(n + "_") for n in providers)


def offences(source: str, where: str, providers: set[str]) -> list[str]:
    """Where a module's source names a provider: `where:line: what`."""
    tree = ast.parse(source, where)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in providers
            and id(node) not in docs
        ):
            found.append(f"{where}:{node.lineno}: the literal {node.value!r}")
            continue
        if (  # importlib.import_module("llmbatch.providers.<name>"), an entry point's target
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and _names_a_provider_module(node.value.split(":")[0].strip(), providers)
        ):
            found.append(f"{where}:{node.lineno}: names the module {node.value!r}")
            continue
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        named = [m for m in modules if _names_a_provider_module(m, providers)]
        if named:
            found.append(f"{where}:{node.lineno}: imports {named[0]}")
    return found


def test_the_builtins_are_registered() -> None:
    assert {"openai", "azure", "anthropic"} <= set(names())


def test_generic_modules_name_no_provider() -> None:
    providers = set(names())
    found = [
        o
        for p in generic_modules()
        for o in offences(p.read_text(encoding="utf-8"), p.relative_to(SRC).as_posix(), providers)
    ]
    assert found == [], "generic code names a provider (ask its Format instead):\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ('x = "anthropic"', 1),
        ('if p == "azure": pass', 1),
        ("from llmbatch.providers.openai import OpenAIProvider", 1),
        ("import llmbatch.providers.anthropic_format", 1),
        ("from llmbatch.providers import openai", 1),
        ('def f():\n    """Anthropic or openai, in prose."""\n', 0),
        ('"""anthropic"""', 0),
        ("from llmbatch.providers import format_of", 0),
        ('x = "openai-compatible"', 0),
        ('importlib.import_module("llmbatch.providers.anthropic")', 1),
        ('target = "llmbatch.providers.openai_format:OpenAIFormat"', 1),
        ('x = "llmbatch.providers.testing"', 0),
    ],
)
def test_the_check_sees_what_it_should(source: str, count: int) -> None:
    found = offences(source, "probe.py", {"openai", "azure", "anthropic"})
    assert len(found) == count, found
