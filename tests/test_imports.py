"""The collector's modules import each other in one direction: no cycles (lazy imports inside
functions aside), so the folders read as the data flow."""

from __future__ import annotations

import ast

from tests.support.procs import REPO


def _graph() -> dict[str, set[str]]:
    root = REPO / "collector"
    names = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # module level: TYPE_CHECKING blocks are Ifs
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("collector"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in names else str(node.module))
        graph[name] = {d for d in deps if d in names and d != name}
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    assert "collector.otlp.relay" in graph and "collector.query.tree" in graph
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
