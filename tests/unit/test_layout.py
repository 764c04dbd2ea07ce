"""The layout holds: no import cycles, Ray Serve LLM's private API in one module, serving/ by layer.

The layers themselves (and which libraries each may use) are import-linter contracts in
pyproject.toml, run by `make lint`; what import-linter cannot see is checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("serving", "operators", "load_tests")
PRIVATE_API = "ray.llm._internal"
PRIVATE_API_HOME = "serving/dataplane/ray_serve_llm.py"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_cycle_finder_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def import_cycles(*packages: str) -> list[list[str]]:
    """The groups of modules of ``packages`` that import each other, imports inside functions included."""
    graph = grimp.build_graph(*packages, cache_dir=None)  # grimp reads every import statement
    return strongly_connected({m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules})


def test_an_import_inside_a_function_counts(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def late():\n    from cyclic import b\n")
    (pkg / "b.py").write_text("import cyclic.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic") == [["cyclic.a", "cyclic.b"]]


def test_no_import_cycles_between_the_projects_modules():
    cycles = import_cycles(*PACKAGES)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_ray_serve_llm_private_api_is_used_in_one_module():
    users = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                   if any(m == PRIVATE_API or m.startswith(PRIVATE_API + ".") for m in imported_modules(p)))
    assert users == [PRIVATE_API_HOME]


def test_serving_top_level_holds_only_packages_and_the_import_path_shim():
    modules = sorted(p.name for p in (ROOT / "serving").glob("*.py"))
    assert modules == ["__init__.py", "app.py"], modules
    shim = (ROOT / "serving/app.py").read_text()
    assert "from serving.dataplane.app import build_app" in shim
