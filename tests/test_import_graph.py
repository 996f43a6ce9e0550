"""The project's own import graph, function-local imports included (type-checking-only ones excluded):
no cycle, and layers that hold: nothing below the CLI imports the CLI, and nothing below the drivers of
runs (runner, resolve, execute, grid, sweep, plan, launcher) imports them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dfkd_bench"
CLI = ("dfkd_bench.cli", "dfkd_bench.__main__")
DRIVERS = {"dfkd_bench.runner", "dfkd_bench.resolve", "dfkd_bench.execute", "dfkd_bench.grid",
           "dfkd_bench.sweep", "dfkd_bench.plan", "dfkd_bench.launcher"}


def in_cli(module: str) -> bool:
    """True for the entry point and the modules of the CLI package."""
    return any(module == top or module.startswith(top + ".") for top in CLI)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never imported at run time)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a `from pkg import sub` edge goes to the submodule)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
                name = ".".join([*base, *([node.module] if node.module else [])])
                subs = {f"{name}.{a.name}" for a in node.names} & files.keys()
                edges |= subs or ({name} & files.keys())
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names} & files.keys()
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_below_the_cli_imports_the_cli_or_the_drivers() -> None:
    graph = import_graph()
    for module, edges in graph.items():
        top = {m for m in graph if in_cli(m)}
        if not in_cli(module):
            assert not edges & top, f"{module} imports the CLI"
        if not in_cli(module) and module not in DRIVERS:
            assert not edges & DRIVERS, f"{module} imports {sorted(edges & DRIVERS)}"


def test_the_checks_see_hidden_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    local = ast.parse("def f():\n    from .runner import run\nif TYPE_CHECKING:\n    from .cli import main\n")
    imported = [n.module for n in runtime_nodes(local) if isinstance(n, ast.ImportFrom)]
    assert imported == ["runner"]
