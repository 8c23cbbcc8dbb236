"""The architecture, enforced: imports flow one way through the layers, and no module cycle exists.

Every ``import`` of every module under ``src/nextaction`` is read with ``ast`` — at module level and inside
functions (a lazy import is still a dependency), under ``TYPE_CHECKING`` too — and checked against LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nextaction"

# Lowest first. A module may import from its own layer and the layers below it, never from one above.
# "evaluation" (the ranking protocol, metrics, baselines) needs no model, so it sits below the inference
# helpers in scoring.py, which apply that protocol to a model.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "config")),
    ("data", ("data", "datasets")),
    ("core", ("model", "losses", "batches", "device")),
    ("evaluation", ("evaluation",)),
    ("scoring", ("scoring",)),
    ("behavior", ("behavior",)),
    ("training", ("training",)),
    ("privacy", ("privacy",)),
    ("text", ("text",)),
    ("explain", ("explain", "retrieval", "routing")),
    ("predictor", ("predictor", "workflow", "batch", "tuning")),
    ("federated", ("federated",)),
    ("service", ("server", "demo", "cli", "__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Layer index of a module of ours; the root package (``__version__``, the lazy ``Predictor``) is -1."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    for i, (_, tops) in enumerate(LAYERS):
        if parts[1] in tops:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def imports_of(module: str) -> set[str]:
    """Our modules that ``module`` imports (``from nextaction.x import y`` resolves to module x.y if it is one)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{module}: use absolute imports (line {node.lineno})")
            names = [node.module or ""]
            names += [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer() -> None:
    for m in MODULES:
        layer_of(m)


def test_no_upward_import() -> None:
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
        for m, deps in GRAPH.items()
        if m != "nextaction"  # the root's lazy ``Predictor`` is the public entry point
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(m)
    ]
    assert not upward, "imports that climb a layer:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    graph = {m: deps for m, deps in GRAPH.items() if m != "nextaction"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_what_they_guard_against() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("nextaction.cli") > layer_of("nextaction.training.loop") > layer_of("nextaction.model")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("nextaction.somewhere_new")


def test_no_module_left_at_an_old_path() -> None:
    old = ["train", "checkpoint", "distributed", "evaluate", "metrics", "baselines", "candidates"]
    old += ["behaviors", "behavior_baselines", "itemtext"]
    left = [name for name in old if (PACKAGE / f"{name}.py").exists()]
    assert not left, f"modules at their pre-layout paths: {left}"
