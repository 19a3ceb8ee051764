"""The folders are the layers, and the code keeps to them: every import statement of imprint's modules (at module
level or inside a function) runs downward or within a package, with no cycle; no module is over 500 lines; the
estimator stays a thin face; the package holds few flat modules and few sub-packages. (Imports under
``if TYPE_CHECKING:`` are for type hints only and never run: they are not counted.)"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "imprint"
# From the bottom: a package may import its own modules and those of lower layers, never those of higher ones.
LAYERS = [
    ("imprint.core",),
    ("imprint.stages", "imprint.encoders", "imprint.data", "imprint.analysis.collapse"),
    ("imprint.openset", "imprint.io"),
    ("imprint.estimator",),
    ("imprint.workflows",),
    ("imprint.analysis.inspection", "imprint.grid"),
    ("imprint.serve",),
    ("imprint.cli",),
]
MAX_LINES = 500
MAX_ESTIMATOR_LINES = 350
MAX_FLAT_MODULES = 3  # beside __init__
MAX_PACKAGES = 12


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every imprint module `path` imports, wherever the statement stands (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    hints = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
        node.test) for inner in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {f for f in found if f == "imprint" or f.startswith("imprint.")}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {d for d in imports(path, name) if d in known and d != name} for name, path in known.items()}


def layer(name: str) -> int | None:
    for level, packages in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in packages):
            return level
    return None


def test_no_import_cycle_counting_every_import_statement():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep):] if dep in trail else trail
                raise AssertionError("import cycle: " + " -> ".join(cycle + [node, dep]))
            if dep not in state:
                visit(dep, trail + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_every_module_is_in_a_layer_and_imports_downward_only():
    upward = []
    for name, deps in graph().items():
        if name in ("imprint", "imprint.analysis"):  # the top package and a namespace that imports nothing
            continue
        mine = layer(name)
        assert mine is not None, f"{name} is in no layer: put it in a package of LAYERS"
        upward += [f"{name} -> {d}" for d in deps if d != "imprint" and (layer(d) or 0) > mine]
    assert not upward, "imports running upward:\n" + "\n".join(upward)


def test_the_top_package_imports_only_what_it_exports_on_first_use():
    assert graph()["imprint"] <= {"imprint.core", "imprint.core.moved"}


def test_no_module_is_too_long_and_the_estimator_is_thin():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert not {n: lines for n, lines in long.items() if lines > MAX_LINES}, "split these"
    tree = ast.parse((ROOT / "estimator" / "classifier.py").read_text())
    face = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ImprintClassifier")
    assert face.end_lineno - face.lineno + 1 <= MAX_ESTIMATOR_LINES


def test_few_flat_modules_and_few_packages():
    flat = [p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    packages = [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()]
    assert len(flat) <= MAX_FLAT_MODULES, flat
    assert len(packages) <= MAX_PACKAGES, packages


def test_the_tests_mirror_the_code():
    """tests/<package>/test_<module>.py tests imprint/<package>/<module>.py (a package's own __init__: the test file
    named after the package); only tests of the whole (the architecture, the docs) sit at the top."""
    tests = ROOT.parent / "tests"
    strays = []
    for path in tests.rglob("test_*.py"):
        parts = path.relative_to(tests).parts
        if len(parts) == 1:
            strays += [] if path.name in ("test_architecture.py", "test_docs.py") else [path.name]
            continue
        folder, name = ROOT.joinpath(*parts[:-1]), path.stem[len("test_"):]
        if not ((folder / f"{name}.py").is_file() or (folder.name == name and (folder / "__init__.py").is_file())):
            strays.append("/".join(parts))
    assert not strays, f"tests that mirror no module: {strays}"
