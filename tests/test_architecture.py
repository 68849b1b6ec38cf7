"""The package's shape: modules import one way (no cycle, lazy imports included), and the loader
and the training engine never reach the generator."""

import ast
from pathlib import Path

import depthmask_utils

PACKAGE = Path(depthmask_utils.__file__).parent


def imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (function-level imports too)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(a.name for a in node.names)
        graph[path.stem] = found - {path.stem, "__init__"}
    return graph


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle():
    graph = imports()
    cyclic = sorted(m for m in graph if m in reach(graph, m) and m not in ("cli", "__main__"))
    assert not cyclic, {m: sorted(graph[m] & {n for n in graph if m in reach(graph, n)}) for m in cyclic}


def test_loading_and_training_never_reach_the_generator():
    graph = imports()
    for module in ("data", "augment", "train", "evaluate", "checkpoint", "dataset", "placement", "compositing"):
        assert "overlay" not in reach(graph, module), module
    assert "train" not in reach(graph, "evaluate")  # checkpoint I/O lives in checkpoint.py
    assert reach(graph, "config") <= {"errors"}  # profiles and TrainConfig need no torch, no other module
