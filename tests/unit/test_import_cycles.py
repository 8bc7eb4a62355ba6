"""No import cycle in `src/llmbatch`, counting every import: at module level, inside functions
and under `TYPE_CHECKING`. A cycle means two modules are one concept (or one owns a type the
other should); a lazy import only hides it.

An edge goes from a module to the most specific module an import names: `from a.b import c`
points at `a.b.c` when that is a module, else at `a.b` (a package's `__init__`); and, from a
module outside package `a.b`, at `a.b` too, whose `__init__` importing `a.b.c` runs first
(`llmbatch.results` importing `llmbatch.providers.base` ran `llmbatch/providers/__init__.py`,
which imports `llmbatch.results`: `import llmbatch.results` first failed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmbatch

SRC = Path(llmbatch.__file__).parent


def modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def graph(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the modules it imports (anywhere in its source)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, (path, package) in mods.items():
        here = name if package else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(r for a in node.names if (r := resolve(a.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                for a in node.names:
                    full = f"{base}.{a.name}"
                    target = full if full in mods else resolve(base)
                    if target:
                        deps.add(target)
        deps |= {
            parent
            for d in deps
            for parent in _enclosing(d)
            if mods[parent][1] and not (name + ".").startswith(parent + ".")
        }
        deps.discard(name)
        edges[name] = deps
    return edges


def _enclosing(name: str) -> list[str]:
    """The packages a module is in, outermost first (`a.b.c`: `a`, `a.b`)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import X\n"
    )
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    edges = graph(modules(pkg))
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.c"}
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_importing_a_module_of_a_package_runs_its_init(tmp_path: Path) -> None:
    """`from pkg.sub.base import X` in `pkg.user` runs `pkg/sub/__init__.py` first: if that
    imports `pkg.user`, the two are a cycle (an ImportError when `pkg.user` is imported
    first), though no import names `pkg.sub` itself."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.plugin import P\n")
    (pkg / "sub" / "base.py").write_text("X = 1\n")
    (pkg / "sub" / "plugin.py").write_text("from pkg.user import U\nP = 1\n")
    (pkg / "user.py").write_text("from pkg.sub.base import X\nU = 1\n")
    edges = graph(modules(pkg))
    assert edges["pkg.user"] == {"pkg.sub", "pkg.sub.base"}
    assert edges["pkg.sub.plugin"] == {"pkg.user"}  # inside pkg.sub: its __init__ already ran
    assert cycles(edges) == [["pkg.sub", "pkg.sub.plugin", "pkg.user"]]


def test_src_has_no_import_cycle() -> None:
    edges = graph(modules())
    found = cycles(edges)
    lines = []
    for component in found:
        lines.append(" <-> ".join(component))
        lines += [f"    {m} -> {', '.join(sorted(edges[m] & set(component)))}" for m in component]
    assert not found, "import cycles in src/llmbatch:\n" + "\n".join(lines)
