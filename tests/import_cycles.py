"""Module-level import cycles in the project, printed one per line (`a -> b -> a`) with a count
last; exits 1 when there is any. Run from the repository root with it on PYTHONPATH
(tests/test_layers.py does).

The graph is grimp's (the one lint-imports checks) over the project packages, imports inside
functions included and imports under `if TYPE_CHECKING:` left out (they never run), plus the two
runner modules, which grimp cannot take as roots: their imports are read with ast here.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

import grimp

PACKAGES = ("cli", "monitoring", "reports", "tfx_pipeline", "modules", "serving", "fmnist")
RUNNERS = ("local_runner", "kubeflow_runner")


def import_graph(root: Path) -> dict[str, set[str]]:
    """{project module: the project modules it imports directly}."""
    # External packages included so that a package importing a runner (a top-level module, which
    # grimp counts as external) shows up as an edge to it.
    graph = grimp.build_graph(*PACKAGES, include_external_packages=True, exclude_type_checking_imports=True,
                              cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES} | set(RUNNERS)
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules - set(RUNNERS)}
    for runner in RUNNERS:
        edges[runner] = _runner_imports(root / f"{runner}.py", modules)
    return edges


def _runner_imports(path: Path, modules: set[str]) -> set[str]:
    imported = set()
    for node in _run_time_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from a import b`: the module a.b if there is one, else a name defined in a.
            imported |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names}
    return imported & modules


def _run_time_nodes(tree: ast.AST):
    """Every node except the bodies of `if TYPE_CHECKING:` (also `typing.TYPE_CHECKING`)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                pending.extend(child.orelse)
            else:
                pending.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """A shortest cycle of each strongly connected component of more than one module (or of a
    module importing itself), starting and ending at its first module by name."""
    return [min((_shortest_cycle(edges, component, start) for start in component), key=lambda c: (len(c), c))
            for component in _components(edges)]


def _components(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with a cycle in them, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, ()):
                        found.append(component)
    return sorted(found, key=min)


def _shortest_cycle(edges: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """The shortest cycle through `start`, rotated to begin at its first module by name."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(edges.get(node, set()) & component):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                cycle = path[::-1]
                first = cycle.index(min(cycle))
                return [*cycle[first:], *cycle[:first], min(cycle)]
            if successor not in parents:
                parents[successor] = node
                queue.append(successor)
    raise AssertionError(f"{start}: a strongly connected component without a cycle")


def main() -> int:
    cycles = find_cycles(import_graph(Path.cwd()))
    for cycle in cycles:
        print(" -> ".join(cycle))
    print(f"{len(cycles)} import cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
