"""The layout reads like the pipeline: imports only flow down it, and no function is longer than a screen.

    common → data → models → training → analysis · metrics · recognition · sweeps → reporting → demo → cli

(``sweeps`` score their trials with ``metrics``.) docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "facevae"
BELOW = {
    "common": set(),
    "data": {"common"},
    "models": {"common"},
    "training": {"common", "data", "models"},
    "analysis": {"common", "data", "models", "training"},
    "metrics": {"common", "data", "models", "training"},
    "recognition": {"common", "data", "models", "training"},
    "sweeps": {"common", "data", "models", "training", "metrics"},
    "reporting": {"common", "data", "models", "training", "analysis", "metrics", "recognition", "sweeps"},
    "demo": {"common", "data", "models", "training", "analysis", "metrics", "recognition", "sweeps", "reporting"},
    "serving": {"common", "data", "models", "training", "analysis", "metrics", "recognition", "sweeps", "reporting"},
    "cli": {"common", "data", "models", "training", "analysis", "metrics", "recognition", "sweeps", "reporting",
            "demo", "serving"},
    "__init__": {"training"},
    "__main__": {"cli"},
}
MAX_FUNCTION_LINES = 80


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_layers(path: Path) -> set[tuple[str, int]]:
    """(layer, line) of every facevae module this file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "facevae"]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "facevae" and len(parts) > 1 and parts[1] in BELOW:  # not `from facevae import __version__`
                found.add((parts[1], node.lineno))
    return found


def modules():
    return sorted(SRC.rglob("*.py"))


def test_every_layer_is_known():
    assert {layer_of(p) for p in modules()} <= set(BELOW), "a new top-level module needs a place in BELOW"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_flow_down_the_pipeline(path):
    layer = layer_of(path)
    wrong = [f"line {line}: facevae.{other}" for other, line in sorted(imported_layers(path))
             if other != layer and other not in BELOW[layer]]
    assert not wrong, f"{layer} may import {sorted(BELOW[layer])} only; {path.name} imports {', '.join(wrong)}"


def test_the_layers_have_no_cycle():
    # BELOW is itself acyclic: a topological order exists
    order, left = [], dict(BELOW)
    while left:
        ready = [layer for layer, deps in left.items() if deps <= set(order)]
        assert ready, f"cycle among {sorted(left)}"
        order += ready
        for layer in ready:
            del left[layer]


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.name} ({lines} lines)")
    assert not long, "longer than 80 lines: " + ", ".join(long)
