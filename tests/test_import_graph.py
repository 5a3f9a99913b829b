"""The import graph of ``ccl``, read from the source with ``ast``, function-local imports
included (issue 27): no circle between packages or between modules, and few imports hidden
inside functions, each with its reason.

A package is ``ccl.X`` (``ccl.data``, ``ccl.stages``; a top-level module such as ``ccl.config``
is its own). Imports under ``if TYPE_CHECKING:`` are for the type checker alone and are left out.
A function-local ``ccl`` import is kept only for a command's start-up cost or an optional extra,
and says so in a ``# local import: <reason>`` comment right above it (or at its end).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "ccl"
MAX_LOCAL_IMPORTS = 20
REASON = "# local import:"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """``ccl.spans.llm.base`` -> ``ccl.spans``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(here: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The ``ccl`` modules one import statement loads (``from ccl.x import y`` loads ``ccl.x.y``
    when that is a module, else ``ccl.x``); relative imports resolved."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = here.split(".") if is_package else here.split(".")[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        if name.split(".")[0] != "ccl":
            continue
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def import_edges() -> list[tuple[str, str, bool, str, int]]:
    """``(importing module, imported module, inside a function, file, line)`` for every
    ``ccl`` import of the package, at module level or inside a function or method."""
    edges = []

    def walk(node: ast.AST, here: str, path: Path, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk(sub, here, path, in_function)
                continue
            local = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(here, child, path.name == "__init__.py"):
                    edges.append((here, target, local, str(path.relative_to(PACKAGE.parent)), child.lineno))
            walk(child, here, path, local)

    for here, path in MODULES.items():
        walk(ast.parse(path.read_text(), str(path)), here, path, False)
    return edges


def _cycles(graph: nx.DiGraph) -> list[list[str]]:
    return [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def test_no_import_circle_between_packages():
    """A circle between packages (function-local imports counted) means two rooms each need the
    other: one of them holds code that belongs in the other, or below both."""
    graph = nx.DiGraph()
    for here, target, _, where, line in import_edges():
        if _package(here) != _package(target):
            graph.add_edge(_package(here), _package(target), where=f"{where}:{line}")
    circles = _cycles(graph)
    detail = [f"{a} -> {b} ({graph.edges[a, b]['where']})" for c in circles for a in c for b in c
              if graph.has_edge(a, b)]
    assert not circles, f"import circles between packages: {circles}\n" + "\n".join(detail)


def test_no_import_circle_between_modules():
    graph = nx.DiGraph((here, target) for here, target, _, _, _ in import_edges() if here != target)
    assert not _cycles(graph), _cycles(graph)


def test_function_local_imports_are_few_and_say_why():
    """At most :data:`MAX_LOCAL_IMPORTS` function-local ``ccl`` import statements, each with a
    ``# local import: <reason>`` comment (a command's start-up cost, an optional extra)."""
    statements = sorted({(where, line) for _, _, local, where, line in import_edges() if local})
    assert len(statements) <= MAX_LOCAL_IMPORTS, statements
    unexplained = []
    for where, line in statements:
        text = (PACKAGE.parent / where).read_text().splitlines()
        above = line - 2  # the comment lines right above the statement
        while above >= 0 and text[above].strip().startswith("#") and REASON not in text[above]:
            above -= 1
        if REASON not in text[line - 1] and not (above >= 0 and REASON in text[above]):
            unexplained.append(f"{where}:{line}: {text[line - 1].strip()}")
    assert not unexplained, "function-local imports without a '# local import: <reason>' comment:\n" + \
        "\n".join(unexplained)


def test_the_graph_sees_local_and_module_level_imports():
    """Guards the checks above against reading nothing."""
    edges = import_edges()
    assert ("ccl.run", "ccl.pipeline", False) in {(h, t, lo) for h, t, lo, _, _ in edges}
    assert any(local for _, _, local, _, _ in edges) and len(edges) > 300
