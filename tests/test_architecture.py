"""The structure drawn from the imports: every package imports only from its own layer or the layers below it,
and no module imports itself back through others (no circle), the scripts included."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "anomalib_lite"
# Lowest first: a package may import from its own layer and the layers before it, never after it.
LAYERS = (
    ("errors", "files", "configs"),
    ("data", "metrics"),
    ("models",),
    ("engine",),
    ("reporting",),
    ("pipeline",),
    ("cli", "research", "api", "__main__"),
)
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    """``src/anomalib_lite/a/b.py`` → ``anomalib_lite.a.b`` (a package's ``__init__.py`` → the package);
    ``scripts/x.py`` → ``scripts.x``; an entry point ``train.py`` → ``entry.train``."""
    if path.is_relative_to(PACKAGE):
        parts = ("anomalib_lite", *path.relative_to(PACKAGE).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    folder = "scripts" if path.parent.name == "scripts" else "entry"
    return f"{folder}.{path.stem}"


def sources() -> dict[str, Path]:
    """Every module of the package, the scripts and the entry points, by name."""
    paths = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *REPO.glob("*.py")]
    return {module_name(path): path for path in paths}


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in it (inside functions too); ``from p import n``
    counts as importing ``p.n`` when that is a module, else ``p``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in known else node.module for name in names]
        else:
            continue
        for name in names:
            name = f"scripts.{name}" if f"scripts.{name}" in known and path.parent.name == "scripts" else name
            if name in known:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module name → the project modules it imports."""
    modules = sources()
    return {name: imports(path, set(modules)) for name, path in modules.items()}


def layer(module: str) -> int:
    """A module's layer: its top-level package's (the package itself and ``__init__``: 0; scripts and entry
    points above everything)."""
    if not module.startswith("anomalib_lite"):
        return len(LAYERS)
    parts = module.split(".")
    return LAYER_OF[parts[1]] if len(parts) > 1 else 0


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_top_level_package_has_a_layer():
    top = {
        p.stem
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert top == set(LAYER_OF), "a new top-level module needs a place in LAYERS"


def test_no_import_goes_up_a_layer():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert upward == []


def test_no_circle_of_imports():
    assert cycles(import_graph()) == []


def test_the_checks_find_an_upward_import_and_a_circle(tmp_path):
    """The graph and its checks on a small made-up tree: an upward import and a circle are both found."""
    graph = {
        "anomalib_lite.data.a": {"anomalib_lite.cli.x"},
        "anomalib_lite.cli.x": {"anomalib_lite.cli.y"},
        "anomalib_lite.cli.y": {"anomalib_lite.cli.x"},
    }
    assert layer("anomalib_lite.cli.x") > layer("anomalib_lite.data.a")
    assert cycles(graph) == [["anomalib_lite.cli.x", "anomalib_lite.cli.y"]]
    source = tmp_path / "scripts" / "one.py"
    source.parent.mkdir()
    source.write_text("def f():\n    import two\n    from anomalib_lite.cli import train\n")
    known = {"scripts.two", "anomalib_lite.cli", "anomalib_lite.cli.train"}
    assert imports(source, known) == {"scripts.two", "anomalib_lite.cli.train"}


def test_the_command_layer_is_thin():
    lines = sum(len(path.read_text().splitlines()) for path in (PACKAGE / "cli").glob("*.py"))
    assert lines < 1000, f"cli/ holds {lines} lines: move library code below it"
