"""The tree tells the architecture: layers that only import downwards, no import cycles.

Each subpackage is a layer; a module may import its own layer and the ones below it, never
one above (at run time or for type checking alike). ARCHITECTURE.md draws the same stack.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "patient_sidekiq"

# Lowest first. A layer may import every layer before it in this list.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "keys"),
    ("ruby",),
    ("redis_io",),
    ("wire",),
    ("sidekiq",),
    ("http",),
    ("registry",),
    ("config",),
    ("client", "testing"),
    ("worker",),
    ("cli",),
    ("__init__", "__main__"),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself
        return RANK["__init__"]
    return RANK[parts[1]]


def imports(path: Path) -> set[str]:
    """Every patient_sidekiq module ``path`` imports, lazily or not."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "patient_sidekiq":
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                is_package = (SRC.parent / candidate.replace(".", "/") / "__init__.py").exists()
                found.add(candidate if is_module or is_package else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "patient_sidekiq"}
    return found


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def test_every_module_is_in_a_layer() -> None:
    unplaced = [name for name in MODULES if name.count(".") and name.split(".")[1] not in RANK]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    if module == "patient_sidekiq":
        return  # the public API re-exports from every layer (lazily)
    own = layer_of(module)
    upward = [
        target
        for target in sorted(imports(MODULES[module]))
        if target != "patient_sidekiq" and layer_of(target) > own
    ]
    assert not upward, f"{module} (layer {own}) imports higher layers: {upward}"


def test_no_import_cycles() -> None:
    graph = {
        name: {t for t in imports(path) if t in MODULES and t != name}
        for name, path in MODULES.items()
        if name != "patient_sidekiq"
    }
    graph = {
        name: {t for t in targets if t != "patient_sidekiq"} for name, targets in graph.items()
    }
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        if node in stack:
            cycle = [*stack[stack.index(node) :], node]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if node in done:
            return
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        stack.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_no_module_is_a_god_module() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert not {name: size for name, size in sizes.items() if size > 450}
