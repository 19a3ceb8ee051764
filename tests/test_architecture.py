"""The layering holds: no module-level import cycle among imprint's modules, and the lower layers never import the
command line, the grid or the workflows above them."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "imprint"
UPPER = ("imprint.cli", "imprint.grid", "imprint.report", "imprint.workflows", "imprint.serve")
LOWER = ("imprint.settings", "imprint.errors", "imprint.validation", "imprint.stages", "imprint.pipeline",
         "imprint.tuning", "imprint.openset", "imprint.classifier", "imprint.persistence", "imprint.configuration")


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports inside functions are not
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imprint"):  # edges
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_module_level_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(trail + [node, dep])
            if dep not in state:
                visit(dep, trail + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_lower_layers_never_import_the_shells_above_them():
    for name, deps in _graph().items():
        if name.startswith(LOWER):
            assert not [d for d in deps if d.startswith(UPPER)], (name, deps)
