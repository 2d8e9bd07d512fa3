"""No import cycles among harness modules: module-level and function-level imports both count (a lazy
import still ties two modules together); imports under `if TYPE_CHECKING:` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth (functions included), bar TYPE_CHECKING blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _type_checking_only(node) and child in node.body:
                continue
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (the named module, and the packages above it that are
    not above the importer, since importing a module runs its packages' __init__ first)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        own_package = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = own_package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base]
                # `from pkg import sub` imports the submodule pkg.sub when there is one.
                targets += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    step = ".".join(parts[:i])
                    if step in known and step not in ancestors:
                        graph[name].add(step)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_a_cycle(graph, set(group)) for group in groups]


def _a_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(group)


def test_harness_has_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert len(graph) > 30 and graph["harness.load.profiles"] >= {"harness.load.yamlfile"}
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # A function-level import closes the loop as surely as a module-level one.
        (
            {"a.py": "from pkg.b import X\n", "b.py": "X = 1\ndef f():\n    from pkg import a\n"},
            [["pkg.a", "pkg.b", "pkg.a"]],
        ),
        ({"a.py": "from . import b\n", "b.py": "from .c import Y\n", "c.py": "import pkg.a\nY = 2\n"}, 3),
        # TYPE_CHECKING imports never run.
        (
            {
                "a.py": "from pkg.b import X\n",
                "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\nX = 1\n",
            },
            [],
        ),
        # A package's __init__ importing its own submodules is the usual layout, not a cycle.
        ({"__init__.py": "from pkg.a import X\n", "a.py": "X = 1\n"}, []),
        # ... but a module that imports the package of another, whose __init__ imports it back, is one.
        (
            {
                "sub/__init__.py": "from pkg.a import X\n",
                "a.py": "X = 1\ndef f():\n    import pkg.sub.b\n",
                "sub/b.py": "",
            },
            [["pkg.a", "pkg.sub", "pkg.a"]],
        ),
    ],
)
def test_the_checker_finds_cycles_and_only_cycles(tmp_path, files, expected):
    found = cycles(import_graph(write_package(tmp_path, {"__init__.py": "", **files})))
    if isinstance(expected, int):
        assert len(found) == 1 and len(found[0]) == expected + 1 and found[0][0] == found[0][-1], found
    else:
        assert found == expected


def test_no_module_imports_a_private_name_of_another():
    # A helper two modules share is public in one place (e.g. report.terminal.fmt_value), not a `_name`
    # reached into from outside.
    known = modules(PACKAGE)
    reached = []
    for name, path in known.items():
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
                reached += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    reached = [r for r in reached if not r.endswith(".__version__")]
    assert not reached, reached
