"""The layout rules the README's architecture section states, checked: the engine never imports
gradio, no module imports itself back through others, ui/ stays smaller than the engine, and no
function grows past about 100 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ebm_play", "ui")
MAX_FUNCTION_LINES = 100


def modules() -> dict[str, Path]:
    return {f"{p.parent.name}.{p.stem}": p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """Modules of ebm_play and ui that ``name`` imports, at any level (inside functions too)."""
    pkg = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{pkg}.{base}" if base else pkg
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules()}
    return found - {name}


def test_the_engine_never_imports_gradio():
    for name, path in modules().items():
        if name.startswith("ebm_play."):
            tree = ast.parse(path.read_text())
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert "gradio" not in names, name


def test_no_import_cycles():
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    graph = {k: {v for v in vs if not v.endswith("__init__")} for k, vs in graph.items() if not k.endswith("__init__")}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def lines(pkg: str) -> int:
    return sum(len(p.read_text().splitlines()) for p in (ROOT / pkg).glob("*.py"))


def test_the_ui_is_smaller_than_the_engine():
    assert lines("ui") < lines("ebm_play"), (lines("ui"), lines("ebm_play"))


def test_no_function_is_over_about_a_hundred_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long
