"""The layering rules of docs/architecture.md, checked on the source: the core never imports the CLI or the
pipelines, no module imports another module's private names, no two files import each other (directly or in a
longer loop) at module level, and every pipeline function reads in one screen (at most 80 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"hsikit": "hsikit", "models": "hsikit.models", "pipelines": "hsikit.pipelines", "cli": "hsikit.cli"}
MAX_PIPELINE_FUNCTION = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


MODULES = _modules()


def _imports(path: Path, *, top_level: bool) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from hsikit... import name`` (``import hsikit.x`` gives name "")."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hsikit"):
            out += [(node.lineno, node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, "") for a in node.names if a.name.startswith("hsikit")]
    return out


def _target(module: str, name: str) -> str | None:
    """The source module an import reads: ``from pkg import sub`` reads pkg.sub when that is a module."""
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module if module in MODULES else None


def test_the_scan_sees_the_whole_package():
    assert {"hsikit.cli.main", "hsikit.pipelines.classify", "hsikit.models.registry", "hsikit.io.scene"} <= set(MODULES)
    assert len(MODULES) > 100


def test_the_core_never_imports_the_cli_or_the_pipelines():
    core = {m: p for m, p in MODULES.items() if not m.startswith(("hsikit.cli", "hsikit.pipelines"))}
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for m, p in core.items()
           for line, mod, _ in _imports(p, top_level=False) if mod.startswith(("hsikit.cli", "hsikit.pipelines"))]
    assert not bad, "\n".join(bad)


def test_models_do_no_io():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for m, p in MODULES.items() if m.startswith("hsikit.models")
           for line, mod, _ in _imports(p, top_level=False) if mod.startswith(("hsikit.io", "rasterio"))]
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for module, path in MODULES.items():
        for line, mod, name in _imports(path, top_level=False):
            if name.startswith("_") and not name.startswith("__") and f"{mod}.{name}" not in MODULES and mod != module:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}.{name}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_files():
    edges = {m: {t for _, mod, name in _imports(p, top_level=True) if (t := _target(mod, name)) and t != m}
             for m, p in MODULES.items()}
    assert not _cycles(edges), _cycles(edges)


def test_the_cycle_check_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.py")), ids=lambda p: p.name)
def test_pipeline_functions_read_in_one_screen(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_PIPELINE_FUNCTION]
    assert not long, f"{path.name}: {', '.join(long)} over {MAX_PIPELINE_FUNCTION} lines"
